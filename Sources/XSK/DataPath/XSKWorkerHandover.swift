/// What a takeover hands the next convey of one AF_XDP worker, besides its descriptors (the
/// socket, bound to its queue, and the memfd of its UMEM): the rings' sizes and where the
/// worker's frames are. Frames in the rings' kernel-owned parts (FILL, RX, TX, COMPLETION)
/// stay there and are found by the rings' shared indices.
public struct XSKWorkerHandover: Sendable, Equatable {
    public var queue: UInt32
    public var frameCount: Int
    public var frameSize: Int
    public var fillSize: UInt32
    public var completionSize: UInt32
    public var rxSize: UInt32
    public var txSize: UInt32
    /// Frames the worker held free.
    public var freeFrames: [UInt64]
    /// Frames on TX or COMPLETION, not yet reaped.
    public var txOutstanding: Int

    public init(queue: UInt32, frameCount: Int, frameSize: Int, fillSize: UInt32, completionSize: UInt32,
                rxSize: UInt32, txSize: UInt32, freeFrames: [UInt64], txOutstanding: Int) {
        self.queue = queue
        self.frameCount = frameCount
        self.frameSize = frameSize
        self.fillSize = fillSize
        self.completionSize = completionSize
        self.rxSize = rxSize
        self.txSize = txSize
        self.freeFrames = freeFrames
        self.txOutstanding = txOutstanding
    }

    /// A worker's hand-over as the running convey sends it (the descriptors stay its own).
    public struct Sent {
        public var worker: XSKWorkerHandover
        public var socketFD: Int32
        public var memoryFD: Int32
    }

    /// A worker's hand-over as the next convey received it (owning the descriptors).
    public struct Received {
        public var worker: XSKWorkerHandover
        public var socketFD: Int32
        public var memoryFD: Int32

        public init(worker: XSKWorkerHandover, socketFD: Int32, memoryFD: Int32) {
            self.worker = worker
            self.socketFD = socketFD
            self.memoryFD = memoryFD
        }
    }
}
