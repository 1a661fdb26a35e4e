/// A view of an IPv4 header (RFC 791) inside a frame. Options, when present, are left alone:
/// the header's length comes from IHL.
public struct IPv4Header {
    @usableFromInline let base: UnsafeMutableRawPointer

    /// A view at `base` (the first byte of the IPv4 header).
    @inlinable @inline(__always)
    public init(_ base: UnsafeMutableRawPointer) { self.base = base }

    @inlinable public var version: UInt8 { @inline(__always) get { base.load(fromByteOffset: 0, as: UInt8.self) >> 4 } }
    /// Header length in bytes (IHL × 4).
    @inlinable public var headerLength: Int {
        @inline(__always) get { Int(base.load(fromByteOffset: 0, as: UInt8.self) & 0x0f) &* 4 }
    }
    @inlinable public var totalLength: Int { @inline(__always) get { Int(Wire.load16(base, 2)) } }
    /// Flags and fragment offset (bytes 6–7).
    @inlinable public var fragmentField: UInt16 { @inline(__always) get { Wire.load16(base, 6) } }
    /// True when the packet is a fragment (More Fragments set or a non-zero offset).
    @inlinable public var isFragment: Bool { @inline(__always) get { fragmentField & 0x3fff != 0 } }
    @inlinable public var ttl: UInt8 { @inline(__always) get { base.load(fromByteOffset: 8, as: UInt8.self) } }
    @inlinable public var proto: UInt8 { @inline(__always) get { base.load(fromByteOffset: 9, as: UInt8.self) } }

    @inlinable public var checksum: UInt16 {
        @inline(__always) get { Wire.load16(base, 10) }
        @inline(__always) nonmutating set { Wire.store16(base, 10, newValue) }
    }

    /// Source address, host byte order.
    @inlinable public var source: UInt32 {
        @inline(__always) get { Wire.load32(base, 12) }
        @inline(__always) nonmutating set { Wire.store32(base, 12, newValue) }
    }

    /// Destination address, host byte order.
    @inlinable public var destination: UInt32 {
        @inline(__always) get { Wire.load32(base, 16) }
        @inline(__always) nonmutating set { Wire.store32(base, 16, newValue) }
    }

    /// The header checksum computed from scratch over `headerLength` bytes (tests, diagnostics).
    public func computedChecksum() -> UInt16 {
        let length = headerLength
        var copy = [UInt8](UnsafeRawBufferPointer(start: base, count: length))
        copy[10] = 0
        copy[11] = 0
        return copy.withUnsafeBytes { Checksum.finish(Checksum.sum($0)) }
    }
}
