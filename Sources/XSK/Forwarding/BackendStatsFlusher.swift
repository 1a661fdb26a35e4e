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
    /// Per worker, per frontend index and refusal: the count at the last flush.
    private var previousRefused: [[RefusalKey: UInt64]]

    private struct RefusalKey: Hashable {
        var frontend: Int
        var refusal: FrontendRefusal
    }

    /// A flusher over the counters of every worker (`forwarder.counters`).
    public init(workers: [ForwarderCounters]) {
        self.workers = workers
        previous = workers.map { [BackendTraffic](repeating: BackendTraffic(), count: $0.backendSlots) }
        previousRefused = workers.map { _ in [:] }
    }

    /// Adds what each backend did since the last call to its `ServerCounters` in `routes` (the
    /// newest published ones), and to its frontend's `FrontendCounters` (a slot belongs to one
    /// frontend; the seed's top-level totals are the frontends' sums). A slot that left the
    /// routes is booked to the counters it had until it is free (`PacketRoutes.serverCounters`).
    public func flush(into routes: PacketRoutes) {
        for (w, counters) in workers.enumerated() {
            for (index, frontend) in routes.frontendCountersByIndex.enumerated() {
                for refusal in FrontendRefusal.allCases {
                    // Read even without a frontend, so an index's next frontend starts from here.
                    let key = RefusalKey(frontend: index, refusal: refusal)
                    let now = counters.refused(refusal, frontend: index)
                    let before = previousRefused[w][key] ?? 0
                    guard now != before else { continue }
                    previousRefused[w][key] = now
                    if let frontend { Self.add(Int64(truncatingIfNeeded: now &- before), refusal, to: frontend) }
                }
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

    /// Adds `n` to the frontend's `/stats` count of `refusal`.
    private static func add(_ n: Int64, _ refusal: FrontendRefusal, to frontend: FrontendCounters) {
        switch refusal {
        case .noBackend: frontend.noBackend.wrappingAdd(n, ordering: .relaxed)
        case .denied: frontend.denied.wrappingAdd(n, ordering: .relaxed)
        case .serversFull: frontend.serversFull.wrappingAdd(n, ordering: .relaxed)
        case .overLimit: frontend.overLimit.wrappingAdd(n, ordering: .relaxed)
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
