/// A frontend's `allow` and `deny` lists: which client addresses may open connections to it
/// (as nginx's `allow` / `deny`, or HAProxy's `tcp-request connection reject` on a source ACL).
///
/// A client is refused when its address is in a `deny` prefix, or when `allow` is not empty
/// and it is in none of its prefixes. Checked once per new connection, never per packet.
public struct SourceFilter: Sendable, Equatable {
    /// One address prefix (`10.0.0.0/8`, `2001:db8::/32`, or a single address), kept in the
    /// IPv4-mapped IPv6 form `StableHash.widened` gives, so one comparison serves both families.
    /// Plain data: the AF_XDP workers read it from a buffer of their routes.
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
            let (maskHi, maskLo) = Self.masks(address, length)
            guard wide.hi & ~maskHi == 0, wide.lo & ~maskLo == 0 else { return nil }
            self.address = address
            self.length = length
            (hi, lo, self.maskHi, self.maskLo) = (wide.hi, wide.lo, maskHi, maskLo)
        }

        /// The masks of a prefix of `length` bits of `address`'s family, in the widened form
        /// (an IPv4 prefix also covers the 96 bits of the `::ffff:` mapping).
        static func masks(_ address: IPAddress, _ length: Int) -> (hi: UInt64, lo: UInt64) {
            let total = length + (address.isIPv4 ? 96 : 0)
            let hi: UInt64 = total >= 64 ? .max : (total <= 0 ? 0 : ~(UInt64.max >> UInt64(total)))
            let lo: UInt64 = total <= 64 ? 0 : (total >= 128 ? .max : ~(UInt64.max >> UInt64(total - 64)))
            return (hi, lo)
        }

        /// `address` with every bit past `length` cleared (the prefix an operator likely meant).
        public static func network(of address: IPAddress, length: Int) -> IPAddress {
            let wide = StableHash.widened(address)
            let (maskHi, maskLo) = masks(address, length)
            if address.isIPv4 { return .v4(UInt32(truncatingIfNeeded: wide.lo & maskLo)) }
            return .v6(wide.hi & maskHi, wide.lo & maskLo)
        }

        /// Whether the address in widened form (`StableHash.widened`) is in this prefix. An
        /// IPv6 prefix never holds an IPv4 client (`::/0` is every IPv6 address, not every one).
        @inlinable @inline(__always)
        public func contains(hi: UInt64, lo: UInt64) -> Bool {
            hi & maskHi == self.hi && lo & maskLo == self.lo
                && (address.isIPv4 || !(hi == 0 && lo >> 32 == 0x0000_ffff))
        }

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

    /// Whether a client at `address` may connect.
    public func admits(_ address: IPAddress) -> Bool {
        let wide = StableHash.widened(address)
        return deny.withUnsafeBufferPointer { deny in
            allow.withUnsafeBufferPointer { allow in Self.admits(hi: wide.hi, lo: wide.lo, deny: deny, allow: allow) }
        }
    }

    /// The rule itself, over lists wherever they are kept (the AF_XDP workers keep them in
    /// their routes' buffers): refused when in `deny`, or when `allow` is not empty and the
    /// address is in none of it. The address in widened form (`StableHash.widened`).
    @inlinable @inline(__always)
    public static func admits(hi: UInt64, lo: UInt64, deny: UnsafeBufferPointer<Prefix>,
                              allow: UnsafeBufferPointer<Prefix>) -> Bool {
        for p in deny where p.contains(hi: hi, lo: lo) { return false }
        if allow.isEmpty { return true }
        for p in allow where p.contains(hi: hi, lo: lo) { return true }
        return false
    }
}
