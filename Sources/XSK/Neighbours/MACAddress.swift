/// A 48-bit Ethernet address, packed into an integer so a forwarding snapshot can hold one per
/// backend in a plain array and the packet path can store it with two writes.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The six bytes, most significant first, in the low 48 bits.
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue & 0xFFFF_FFFF_FFFF }

    /// From six bytes in wire order.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 6 else { return nil }
        self.init(rawValue: bytes.reduce(0) { $0 << 8 | UInt64($1) })
    }

    /// Parses `aa:bb:cc:dd:ee:ff`.
    public init?(_ text: String) {
        let parts = text.split(separator: ":")
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for p in parts {
            guard p.count <= 2, let b = UInt8(p, radix: 16) else { return nil }
            bytes.append(b)
        }
        self.init(bytes: bytes)
    }

    /// The six bytes in wire order.
    public var bytes: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: rawValue >> (40 - 8 * UInt64($0))) } }

    /// Writes the address at `pointer` (6 bytes, wire order).
    @inlinable
    public func store(to pointer: UnsafeMutableRawPointer) {
        var v = rawValue
        for i in stride(from: 5, through: 0, by: -1) {
            pointer.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: i, as: UInt8.self)
            v >>= 8
        }
    }

    public var isZero: Bool { rawValue == 0 }

    public var description: String {
        bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
    }
}
