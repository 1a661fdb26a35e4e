import Balancer
import Synchronization

/// Hands `PacketRoutes` from the control plane to the workers without a lock on their path.
///
/// The control plane calls `publish` on every snapshot or neighbour change; the build runs
/// under a mutex (so slots are assigned in one order) and ends with a releasing store of the
/// new generation. A worker compares `generation` with the one it holds once per batch — one
/// acquiring load — and only on a change calls `current()`, which takes the mutex briefly to
/// copy the reference out. The old routes are freed when the last worker lets go of them.
public final class PacketRoutesPublisher: Sendable {
    private struct State {
        var routes: PacketRoutes
        var registry: BackendSlotRegistry
        var frontendRegistry = FrontendIndexRegistry(limit: PacketRoutes.maxFrontends)
        var generation: UInt64
        /// The workers' sweep progress, held weakly (a stopped worker holds no slot back).
        var sweepers: [WeakSweepProgress] = []

        /// The oldest generation every live worker's table is clean under; nil with no worker.
        mutating func cleanThrough() -> UInt64? {
            sweepers.removeAll { $0.progress == nil }
            return sweepers.compactMap { $0.progress?.cleanThrough }.min()
        }
    }

    private struct WeakSweepProgress {
        weak var progress: FlowSweepProgress?
    }

    private let state: Mutex<State>
    private let published = Atomic<UInt64>(1)
    /// Counter flushes started (`countersFlushStarting`).
    private let flushes = Atomic<UInt64>(0)
    /// The most backend slots any routes will use: the size of each worker's per-backend counters.
    public let maxBackendSlots: Int
    /// Open flows per backend slot over every worker (what `leastconn` compares).
    public let openFlows: OpenFlowCounts

    /// An empty publisher: until the first `publish`, routes have no frontend (every frame is
    /// dropped). `maxBackendSlots` bounds the (frontend, server, address) triples routed at once.
    /// The backend slots routes hold by default: (frontend, server, address) triples.
    public static let defaultMaxBackendSlots = 4096

    public init(maxBackendSlots: Int = PacketRoutesPublisher.defaultMaxBackendSlots) {
        self.maxBackendSlots = maxBackendSlots
        openFlows = OpenFlowCounts(slots: maxBackendSlots)
        state = Mutex(State(routes: PacketRoutes(), registry: BackendSlotRegistry(limit: maxBackendSlots),
                            generation: 1))
    }

    /// Builds routes from `snapshot`, the backends' MACs (from `NeighbourTable`) and the
    /// interface's MAC, and makes them the current ones. Returns them (for /stats: `unresolved`).
    @discardableResult
    public func publish(snapshot: ForwardingSnapshot, backendMACs: [IPAddress: MACAddress],
                        interfaceMAC: MACAddress) -> PacketRoutes {
        state.withLock { state in
            let clean = state.cleanThrough()
            let flushEpoch = flushes.load(ordering: .acquiring)
            state.registry.reclaim(cleanThrough: clean, flushEpoch: flushEpoch)
            state.frontendRegistry.reclaim(cleanThrough: clean, flushEpoch: flushEpoch)
            let routes = PacketRoutes(snapshot: snapshot, backendMACs: backendMACs, interfaceMAC: interfaceMAC,
                                      registry: state.registry, frontendRegistry: state.frontendRegistry,
                                      previous: state.routes)
            state.routes = routes
            state.generation &+= 1
            state.registry.retire(unusedBy: routes.usedSlots, generation: state.generation)
            state.frontendRegistry.retire(unusedBy: routes.usedFrontendIndices, generation: state.generation)
            published.store(state.generation, ordering: .releasing)
            return routes
        }
    }

    /// Registers a worker's sweep progress: retired backend slots wait for it.
    func register(_ progress: FlowSweepProgress) {
        state.withLock { $0.sweepers.append(WeakSweepProgress(progress: progress)) }
    }

    /// Called by the counter flusher as it starts a flush (flushes run one at a time): a
    /// retired slot is reused only after a whole flush following its last flow's end, so its
    /// traffic is booked to the backend that had it.
    public func countersFlushStarting() { flushes.add(1, ordering: .acquiringAndReleasing) }

    /// True when publishing again would free a retired backend slot; the control plane
    /// republishes then if servers wait for a slot.
    public var canReclaimSlots: Bool {
        state.withLock { state in
            state.registry.canReclaim(cleanThrough: state.cleanThrough(), flushEpoch: flushes.load(ordering: .acquiring))
        }
    }

    /// Backend slots held now (in routes, or retired and not yet reusable), for tests and /stats.
    public var heldBackendSlots: Int { state.withLock { $0.registry.held } }

    /// The generation of the newest routes.
    public var generation: UInt64 { published.load(ordering: .acquiring) }

    /// The newest routes and their generation.
    public func current() -> (routes: PacketRoutes, generation: UInt64) {
        state.withLock { ($0.routes, $0.generation) }
    }
}
