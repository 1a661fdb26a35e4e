/// One worker's counters, written by the worker thread only and readable from any thread
/// without a lock.
///
/// Each counter is an aligned `UInt64` in memory the worker owns; the worker stores whole
/// values once per batch and readers load them (a torn read is impossible for an aligned 64-bit
/// word on the platforms Convey runs on; a reader may see a value one batch old).
public final class WorkerCounters: @unchecked Sendable {
    @usableFromInline enum Slot: Int, CaseIterable {
        case rxPackets, rxBytes, txPackets, drops, txRingFullDrops, batches, wakeups
    }

    @usableFromInline let storage: UnsafeMutablePointer<UInt64>

    init() {
        // One cache line per worker keeps two workers' counters from sharing a line.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        storage = raw.initializeMemory(as: UInt64.self, repeating: 0, count: 8)
    }

    deinit { storage.deallocate() }

    @inline(__always)
    func load(_ slot: Slot) -> UInt64 {
        UnsafeRawPointer(storage + slot.rawValue).load(as: UInt64.self)
    }

    /// A consistent-enough copy of the counters for a stats read-out.
    public var snapshot: WorkerCounterValues {
        WorkerCounterValues(rxPackets: load(.rxPackets), rxBytes: load(.rxBytes), txPackets: load(.txPackets),
                            drops: load(.drops), txRingFullDrops: load(.txRingFullDrops),
                            batches: load(.batches), wakeups: load(.wakeups))
    }
}

/// Counter values of one worker at one moment.
public struct WorkerCounterValues: Sendable, Equatable {
    /// Frames received from the RX ring.
    public var rxPackets: UInt64
    /// Bytes of those frames.
    public var rxBytes: UInt64
    /// Frames put on the TX ring.
    public var txPackets: UInt64
    /// Frames the handler dropped.
    public var drops: UInt64
    /// Frames the handler wanted sent but the TX ring was full: dropped.
    public var txRingFullDrops: UInt64
    /// Non-empty RX batches.
    public var batches: UInt64
    /// Syscalls made: TX kicks, FILL wakeups and idle polls.
    public var wakeups: UInt64
}
