/// The 14-byte Ethernet II header at the start of a frame: destination MAC, source MAC,
/// EtherType. A view over the frame's bytes; the parser checks the length before building one.
public struct EthernetHeader {
    public static let length = 14
    public static let typeIPv4: UInt16 = 0x0800
    public static let typeIPv6: UInt16 = 0x86DD

    @usableFromInline let base: UnsafeMutableRawPointer

    /// A view at `base` (the first byte of the frame).
    @inlinable @inline(__always)
    public init(_ base: UnsafeMutableRawPointer) { self.base = base }

    /// Destination MAC, in the low 48 bits.
    @inlinable public var destination: UInt64 {
        @inline(__always) get { Wire.loadMAC(base, 0) }
        @inline(__always) nonmutating set { Wire.storeMAC(base, 0, newValue) }
    }

    /// Source MAC, in the low 48 bits.
    @inlinable public var source: UInt64 {
        @inline(__always) get { Wire.loadMAC(base, 6) }
        @inline(__always) nonmutating set { Wire.storeMAC(base, 6, newValue) }
    }

    @inlinable public var etherType: UInt16 {
        @inline(__always) get { Wire.load16(base, 12) }
    }

    /// Writes both MAC addresses (bytes 0–11) at once.
    @inlinable @inline(__always)
    public func store(_ addresses: EthernetAddresses) {
        base.storeBytes(of: addresses.first8.littleEndian, toByteOffset: 0, as: UInt64.self)
        base.storeBytes(of: addresses.last4.littleEndian, toByteOffset: 8, as: UInt32.self)
    }
}

/// The 12 address bytes of an Ethernet header (destination MAC, then source MAC) as two words
/// in memory order: built once per backend or flow, so the packet path rewrites both MACs with
/// two stores and no byte swapping.
public struct EthernetAddresses: Sendable, Equatable {
    /// Bytes 0–7 (byte 0 in the low bits).
    public var first8: UInt64
    /// Bytes 8–11 (byte 8 in the low bits).
    public var last4: UInt32

    /// The header bytes of a frame from `source` to `destination` (MACs in the low 48 bits,
    /// most significant byte first on the wire).
    public init(destination: UInt64, source: UInt64) {
        var first: UInt64 = 0
        var last: UInt32 = 0
        for i in 0..<12 {
            let mac = i < 6 ? destination : source
            let byte = mac >> UInt64(40 - 8 * (i % 6)) & 0xff
            if i < 8 { first |= byte << UInt64(8 * i) } else { last |= UInt32(byte) << UInt32(8 * (i - 8)) }
        }
        first8 = first
        last4 = last
    }

    /// The header bytes as the two words `first8` and `last4` hold them.
    @inlinable @inline(__always)
    public init(first8: UInt64, last4: UInt32) {
        self.first8 = first8
        self.last4 = last4
    }

    /// No addresses (all zero).
    public static let zero = EthernetAddresses(first8: 0, last4: 0)
}
