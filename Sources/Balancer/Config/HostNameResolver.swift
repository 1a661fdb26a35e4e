#if canImport(Glibc)
import Glibc
#endif

/// Turns a server's host name (`addr = "web1.internal:80"`) into addresses when a
/// configuration is loaded: at start, at every reload and at `--check`, as HAProxy and nginx
/// resolve server names when they read their files. Nothing resolves at run time in between:
/// a name whose address changes takes the new one at the next reload.
///
/// A value holding the lookup, so tests can load files naming hosts without a DNS server.
/// `preferring(_:)` keeps the addresses a running configuration has where a name still has
/// them, so a name with several addresses does not move its server at every reload.
public struct HostNameResolver: Sendable {
    /// The addresses `name` has, in the order to prefer them, or why there are none.
    public var lookUp: @Sendable (_ name: String) -> Result<[IPAddress], Failure>

    /// Why a name has no address.
    public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        public var reason: String
        public init(_ reason: String) { self.reason = reason }
        public var description: String { reason }
    }

    public init(lookUp: @escaping @Sendable (_ name: String) -> Result<[IPAddress], Failure>) {
        self.lookUp = lookUp
    }

    /// The system's resolver (`getaddrinfo`: `/etc/hosts`, then DNS, as `/etc/nsswitch.conf`
    /// says), its addresses in the order it returns them (RFC 6724, as `/etc/gai.conf` tunes).
    public static let system = HostNameResolver { name in
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(name, nil, &hints, &list)
        guard status == 0 else {
            let reason = status == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(status))
            return .failure(Failure(reason))
        }
        defer { freeaddrinfo(list) }
        var addresses: [IPAddress] = []
        var entry = list
        while let e = entry {
            let family = e.pointee.ai_family
            if let sockaddr = e.pointee.ai_addr, family == AF_INET || family == AF_INET6 {
                var storage = sockaddr_storage()
                let length = min(Int(e.pointee.ai_addrlen), MemoryLayout<sockaddr_storage>.size)
                withUnsafeMutableBytes(of: &storage) { raw in
                    raw.copyMemory(from: UnsafeRawBufferPointer(start: sockaddr, count: length))
                }
                if let endpoint = Endpoint(sockaddr: storage), !addresses.contains(endpoint.address) {
                    addresses.append(endpoint.address)
                }
            }
            entry = e.pointee.ai_next
        }
        return addresses.isEmpty ? .failure(Failure("no IPv4 or IPv6 address")) : .success(addresses)
    }

    /// This resolver, answering each name the running `config` resolved with the address its
    /// server has now first, while the name still has it: a reload moves a server only when
    /// its name left that address.
    public func preferring(_ config: ConveyConfig) -> HostNameResolver {
        var current: [String: Set<IPAddress>] = [:]
        for pool in config.pools {
            for server in pool.servers {
                if let name = server.hostName { current[name, default: []].insert(server.address.address) }
            }
        }
        guard !current.isEmpty else { return self }
        let lookUp = self.lookUp
        let kept = current
        return HostNameResolver { name in
            lookUp(name).map { addresses in
                guard let held = kept[name] else { return addresses }
                return addresses.filter { held.contains($0) } + addresses.filter { !held.contains($0) }
            }
        }
    }

    /// Whether `text` reads as a host name (RFC 1123 labels: letters, digits, hyphens and
    /// underscores, dot-separated, the last not all digits), not a mistyped address.
    /// Underscores are taken: `/etc/hosts` and container DNS (Docker Compose service names)
    /// hand them out, and `getaddrinfo` looks them up.
    static func isHostName(_ text: Substring) -> Bool {
        // A fully qualified name may end with its root's dot.
        let text = text.hasSuffix(".") ? text.dropLast() : text
        guard !text.isEmpty, text.count <= 253 else { return false }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        // "10.0.0.256" or "1.2.3": an address gone wrong, not a name.
        if labels.last.map({ $0.allSatisfy(\.isNumber) }) ?? true { return false }
        return labels.allSatisfy { label in
            !label.isEmpty && label.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
        }
    }
}
