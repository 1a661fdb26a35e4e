import Synchronization

/// How far one worker's flow table is known to be clean of retired backends: the routes
/// generation it held when it began its last completed full sweep. Every flow of a backend
/// missing from those routes (and from all later ones) has ended by then, so a
/// `BackendSlotRegistry` slot retired at that generation or before can no longer be named by
/// this worker's flows.
///
/// Written by the worker once per full sweep; read by the routes publisher when it builds
/// routes. The publisher holds it weakly, so a worker that is gone no longer holds slots back.
///
/// Not covered: a worker counting a passthrough reply from a reverse-map entry it read just
/// before the owner ended the flow. If that worker then stalls for a whole counter-flush
/// period, those reply bytes are booked to the slot's next server. Only the counters are
/// affected, never forwarding.
final class FlowSweepProgress: Sendable {
    private let clean: Atomic<UInt64>

    init(cleanThrough generation: UInt64) { clean = Atomic(generation) }

    /// The generation the last completed full sweep began under.
    var cleanThrough: UInt64 { clean.load(ordering: .acquiring) }

    /// Records a completed full sweep that began under `generation`.
    func completedSweep(begunUnder generation: UInt64) { clean.store(generation, ordering: .releasing) }
}
