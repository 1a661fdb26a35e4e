/// A packet handler that sends every TCP or UDP frame back where it came from: it swaps the
/// Ethernet, IP (v4 or v6) and port pairs in place. Checksums stay valid because each swap
/// exchanges two fields the checksum covers symmetrically. Anything else is dropped.
///
/// Used by `XSKReflect` (the benchmark's subject) and the lab tests.
public struct Reflector: PacketHandler {
    /// Frames reflected and frames dropped (not TCP/UDP over IPv4/IPv6, or truncated).
    public var reflected: UInt64 = 0
    public var dropped: UInt64 = 0

    public init() {}

    @inlinable
    public mutating func beginBatch(now: UInt64) {}

    @inlinable
    public mutating func handle(_ packet: UnsafeMutableRawBufferPointer) -> PacketVerdict {
        guard let base = packet.baseAddress, packet.count >= 14 else { return drop() }
        let count = packet.count
        let etherType = UInt16(base.load(fromByteOffset: 12, as: UInt8.self)) << 8
            | UInt16(base.load(fromByteOffset: 13, as: UInt8.self))
        let l4: Int
        switch etherType {
        case 0x0800:
            guard count >= 34 else { return drop() }
            let ihl = Int(base.load(fromByteOffset: 14, as: UInt8.self) & 0x0F) * 4
            guard ihl >= 20, count >= 14 + ihl + 4 else { return drop() }
            let proto = base.load(fromByteOffset: 23, as: UInt8.self)
            guard proto == 6 || proto == 17 else { return drop() }
            Self.swap(base, 26, 30, UInt32.self)
            l4 = 14 + ihl
        case 0x86DD:
            guard count >= 54 + 4 else { return drop() }
            let proto = base.load(fromByteOffset: 20, as: UInt8.self)
            guard proto == 6 || proto == 17 else { return drop() }
            Self.swap(base, 22, 38, UInt64.self)
            Self.swap(base, 30, 46, UInt64.self)
            l4 = 54
        default:
            return drop()
        }
        Self.swap(base, l4, l4 + 2, UInt16.self)
        Self.swap(base, 0, 6, UInt32.self)
        Self.swap(base, 4, 10, UInt16.self)
        reflected &+= 1
        return .transmit
    }

    @inlinable @inline(__always)
    mutating func drop() -> PacketVerdict {
        dropped &+= 1
        return .drop
    }

    /// Exchanges the `T`-sized fields at offsets `a` and `b` (any alignment).
    @inlinable @inline(__always)
    static func swap<T: FixedWidthInteger>(_ base: UnsafeMutableRawPointer, _ a: Int, _ b: Int, _: T.Type) {
        let x = base.loadUnaligned(fromByteOffset: a, as: T.self)
        let y = base.loadUnaligned(fromByteOffset: b, as: T.self)
        base.storeBytes(of: y, toByteOffset: a, as: T.self)
        base.storeBytes(of: x, toByteOffset: b, as: T.self)
    }
}
