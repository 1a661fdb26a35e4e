#if canImport(Glibc)
import Glibc
#endif

/// An IP address and TCP port: a listener (`listen_addr`), a server (`addr`) or a peer.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Why a `"ip:port"` text was not accepted.
    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case missingPort(String)
        case badAddress(String)
        case badPort(String)

        public var description: String {
            switch self {
            case .missingPort(let t): return "'\(t)' has no port: write \"ip:port\" or \"[ipv6]:port\""
            case .badAddress(let t): return "'\(t)' is not an IPv4 or IPv6 address"
            case .badPort(let t): return "'\(t)' is not a port (1-65535)"
            }
        }
    }

    /// Parses `"10.0.0.1:80"` or `"[2001:db8::1]:80"`. Port 0 is rejected: every endpoint in
    /// the configuration names a real port.
    public init(parsing text: String) throws(ParseError) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw .badAddress(text) }
            host = text[text.index(after: text.startIndex)..<close]
            if !host.contains(":") { throw .badAddress("[\(host)]: brackets are for IPv6 only") }
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw .missingPort(text) }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw .missingPort(text) }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { throw .badAddress(text) }  // bare IPv6 needs brackets
        }
        guard let address = IPAddress(String(host)) else { throw .badAddress(String(host)) }
        self.init(address: address, port: try Self.port(parsing: portText))
    }

    /// The port of an `addr` or `listen_addr`, the text after its last colon.
    static func port(parsing text: Substring) throws(ParseError) -> UInt16 {
        // Digits only, no sign and no leading zero: "+80" and "080" are typos, not ports.
        guard text.allSatisfy({ $0.isASCII && $0.isNumber }), !text.hasPrefix("0"),
              let port = UInt16(text), port != 0 else { throw .badPort(String(text)) }
        return port
    }

    public var description: String {
        switch address {
        case .v4: return "\(address):\(port)"
        case .v6: return "[\(address)]:\(port)"
        }
    }

    /// Calls `body` with this endpoint as a `sockaddr_in`/`sockaddr_in6` and its length.
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        var storage = sockaddr_storage()
        let length: socklen_t
        switch address {
        case .v4(let a):
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            withUnsafeMutableBytes(of: &storage) { raw in
                let sin = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = port.bigEndian
                sin.pointee.sin_addr.s_addr = a.bigEndian
            }
        case .v6:
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            let bytes = address.networkBytes
            withUnsafeMutableBytes(of: &storage) { raw in
                let sin6 = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self)
                sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                sin6.pointee.sin6_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin6.pointee.sin6_addr) { $0.copyBytes(from: bytes) }
            }
        }
        return try withUnsafePointer(to: &storage) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, length) }
        }
    }

    /// Reads an endpoint back from a `sockaddr_storage` filled by `accept`/`getpeername`;
    /// nil for families other than IPv4/IPv6.
    public init?(sockaddr storage: sockaddr_storage) {
        var storage = storage
        let parsed: Endpoint? = withUnsafeBytes(of: &storage) { raw in
            let family = raw.load(fromByteOffset: 0, as: sa_family_t.self)
            if family == sa_family_t(AF_INET) {
                let sin = raw.load(as: sockaddr_in.self)
                return Endpoint(address: .v4(UInt32(bigEndian: sin.sin_addr.s_addr)),
                                port: UInt16(bigEndian: sin.sin_port))
            }
            if family == sa_family_t(AF_INET6) {
                let sin6 = raw.load(as: sockaddr_in6.self)
                let bytes = withUnsafeBytes(of: sin6.sin6_addr) { Array($0) }
                return Endpoint(address: IPAddress(ipv6NetworkBytes: bytes),
                                port: UInt16(bigEndian: sin6.sin6_port))
            }
            return nil
        }
        guard let parsed else { return nil }
        self = parsed
    }
}
