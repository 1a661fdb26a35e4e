/// A set of TCP/UDP ports as a bitmap (8 KiB): what a takeover's import checks every carried
/// NAT port against. A `Set<UInt16>` hashed each port and missed the cache on most lookups,
/// which made it the largest cost of entering tens of thousands of flows while the replaced
/// convey is paused.
struct PortSet {
    private var words = [UInt64](repeating: 0, count: 1024)
    private(set) var count = 0

    func contains(_ port: UInt16) -> Bool {
        words[Int(port >> 6)] & (1 << UInt64(port & 63)) != 0
    }

    /// Adds `port`; false when it was there already.
    @discardableResult
    mutating func insert(_ port: UInt16) -> Bool {
        let bit: UInt64 = 1 << UInt64(port & 63)
        let i = Int(port >> 6)
        guard words[i] & bit == 0 else { return false }
        words[i] |= bit
        count += 1
        return true
    }
}
