/// A view of a TCP header (RFC 9293) inside a frame: ports, flags and checksum are what the
/// forwarders read and rewrite, the sequence number what they read to judge a RST or FIN;
/// options and payload are never touched.
public struct TCPHeader {
    public static let fin: UInt8 = 0x01
    public static let syn: UInt8 = 0x02
    public static let rst: UInt8 = 0x04
    public static let ack: UInt8 = 0x10

    @usableFromInline let base: UnsafeMutableRawPointer

    /// A view at `base` (the first byte of the TCP header).
    @inlinable @inline(__always)
    public init(_ base: UnsafeMutableRawPointer) { self.base = base }

    @inlinable public var sourcePort: UInt16 {
        @inline(__always) get { Wire.load16(base, 0) }
        @inline(__always) nonmutating set { Wire.store16(base, 0, newValue) }
    }

    @inlinable public var destinationPort: UInt16 {
        @inline(__always) get { Wire.load16(base, 2) }
        @inline(__always) nonmutating set { Wire.store16(base, 2, newValue) }
    }

    /// The sequence number (host order).
    @inlinable public var sequenceNumber: UInt32 { @inline(__always) get { Wire.load32(base, 4) } }

    /// Header length in bytes (data offset × 4).
    @inlinable public var headerLength: Int {
        @inline(__always) get { Int(base.load(fromByteOffset: 12, as: UInt8.self) >> 4) &* 4 }
    }

    /// The flag byte (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
    @inlinable public var flags: UInt8 { @inline(__always) get { base.load(fromByteOffset: 13, as: UInt8.self) } }

    @inlinable public var checksum: UInt16 {
        @inline(__always) get { Wire.load16(base, 16) }
        @inline(__always) nonmutating set { Wire.store16(base, 16, newValue) }
    }
}
