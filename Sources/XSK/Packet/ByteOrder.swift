/// Big-endian loads and stores at byte offsets of a frame.
///
/// Frames are not aligned for their fields (an IPv4 header starts at byte 14), so every access
/// is an unaligned load/store of the network-order value, swapped to host order. All functions
/// trust their caller to have checked the offset against the frame length (the parsers do).
@usableFromInline
enum Wire {
    @inlinable @inline(__always)
    static func load16(_ p: UnsafeRawPointer, _ offset: Int) -> UInt16 {
        UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always)
    static func load32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 {
        UInt32(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inlinable @inline(__always)
    static func load64(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    @inlinable @inline(__always)
    static func store16(_ p: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
        p.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable @inline(__always)
    static func store32(_ p: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt32) {
        p.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    @inlinable @inline(__always)
    static func store64(_ p: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt64) {
        p.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
    }

    /// Loads a 48-bit MAC address (wire order, most significant byte first).
    @inlinable @inline(__always)
    static func loadMAC(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(load16(p, offset)) << 32 | UInt64(load32(p, offset + 2))
    }

    /// Stores a 48-bit MAC address held in the low bits of `mac`.
    @inlinable @inline(__always)
    static func storeMAC(_ p: UnsafeMutableRawPointer, _ offset: Int, _ mac: UInt64) {
        store16(p, offset, UInt16(truncatingIfNeeded: mac >> 32))
        store32(p, offset + 2, UInt32(truncatingIfNeeded: mac))
    }
}
