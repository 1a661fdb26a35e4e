/// A read-out of the AF_XDP data path at one moment: per-worker counters and kernel ring
/// statistics, the attach and copy modes in use, and the steering program's verdicts.
public struct XSKDataPathStats: Sendable, Equatable {
    /// One worker's part.
    public struct Worker: Sendable, Equatable {
        public var index: Int
        public var queue: UInt32
        public var cpu: Int32?
        public var counters: WorkerCounterValues
        /// nil when the kernel could not be asked (the socket is gone).
        public var ring: XSKRingStatistics?
        public var mode: XSKSocket.CopyMode
    }

    public var interface: String
    public var attachMode: NetworkInterface.AttachMode
    /// True when every worker's socket runs zero-copy.
    public var zeroCopy: Bool
    public var workers: [Worker]
    /// nil when the verdict map could not be read.
    public var verdicts: SteeringVerdicts?

    /// Worker counters summed.
    public var totals: WorkerCounterValues {
        workers.reduce(WorkerCounterValues(rxPackets: 0, rxBytes: 0, txPackets: 0, drops: 0, txRingFullDrops: 0,
                                           batches: 0, wakeups: 0)) { sum, w in
            let c = w.counters
            return WorkerCounterValues(rxPackets: sum.rxPackets + c.rxPackets, rxBytes: sum.rxBytes + c.rxBytes,
                                       txPackets: sum.txPackets + c.txPackets, drops: sum.drops + c.drops,
                                       txRingFullDrops: sum.txRingFullDrops + c.txRingFullDrops,
                                       batches: sum.batches + c.batches, wakeups: sum.wakeups + c.wakeups)
        }
    }

    /// Ring statistics summed over the workers that reported them.
    public var ringTotals: XSKRingStatistics {
        workers.compactMap(\.ring).reduce(XSKRingStatistics(), +)
    }
}
