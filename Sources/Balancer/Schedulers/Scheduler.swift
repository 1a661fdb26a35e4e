/// Per-thread server selection for one frontend: owned by one proxy loop or XSK worker, rebuilt
/// when that thread adopts a new `ForwardingSnapshot`.
///
/// The algorithm comes from `route.config.balance`:
/// - `wrr`: `SmoothWeightedRoundRobin` over `route.selectable`.
/// - `leastconn`: `LeastConnections` over `route.selectable`.
/// - `maglev`: `FlowKey.hash` (the 5-tuple) looked up in `route.maglev`.
/// - `source`: `FlowKey.sourceHash` (client address only) looked up in `route.maglev`.
///
/// For the two hashing algorithms the runtime prebuilds `route.maglev` over `route.selectable`
/// in order (slot value k means `selectable[k]`), because a table build is too costly to repeat
/// per thread. When that table is missing, or was built over a different number of servers than
/// `selectable` holds, the scheduler places by `selectable[hash mod count]` instead: still
/// deterministic across instances, but not consistent (a pool change moves most clients).
///
/// `pick` runs once per new connection on the data path: it allocates nothing, takes no lock and
/// calls nothing through an existential (the state is an enum over concrete algorithm states).
/// Each thread keeps its own `Scheduler`. `wrr` walks the route's prebuilt cycle with the
/// frontend's shared atomic cursor (one relaxed add per new connection), so its exact,
/// interleaved order holds across threads; only for a cycle too long to prebuild does each
/// thread run its own (proportions per thread, and therefore overall). Tie rotation in
/// `leastconn` is per thread.
public struct Scheduler: Sendable {
    /// The algorithm and its mutable state.
    enum State: Sendable {
        case wrr(SmoothWeightedRoundRobin)
        case leastconn(LeastConnections)
        case maglev
        case source
        /// Held only while a payload is mutated in place (so its buffer stays uniquely owned).
        case moved
    }

    var state: State

    /// Selection state for `route`, sized for its servers.
    public init(route: FrontendRoute) {
        switch route.config.balance {
        case .wrr: state = .wrr(SmoothWeightedRoundRobin(serverCount: route.servers.count))
        case .leastconn: state = .leastconn(LeastConnections())
        case .maglev: state = .maglev
        case .source: state = .source
        }
    }

    /// The algorithm this scheduler runs.
    public var algorithm: BalanceAlgorithm {
        switch state {
        case .wrr: return .wrr
        case .leastconn: return .leastconn
        case .maglev: return .maglev
        case .source: return .source
        case .moved: preconditionFailure("Scheduler state observed mid-pick")
        }
    }

    /// The index into `route.servers` for a new flow, or nil when no server may take it
    /// (`route.selectable` is empty). `route` must be the route this scheduler was built from.
    public mutating func pick(for flow: FlowKey, in route: FrontendRoute) -> Int? {
        switch state {
        case .wrr(var wrr):
            // Read in place (no copy of the array, so no retain on the accept path).
            let length = route.wrrCycle.count
            if length > 0 {
                let position = route.counters.wrrPosition.wrappingAdd(1, ordering: .relaxed).oldValue
                return Int(route.wrrCycle[Int(position % UInt64(length))])
            }
            state = .moved
            defer { state = .wrr(wrr) }
            return wrr.pick(in: route)
        case .leastconn(var leastconn):
            state = .moved
            defer { state = .leastconn(leastconn) }
            return leastconn.pick(in: route)
        case .maglev:
            return Scheduler.place(hash: flow.hash, in: route)
        case .source:
            return Scheduler.place(hash: flow.sourceHash, in: route)
        case .moved:
            preconditionFailure("Scheduler.pick re-entered")
        }
    }

    /// Consistent placement of `hash` on `route.selectable` through `route.maglev`, or by
    /// `hash mod count` when the table is absent or does not match `selectable`.
    @inline(__always)
    static func place(hash: UInt64, in route: FrontendRoute) -> Int? {
        let n = route.selectable.count
        guard n > 0 else { return nil }
        if route.maglev?.backendCount == n, let position = route.maglev?.lookup(hash) {
            return route.selectable[position]
        }
        return route.selectable[Int(hash % UInt64(n))]
    }

    /// The server to try when `firstChoice` and the `attempt - 1` servers after it failed
    /// (attempt is 1-based): walks `route.selectable` onward from `firstChoice`, wrapping around,
    /// then the backup servers standing by (`route.standbyBackups`); nil once all were tried.
    ///
    /// When `firstChoice` is selectable, attempts 1...count-1 visit every other selectable server
    /// once. When it is not (it left selection since it was picked), the walk starts at the
    /// first selectable server after it and attempts 1...count visit them all.
    public static func fallback(after firstChoice: Int, attempt: Int, in route: FrontendRoute) -> Int? {
        let selectable = route.selectable
        let n = selectable.count
        guard attempt >= 1, n > 0 else { return nil }
        let start: Int
        let remaining: Int
        if let position = selectable.firstIndex(of: firstChoice) {
            start = position + 1
            remaining = n - 1
        } else {
            start = selectable.firstIndex { $0 > firstChoice } ?? 0
            remaining = n
        }
        if attempt <= remaining { return selectable[(start + attempt - 1) % n] }
        // Every selectable server refused: the backups standing by are next (their turn would
        // come anyway once the health checks catch up).
        let backup = attempt - remaining - 1
        return backup < route.standbyBackups.count ? route.standbyBackups[backup] : nil
    }
}
