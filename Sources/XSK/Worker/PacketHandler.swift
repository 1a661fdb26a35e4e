/// What a worker does with one received frame once its handler has looked at it.
public enum PacketVerdict: Sendable, Equatable {
    /// Send the same frame (rewritten in place) out of the interface it came in on.
    case transmit
    /// Give the frame back to the fill ring; the handler has already counted why.
    case drop
}

/// The per-packet logic an XSK worker runs: a reflector in the lab tests, the DSR or
/// passthrough forwarder in production.
///
/// Workers are generic over their handler (specialized at compile time), so the packet path
/// never calls through an existential. One handler value belongs to one worker thread; it
/// keeps its own flow table and counters and needs no lock.
public protocol PacketHandler {
    /// Called once before each RX batch, and after each idle sleep when nothing arrives, with
    /// the monotonic clock in nanoseconds: the place to adopt a newer forwarding snapshot and
    /// to expire flows. Not called per packet.
    mutating func beginBatch(now: UInt64)

    /// True while `beginBatch` has work it does a piece at a time (a flow listing's walk): an
    /// idle worker then sleeps 1 ms between calls instead of its idle timeout. Read on the
    /// idle path only.
    var hasWorkBetweenBatches: Bool { get }

    /// Looks at one frame (`packet.count` is the received length, starting at the Ethernet
    /// header) and rewrites it in place. Must not allocate, lock, or retain anything.
    mutating func handle(_ packet: UnsafeMutableRawBufferPointer) -> PacketVerdict

    /// Handles one RX batch, `verdicts[i]` for `frames[i]`: what the worker calls, and what
    /// the benchmarks measure. The default calls `handle` for each frame in order; the
    /// forwarders work in two passes, so that all the batch's flow lookups overlap (see
    /// `FrameLookup`). Same rules as `handle`.
    mutating func handle(batch frames: UnsafeBufferPointer<PacketFrame>,
                         verdicts: UnsafeMutablePointer<PacketVerdict>)
}

extension PacketHandler {
    public var hasWorkBetweenBatches: Bool { false }

    @inlinable @inline(__always)
    public mutating func handle(batch frames: UnsafeBufferPointer<PacketFrame>,
                                verdicts: UnsafeMutablePointer<PacketVerdict>) {
        var i = 0
        while i < frames.count {
            verdicts[i] = handle(frames[i].buffer)
            i &+= 1
        }
    }
}
