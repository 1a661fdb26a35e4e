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
}
