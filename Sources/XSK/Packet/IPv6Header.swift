/// A view of the fixed 40-byte IPv6 header (RFC 8200) inside a frame. Extension headers are
/// not followed: a packet whose Next Header is not TCP is not forwarded.
public struct IPv6Header {
    public static let length = 40

    @usableFromInline let base: UnsafeMutableRawPointer

    /// A view at `base` (the first byte of the IPv6 header).
    @inlinable @inline(__always)
    public init(_ base: UnsafeMutableRawPointer) { self.base = base }

    @inlinable public var version: UInt8 { @inline(__always) get { base.load(fromByteOffset: 0, as: UInt8.self) >> 4 } }
    @inlinable public var payloadLength: Int { @inline(__always) get { Int(Wire.load16(base, 4)) } }
    @inlinable public var nextHeader: UInt8 { @inline(__always) get { base.load(fromByteOffset: 6, as: UInt8.self) } }
    @inlinable public var hopLimit: UInt8 { @inline(__always) get { base.load(fromByteOffset: 7, as: UInt8.self) } }

    /// Source address as (high, low) 64-bit halves, host byte order.
    @inlinable public var source: (hi: UInt64, lo: UInt64) {
        @inline(__always) get { (Wire.load64(base, 8), Wire.load64(base, 16)) }
        @inline(__always) nonmutating set { Wire.store64(base, 8, newValue.hi); Wire.store64(base, 16, newValue.lo) }
    }

    /// Destination address as (high, low) 64-bit halves, host byte order.
    @inlinable public var destination: (hi: UInt64, lo: UInt64) {
        @inline(__always) get { (Wire.load64(base, 24), Wire.load64(base, 32)) }
        @inline(__always) nonmutating set { Wire.store64(base, 24, newValue.hi); Wire.store64(base, 32, newValue.lo) }
    }
}
