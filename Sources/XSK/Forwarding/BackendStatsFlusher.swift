import Synchronization
import Balancer

/// Moves per-worker backend traffic into the Balancer's shared `ServerCounters`, on the control
/// plane's `[passthrough] stats_update_frequency` timer.
///
/// Workers only ever add to their own plain counters; this reads each worker's running totals,
/// and adds the difference since its previous call to the server's `ServerCounters`
/// (connections opened, open connections, bytes each way). So the shared atomics see one add
/// per backend per period instead of one per packet. Not thread-safe: call it from one place.
public final class BackendStatsFlusher {
    private let workers: [ForwarderCounters]
    private var previous: [[BackendTraffic]]
    /// Per worker, per frontend index: its `noBackend`, `denied`, `serversFull` and
    /// `overLimit` counts at the last flush.
    private var previousNoBackend: [[Int: UInt64]]
    private var previousDenied: [[Int: UInt64]]
    private var previousServersFull: [[Int: UInt64]]
    private var previousOverLimit: [[Int: UInt64]]

    /// A flusher over the counters of every worker (`forwarder.counters`).
    public init(workers: [ForwarderCounters]) {
        self.workers = workers
        previous = workers.map { [BackendTraffic](repeating: BackendTraffic(), count: $0.backendSlots) }
        previousNoBackend = workers.map { _ in [:] }
        previousDenied = workers.map { _ in [:] }
        previousServersFull = workers.map { _ in [:] }
        previousOverLimit = workers.map { _ in [:] }
    }

    /// Adds what each backend did since the last call to its `ServerCounters` in `routes` (the
    /// newest published ones), and to its frontend's `FrontendCounters` (a slot belongs to one
    /// frontend; the seed's top-level totals are the frontends' sums). A slot that left the
    /// routes is booked to the counters it had until it is free (`PacketRoutes.serverCounters`).
    public func flush(into routes: PacketRoutes) {
        for (w, counters) in workers.enumerated() {
            for (index, frontend) in routes.frontendCountersByIndex.enumerated() {
                /// What a per-frontend count grew by since the last flush (0: nothing to add).
                func growth(_ now: UInt64, _ previous: inout [Int: UInt64]) -> Int64 {
                    let before = previous[index] ?? 0
                    previous[index] = now
                    return Int64(truncatingIfNeeded: now &- before)
                }
                // Read even without a frontend, so an index's next frontend starts from here.
                let noBackend = growth(counters.noBackend(frontend: index), &previousNoBackend[w])
                let denied = growth(counters.denied(frontend: index), &previousDenied[w])
                let full = growth(counters.serversFull(frontend: index), &previousServersFull[w])
                let overLimit = growth(counters.overLimit(frontend: index), &previousOverLimit[w])
                guard let frontend else { continue }
                if noBackend != 0 { frontend.noBackend.wrappingAdd(noBackend, ordering: .relaxed) }
                if denied != 0 { frontend.denied.wrappingAdd(denied, ordering: .relaxed) }
                if full != 0 { frontend.serversFull.wrappingAdd(full, ordering: .relaxed) }
                if overLimit != 0 { frontend.overLimit.wrappingAdd(overLimit, ordering: .relaxed) }
            }
            let slots = min(counters.backendSlots, routes.slotCount)
            for slot in 0..<slots {
                let now = counters.backend(slot)
                let before = previous[w][slot]
                guard now != before else { continue }
                previous[w][slot] = now
                guard let server = routes.serverCounters[slot] else { continue }
                let opened = Int64(truncatingIfNeeded: now.opened &- before.opened)
                let closed = Int64(truncatingIfNeeded: now.closed &- before.closed)
                let tx = Int64(truncatingIfNeeded: now.bytesTx &- before.bytesTx)
                let rx = Int64(truncatingIfNeeded: now.bytesRx &- before.bytesRx)
                Self.add(opened: opened, closed: closed, tx: tx, rx: rx, to: server.totalConnections,
                         server.currentConnections, server.bytesTx, server.bytesRx)
                if let f = routes.frontendCounters[slot] {
                    Self.add(opened: opened, closed: closed, tx: tx, rx: rx, to: f.totalConnections,
                             f.currentConnections, f.bytesTx, f.bytesRx)
                }
            }
        }
    }

    private static func add(opened: Int64, closed: Int64, tx: Int64, rx: Int64, to total: borrowing Atomic<Int64>,
                            _ current: borrowing Atomic<Int64>, _ bytesTx: borrowing Atomic<Int64>,
                            _ bytesRx: borrowing Atomic<Int64>) {
        if opened != 0 { total.wrappingAdd(opened, ordering: .relaxed) }
        if opened != closed { current.wrappingAdd(opened &- closed, ordering: .relaxed) }
        if tx != 0 { bytesTx.wrappingAdd(tx, ordering: .relaxed) }
        if rx != 0 { bytesRx.wrappingAdd(rx, ordering: .relaxed) }
    }
}
