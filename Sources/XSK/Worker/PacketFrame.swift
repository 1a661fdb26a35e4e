/// One received frame as a batch hands it to a handler: where it starts (the Ethernet header)
/// and how many bytes were received. Never empty, unlike a raw buffer's optional base.
public struct PacketFrame {
    public var base: UnsafeMutableRawPointer
    public var length: Int

    @inlinable @inline(__always)
    public init(base: UnsafeMutableRawPointer, length: Int) {
        self.base = base
        self.length = length
    }

    /// The frame as a buffer (for `PacketHandler.handle(_:)`).
    @inlinable public var buffer: UnsafeMutableRawBufferPointer {
        @inline(__always) get { UnsafeMutableRawBufferPointer(start: base, count: length) }
    }
}
