import Synchronization

/// Open flows per backend slot, summed over every worker: what `leastconn` compares in the
/// AF_XDP modes, so the workers balance one pool together (as IPVS's one connection table
/// does) rather than each its own share of the queues' traffic.
///
/// Each worker adds one when it creates a flow and subtracts one when it ends it: one atomic
/// add per flow event, none per packet. A backend slot is reused only once every worker's
/// table is clean of it (`PacketRoutesPublisher`), so its count is back at 0 by then.
public final class OpenFlowCounts: @unchecked Sendable {
    // @unchecked: `base` is written only through atomic operations, and lives as long as this
    // object (the forwarders hold the publisher that holds it).
    let base: UnsafeMutablePointer<Atomic<Int64>>
    /// Backend slots counted.
    public let slots: Int

    init(slots: Int) {
        self.slots = slots
        base = .allocate(capacity: slots)
        for i in 0..<slots { (base + i).initialize(to: Atomic(0)) }
    }

    deinit {
        base.deinitialize(count: slots)
        base.deallocate()
    }

    /// Flows open on backend `slot` over every worker.
    public func open(_ slot: Int) -> Int64 {
        guard slot >= 0, slot < slots else { return 0 }
        return base[slot].load(ordering: .relaxed)
    }
}

/// Unretained access to `OpenFlowCounts` for the packet path (see `CounterView`).
struct OpenFlowView {
    let base: UnsafeMutablePointer<Atomic<Int64>>

    init(_ counts: OpenFlowCounts) { base = counts.base }

    @inline(__always)
    func opened(_ slot: UInt32) { base[Int(slot)].wrappingAdd(1, ordering: .relaxed) }

    /// Adds `n` (which may be negative) at once: a takeover's import, which would otherwise
    /// drain the store buffer on a locked add per flow.
    func add(_ slot: UInt32, _ n: Int64) { base[Int(slot)].wrappingAdd(n, ordering: .relaxed) }

    @inline(__always)
    func closed(_ slot: UInt32) { base[Int(slot)].wrappingSubtract(1, ordering: .relaxed) }

    @inline(__always)
    func open(_ slot: UInt32) -> UInt64 { UInt64(max(0, base[Int(slot)].load(ordering: .relaxed))) }
}
