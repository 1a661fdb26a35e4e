/// A frontend's `allow` and `deny` lists: which client addresses may open connections to it
/// (as nginx's `allow` / `deny`, or HAProxy's `tcp-request connection reject` on a source ACL).
///
/// A client is refused when its address is in a `deny` prefix, or when `allow` is not empty
/// and it is in none of its prefixes. Checked once per new connection, never per packet.
public struct SourceFilter: Sendable, Equatable {
    /// One address prefix (`10.0.0.0/8`, `2001:db8::/32`, or a single address), kept in the
    /// IPv4-mapped IPv6 form `StableHash.widened` gives, so one comparison serves both families.
    public struct Prefix: Sendable, Equatable, CustomStringConvertible {
        public let address: IPAddress
        public let length: Int
        public let hi: UInt64
        public let lo: UInt64
        public let maskHi: UInt64
        public let maskLo: UInt64

        /// `text` as `ADDRESS` or `ADDRESS/LENGTH`; nil when it is neither, or the address has
        /// bits set past the length (`10.1.0.0/8`: a typo for `/16`, or for `10.0.0.0/8`?).
        public init?(_ text: String) {
            let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            guard let address = IPAddress(String(parts[0])) else { return nil }
            let bits = address.isIPv4 ? 32 : 128
            var length = bits
            if parts.count == 2 {
                guard let n = Int(parts[1]), (0...bits).contains(n), !parts[1].hasPrefix("+") else { return nil }
                length = n
            }
            let wide = StableHash.widened(address)
            let total = length + (address.isIPv4 ? 96 : 0)
            let maskHi: UInt64 = total >= 64 ? .max : (total == 0 ? 0 : ~(UInt64.max >> UInt64(total)))
            let maskLo: UInt64 = total <= 64 ? 0 : (total >= 128 ? .max : ~(UInt64.max >> UInt64(total - 64)))
            guard wide.hi & ~maskHi == 0, wide.lo & ~maskLo == 0 else { return nil }
            self.address = address
            self.length = length
            (hi, lo, self.maskHi, self.maskLo) = (wide.hi, wide.lo, maskHi, maskLo)
        }

        /// `address` with every bit past `length` cleared (the prefix an operator likely meant).
        public static func network(of address: IPAddress, length: Int) -> IPAddress {
            switch address {
            case .v4(let a):
                return .v4(length <= 0 ? 0 : a & (UInt32.max << UInt32(32 - min(length, 32))))
            case .v6(let hi, let lo):
                let maskHi: UInt64 = length >= 64 ? .max : (length <= 0 ? 0 : ~(UInt64.max >> UInt64(length)))
                let maskLo: UInt64 = length <= 64 ? 0 : (length >= 128 ? .max : ~(UInt64.max >> UInt64(length - 64)))
                return .v6(hi & maskHi, lo & maskLo)
            }
        }

        /// Whether the address in widened form (`StableHash.widened`) is in this prefix. An
        /// IPv6 prefix never holds an IPv4 client (`::/0` is every IPv6 address, not every one).
        @inline(__always)
        public func contains(hi: UInt64, lo: UInt64) -> Bool {
            hi & maskHi == self.hi && lo & maskLo == self.lo && (address.isIPv4 || !Self.isMappedIPv4(hi: hi, lo: lo))
        }

        @inline(__always)
        static func isMappedIPv4(hi: UInt64, lo: UInt64) -> Bool { hi == 0 && lo >> 32 == 0x0000_ffff }

        public var description: String {
            length == (address.isIPv4 ? 32 : 128) ? "\(address)" : "\(address)/\(length)"
        }
    }

    public var allow: [Prefix]
    public var deny: [Prefix]

    public init(allow: [Prefix] = [], deny: [Prefix] = []) {
        self.allow = allow
        self.deny = deny
    }

    /// No list: every client is admitted.
    public var isEmpty: Bool { allow.isEmpty && deny.isEmpty }

    /// Whether a client at the widened address (`StableHash.widened`) may connect.
    @inline(__always)
    public func admits(hi: UInt64, lo: UInt64) -> Bool {
        for p in deny where p.contains(hi: hi, lo: lo) { return false }
        if allow.isEmpty { return true }
        for p in allow where p.contains(hi: hi, lo: lo) { return true }
        return false
    }

    /// Whether a client at `address` may connect.
    public func admits(_ address: IPAddress) -> Bool {
        let wide = StableHash.widened(address)
        return admits(hi: wide.hi, lo: wide.lo)
    }
}
