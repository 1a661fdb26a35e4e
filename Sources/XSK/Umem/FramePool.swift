/// The frames of one UMEM that are free: owned by the worker, in no ring.
///
/// A fixed-capacity stack of frame base addresses (UMEM offsets). The invariant the worker
/// keeps: every frame is in exactly one place at a time: this pool, the FILL ring, the RX ring
/// (until released), the TX ring, or the COMPLETION ring. `push`/`pop` never allocate.
public struct FramePool {
    @usableFromInline let slots: UnsafeMutablePointer<UInt64>
    /// How many frames the pool can hold (the UMEM's frame count).
    public let capacity: Int
    /// Frames in the pool now.
    public var count: Int { top }
    @usableFromInline var top: Int

    /// A pool holding every frame of a UMEM of `frameCount` frames of `frameSize` bytes.
    init(frameCount: Int, frameSize: Int) {
        slots = .allocate(capacity: frameCount)
        capacity = frameCount
        top = frameCount
        for i in 0..<frameCount {
            slots[i] = UInt64(i * frameSize)
        }
    }

    /// A pool of `capacity` frames holding `frames` (a takeover's: the free frames of the
    /// worker it replaces, in its order).
    init(frames: [UInt64], capacity: Int) {
        precondition(frames.count <= capacity, "more free frames than the UMEM has")
        slots = .allocate(capacity: capacity)
        self.capacity = capacity
        top = frames.count
        for (i, frame) in frames.enumerated() { slots[i] = frame }
    }

    /// The free frames, bottom first (for a takeover).
    var frames: [UInt64] { (0..<top).map { slots[$0] } }

    /// Takes one free frame; nil when none is free.
    @inlinable @inline(__always)
    public mutating func pop() -> UInt64? {
        guard top > 0 else { return nil }
        top -= 1
        return slots[top]
    }

    /// Gives a frame back. A push beyond capacity would mean a frame was in two places: the
    /// worker's accounting is broken, which is a programming error.
    @inlinable @inline(__always)
    public mutating func push(_ frame: UInt64) {
        precondition(top < capacity, "frame pool overflow: a frame was returned twice")
        slots[top] = frame
        top += 1
    }

    /// Frees the storage (once, by the owner).
    func deallocate() { slots.deallocate() }
}
