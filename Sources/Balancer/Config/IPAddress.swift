#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address as configured for a listener, server or NAT source.
///
/// Stored in host byte order so it hashes and compares cheaply; `networkBytes` gives the
/// on-the-wire form that packet code and `sockaddr` construction need.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// IPv4, host byte order (10.0.0.1 is `0x0A00_0001`).
    case v4(UInt32)
    /// IPv6, host byte order, most significant 64 bits first.
    case v6(UInt64, UInt64)

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text (no brackets, no zone), via `inet_pton(3)`.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address `a.b.c.d`: one
    /// address has one form, so a VIP, server or NAT address written either way is the same
    /// family everywhere (the packet path and the steering program key IPv4 in that mapped
    /// form, where the two would otherwise collide).
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: v6) { Array($0) }
        self = IPAddress(ipv6NetworkBytes: bytes).unmapped
    }

    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it maps; any other
    /// address as it is (the one form `init?(_:)` gives each address).
    public var unmapped: IPAddress {
        if case .v6(0, let lo) = self, lo >> 32 == 0xffff { return .v4(UInt32(truncatingIfNeeded: lo)) }
        return self
    }

    /// Builds an IPv6 address from its 16 network-order bytes.
    public init(ipv6NetworkBytes b: [UInt8]) {
        precondition(b.count == 16)
        var hi: UInt64 = 0, lo: UInt64 = 0
        for i in 0..<8 { hi = hi << 8 | UInt64(b[i]) }
        for i in 8..<16 { lo = lo << 8 | UInt64(b[i]) }
        self = .v6(hi, lo)
    }

    /// True for IPv4.
    public var isIPv4: Bool { if case .v4 = self { return true } else { return false } }

    /// True for the wildcard of either family (`0.0.0.0`, `::`): every address of the host.
    public var isUnspecified: Bool { self == .v4(0) || self == .v6(0, 0) }

    /// True for IPv4 240.0.0.0/4 (reserved; 255.255.255.255, the broadcast address, included).
    public var isReservedIPv4: Bool {
        if case .v4(let a) = self { return a >> 28 == 0xF }
        return false
    }

    /// True for IPv4 127.0.0.0/8 and IPv6 ::1.
    public var isLoopback: Bool {
        switch self {
        case .v4(let a): return a >> 24 == 127
        case .v6(let hi, let lo): return hi == 0 && lo == 1
        }
    }

    /// True for IPv4 224.0.0.0/4 and IPv6 ff00::/8.
    public var isMulticast: Bool {
        switch self {
        case .v4(let a): return a >> 28 == 0xE
        case .v6(let hi, _): return hi >> 56 == 0xFF
        }
    }

    /// The address in network byte order: 4 bytes for IPv4, 16 for IPv6.
    public var networkBytes: [UInt8] {
        switch self {
        case .v4(let a):
            return [UInt8(a >> 24), UInt8(a >> 16 & 0xff), UInt8(a >> 8 & 0xff), UInt8(a & 0xff)]
        case .v6(let hi, let lo):
            var out = [UInt8](repeating: 0, count: 16)
            for i in 0..<8 {
                out[i] = UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64(i)))
                out[8 + i] = UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64(i)))
            }
            return out
        }
    }

    /// The conventional text form (`inet_ntop(3)`).
    public var description: String {
        switch self {
        case .v4(let a):
            return "\(a >> 24).\(a >> 16 & 0xff).\(a >> 8 & 0xff).\(a & 0xff)"
        case .v6:
            var addr = in6_addr()
            let bytes = networkBytes
            withUnsafeMutableBytes(of: &addr) { $0.copyBytes(from: bytes) }
            var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            _ = inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count))
            return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}
