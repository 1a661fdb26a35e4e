import Synchronization

/// The live state every mode shares: the running configuration, server health, drains and
/// counters, turned into `ForwardingSnapshot`s for the data paths.
///
/// The control plane (reload, health checks, the drain timer) calls in here; each change that
/// affects forwarding builds a new snapshot and publishes it with one generation bump. Data paths
/// only ever read `snapshots`. Counters are keyed by `ServerID` and frontend name, so an
/// unchanged server keeps its counters across reloads.
public final class BalancerRuntime: Sendable {
    /// What the data paths read.
    public let snapshots: SnapshotPublisher<ForwardingSnapshot>
    private let state: Mutex<State>
    private let clock = ContinuousClock()
    /// How long a drain runs at least before it may end early for having nothing left (see
    /// `expireDrains`): long enough for the data plane to have adopted it and counted what it
    /// holds.
    private let drainSettleTime: Duration
    /// Told when the servers that take a frontend's new flows change kind (see
    /// `ServingChange`), in publication order.
    private let onServingChange: (@Sendable (ServingChange) -> Void)?

    private struct State {
        var config: ConveyConfig
        var healthy: [ServerID: Bool] = [:]
        var serverCounters: [ServerID: ServerCounters] = [:]
        var frontendCounters: [String: FrontendCounters] = [:]
        /// Servers removed from the config that still hold flows, with their drain deadline.
        var removed: [ServerID: RemovedServer] = [:]
        /// Configured servers at weight 0: when their drain started.
        var weightZeroSince: [ServerID: ContinuousClock.Instant] = [:]
        /// Weight-0 servers whose drain has ended (their flows are closed).
        var weightZeroExpired: Set<ServerID> = []
        /// Servers in a `slow_start` ramp: when their health checks brought them back up.
        var upSince: [ServerID: ContinuousClock.Instant] = [:]
        /// The ramp percentages the last snapshot was built with (to republish on a change).
        var publishedRamps: [ServerID: Int] = [:]
        /// Frontends moved to another pool by a reload: the pool they left, whose servers keep
        /// that frontend's established flows (taking no new ones) until the deadline.
        var poolSwitches: [String: [PoolSwitch]] = [:]
        /// Frontends a reload removed, or the addresses a reload moved one away from: they
        /// take no new connections, and their open ones drain on their pool's servers until
        /// the deadline.
        var removedFrontends: [FrontendAddress: RemovedFrontend] = [:]
        /// What servers and frontends no longer in the configuration had counted, so the
        /// cumulative totals of their pools and of the whole never go backwards.
        var retired = RetiredTotals()
        /// Servers an operator drained at runtime (`setDrained`): no new flows, open ones go
        /// on. Kept across reloads while the server stays configured.
        var drained: Set<ServerID> = []
        /// Drained servers whose checks failed during the drain (restarted for maintenance):
        /// their `slow_start` ramp begins again when the drain ends, not while drained.
        var downWhileDrained: Set<ServerID> = []
    }

    private struct PoolSwitch {
        var oldPool: String
        var since: ContinuousClock.Instant
        var deadline: ContinuousClock.Instant
    }

    /// A frontend at one listen address (a moved frontend drains at its old one).
    private struct FrontendAddress: Hashable, Comparable {
        var name: String
        var listen: Endpoint

        init(_ f: FrontendConfig) {
            name = f.name
            listen = f.listen
        }

        static func < (a: Self, b: Self) -> Bool {
            (a.name, a.listen.description) < (b.name, b.listen.description)
        }
    }

    private struct RemovedFrontend {
        var config: FrontendConfig
        /// Its pool as it was, in case the reload removed that too.
        var pool: PoolConfig?
        var since: ContinuousClock.Instant
        var deadline: ContinuousClock.Instant
    }

    private struct RemovedServer {
        var config: ServerConfig
        var since: ContinuousClock.Instant
        var deadline: ContinuousClock.Instant
    }

    /// - Parameter drainSettleTime: how long a removed server's or frontend's drain runs at
    ///   least before it ends early for holding no connection: the data plane's delay in
    ///   counting connections (proxy mode counts at once; the AF_XDP modes fold their counts
    ///   in every `stats_update_frequency`).
    /// - Parameter onServingChange: called each time a published snapshot moves a configured
    ///   frontend's new flows onto its backup servers, back to its servers, or to none (under
    ///   the publishers' lock, never one the data paths take: changes arrive in order), and at
    ///   start for each frontend that does not start on its servers. It must not call back
    ///   into the runtime (that lock is not recursive).
    public init(config: ConveyConfig, drainSettleTime: Duration = .seconds(1),
                onServingChange: (@Sendable (ServingChange) -> Void)? = nil) {
        self.drainSettleTime = drainSettleTime
        self.onServingChange = onServingChange
        var state = State(config: config)
        let now = ContinuousClock.now
        Self.syncCounters(&state, config: config, now: now)
        self.state = Mutex(state)
        let first = Self.buildSnapshot(state, now: now)
        self.snapshots = SnapshotPublisher(first)
        for change in Self.servingChanges(from: ForwardingSnapshot(frontends: []), to: first) { onServingChange?(change) }
    }

    /// The configuration in force.
    public var config: ConveyConfig { state.withLock { $0.config } }

    /// Installs a new validated configuration: servers, weights and frontends apply to new
    /// flows at once; removed or weight-0 servers, removed frontends and the old address of a
    /// moved one drain for their pool's `drain_timeout`. Returns what changed and what could
    /// not change live (the settings the data planes read at start).
    @discardableResult
    public func apply(_ new: ConveyConfig) -> ReloadReport {
        let now = clock.now
        let report: ReloadReport = state.withLock { state in
            var report = ReloadReport(old: state.config, new: new)
            // Servers that disappear keep draining under their old address.
            let newIDs = Set(new.pools.flatMap { p in p.servers.map { ServerID(pool: p.name, name: $0.name) } })
            for pool in state.config.pools {
                for server in pool.servers {
                    let id = ServerID(pool: pool.name, name: server.name)
                    guard !newIDs.contains(id) else { continue }
                    let drain = new.pool(named: pool.name)?.drainTimeout ?? pool.drainTimeout
                    if drain > .zero { state.removed[id] = RemovedServer(config: server, since: now, deadline: now + drain) }
                }
            }
            for id in newIDs { state.removed[id] = nil }
            // A server new to the pools (added, or added back while its old self still drains)
            // starts up, as the health checker starts its fresh check: a verdict kept from its
            // old self would never be revised, since the checker reports only changes.
            let oldIDs = Set(state.config.pools.flatMap { p in p.servers.map { ServerID(pool: p.name, name: $0.name) } })
            for id in newIDs where !oldIDs.contains(id) { state.healthy[id] = nil }
            // Failed connects counted toward error_limit start again for a server that moved
            // (another machine), and in a pool whose limit changed.
            for p in new.pools {
                let old = state.config.pool(named: p.name)
                for s in p.servers {
                    let moved = old?.servers.first { $0.name == s.name }.map { $0.address != s.address } ?? false
                    if moved || old?.errorLimit != p.errorLimit {
                        state.serverCounters[ServerID(pool: p.name, name: s.name)]?.connectFailuresInARow.store(0, ordering: .relaxed)
                    }
                }
            }
            // A server removed (or added back) by a reload takes its full share: no ramp.
            state.upSince = state.upSince.filter { newIDs.contains($0.key) && oldIDs.contains($0.key) }
            // A frontend moved to another pool (blue/green): the old pool's servers drain its
            // flows for the old pool's drain_timeout, as removed servers do.
            // Switches follow one another (A → B → C): each earlier pool keeps its own drain.
            for f in new.frontends {
                guard let old = state.config.frontends.first(where: { $0.name == f.name }), old.pool != f.pool else { continue }
                var switches = state.poolSwitches[f.name, default: []].filter { $0.oldPool != f.pool && $0.oldPool != old.pool }
                let drain = (new.pool(named: old.pool) ?? state.config.pool(named: old.pool))?.drainTimeout ?? .zero
                if drain > .zero { switches.append(PoolSwitch(oldPool: old.pool, since: now, deadline: now + drain)) }
                state.poolSwitches[f.name] = switches.isEmpty ? nil : switches
            }
            // A frontend added back at an address where it still drains, with another pool:
            // that pool's servers keep its open flows, as after a pool switch.
            for f in new.frontends where !state.config.frontends.contains(where: { $0.name == f.name }) {
                guard let removed = state.removedFrontends[FrontendAddress(f)], removed.config.pool != f.pool else { continue }
                var switches = state.poolSwitches[f.name, default: []].filter { $0.oldPool != removed.config.pool }
                switches.append(PoolSwitch(oldPool: removed.config.pool, since: removed.since, deadline: removed.deadline))
                state.poolSwitches[f.name] = switches
            }
            // Removed frontends, and the old address of moved ones, drain there.
            for o in state.config.frontends where !new.frontends.contains(where: { FrontendAddress($0) == FrontendAddress(o) }) {
                let pool = state.config.pool(named: o.pool)
                let drain = new.pool(named: o.pool)?.drainTimeout ?? pool?.drainTimeout ?? .zero
                if drain > .zero {
                    state.removedFrontends[FrontendAddress(o)] = RemovedFrontend(config: o, pool: pool, since: now,
                                                                                  deadline: now + drain)
                }
            }
            for f in new.frontends { state.removedFrontends[FrontendAddress(f)] = nil }
            // Drains under way follow their pool's drain_timeout as the file now sets it,
            // counted from when each began, as a weight-0 server's does: shortening it ends a
            // drain that takes too long (at once if its time has passed), lengthening it gives
            // the drain more time. A drain whose pool is gone keeps its deadline.
            for (id, removed) in state.removed {
                if let drain = new.pool(named: id.pool)?.drainTimeout { state.removed[id]?.deadline = removed.since + drain }
            }
            for (key, removed) in state.removedFrontends {
                if let drain = new.pool(named: removed.config.pool)?.drainTimeout {
                    state.removedFrontends[key]?.deadline = removed.since + drain
                }
            }
            state.poolSwitches = state.poolSwitches.mapValues { list in
                list.map { s in
                    var s = s
                    if let drain = new.pool(named: s.oldPool)?.drainTimeout { s.deadline = s.since + drain }
                    return s
                }
            }
            // A removed frontend keeps its earlier pools' drains too (its route lists them).
            state.poolSwitches = state.poolSwitches.filter { name, _ in
                new.frontends.contains { $0.name == name } || state.removedFrontends.keys.contains { $0.name == name }
            }
            // An operator's drain lasts while its server stays in the configuration.
            let drainedBefore = state.drained
            state.drained.formIntersection(newIDs)
            state.downWhileDrained.formIntersection(state.drained)
            report.noteOperatorDrains(ended: drainedBefore.subtracting(state.drained))
            let effective = Self.effective(new, running: state.config)
            state.config = effective
            Self.syncCounters(&state, config: effective, now: now)
            return report
        }
        republish(now: now)
        return report
    }

    /// `new` as `apply` would run it: what cannot change live stays as running — the settings
    /// the data planes read at start (`[xdp]`, `[passthrough]`, `[proxy]`, `[stats]`). A
    /// reload's checks judge this, not the file.
    public func effectiveConfig(_ new: ConveyConfig) -> ConveyConfig {
        Self.effective(new, running: state.withLock { $0.config })
    }

    /// Reload problems no file check can see: a frontend taking the listen address another
    /// one leaves in the same file (a rename, or a swap) or still drains at. That address's
    /// open flows belong to the other frontend (the AF_XDP modes route by address), so it
    /// can be taken only once they are gone: in a later reload after that drain, or at a
    /// restart.
    public func reloadProblems(_ candidate: LoadedConfig) -> [ConfigProblem] {
        let (running, draining) = state.withLock { ($0.config, $0.removedFrontends.values.map(\.config)) }
        return candidate.config.frontends.compactMap { f in
            guard !running.frontends.contains(where: { FrontendAddress($0) == FrontendAddress(f) }) else { return nil }
            func leaves(_ o: FrontendConfig) -> Bool {
                o.listen == f.listen && o.name != f.name
                    && !candidate.config.frontends.contains { FrontendAddress($0) == FrontendAddress(o) }
            }
            let what: String
            let old: FrontendConfig
            if let o = running.frontends.first(where: leaves) {
                old = o
                what = candidate.config.frontends.contains { $0.name == o.name } ? "which this file moves away from it"
                    : "which this file removes"
            } else if let o = draining.first(where: leaves) {
                old = o
                what = "which an earlier reload removed or moved and which still drains there"
            } else {
                return nil
            }
            return candidate.problem(path: ["frontends", f.name, "listen_addr"],
                                     "\(f.listen) is the address of frontend '\(old.name)', \(what): its open connections are " +
                                     "on that address until they end or its drain_timeout passes, so another frontend can " +
                                     "take it in a later reload after that, or at a restart (to rename, keep the name " +
                                     "'\(old.name)' until then)")
        }
    }

    private static func effective(_ new: ConveyConfig, running: ConveyConfig) -> ConveyConfig {
        var effective = new
        effective.xdp = running.xdp
        effective.passthrough = running.passthrough
        effective.proxy = running.proxy
        effective.stats = running.stats
        return effective
    }

    /// Records a health verdict; republishes when it changes selection.
    public func setHealth(_ id: ServerID, up: Bool) {
        let now = clock.now
        let changed = state.withLock { state -> Bool in
            let old = state.healthy[id] ?? true
            state.healthy[id] = up
            // Back up after being down: a cold server, ramped in by its pool's slow_start, and
            // its count of failed connects (error_limit) starts again.
            if up && !old, let pool = state.config.pool(named: id.pool), pool.slowStart > .zero {
                state.upSince[id] = now
            } else if !up {
                state.upSince[id] = nil
            }
            if up && !old { state.serverCounters[id]?.connectFailuresInARow.store(0, ordering: .relaxed) }
            if !up && state.drained.contains(id) { state.downWhileDrained.insert(id) }
            return old != up
        }
        if changed { republish(now: now) }
    }

    /// Drains a configured server at the operator's request (`drained`), or ends that drain:
    /// a drained server takes no new flows, and its open ones go on (no `drain_timeout`), as
    /// HAProxy's `set server … state drain` or IPVS's weight 0. It lasts across reloads until
    /// ended or the server leaves the configuration. Returns whether anything changed.
    @discardableResult
    public func setDrained(_ id: ServerID, _ drained: Bool) throws(ServerCommandError) -> Bool {
        let now = clock.now
        let changed = try state.withLock { state throws(ServerCommandError) -> Bool in
            guard let pool = state.config.pool(named: id.pool) else {
                throw .unknownPool(id.pool, known: state.config.pools.map(\.name).sorted())
            }
            guard pool.servers.contains(where: { $0.name == id.name }) else {
                throw .unknownServer(id, known: pool.servers.map(\.name).sorted())
            }
            if drained { return state.drained.insert(id).inserted }
            guard state.drained.remove(id) != nil else { return false }
            // Down during the drain (restarted): it comes back cold, so its ramp starts now.
            if state.downWhileDrained.remove(id) != nil, pool.slowStart > .zero, state.healthy[id] ?? true {
                state.upSince[id] = now
            }
            return true
        }
        if changed { republish(now: now) }
        return changed
    }

    /// How far the `slow_start` ramp of a server that came up at `since` has come at `now`:
    /// 1...99 during the ramp, nil once it is over (or there is none).
    static func rampPercent(since: ContinuousClock.Instant?, slowStart: Duration, now: ContinuousClock.Instant) -> Int? {
        guard let since, slowStart > .zero else { return nil }
        let elapsed = now - since
        guard elapsed < slowStart else { return nil }
        return min(99, max(1, Int((elapsed / slowStart * 100).rounded(.down))))
    }

    /// Every ramp under way at `now`, with how far it has come.
    private static func ramps(_ state: State, now: ContinuousClock.Instant) -> [ServerID: Int] {
        var ramps: [ServerID: Int] = [:]
        for (id, since) in state.upSince {
            ramps[id] = rampPercent(since: since, slowStart: state.config.pool(named: id.pool)?.slowStart ?? .zero, now: now)
        }
        return ramps
    }

    /// Ends drains whose time has passed; called periodically by the control plane.
    /// Returns true when a snapshot was republished.
    ///
    /// A removed server's or frontend's drain also ends early once it holds no connection
    /// (after `drainSettleTime`), as HAProxy's old process exits with its last connection:
    /// its address is free for another frontend at once, and `/stats` stops listing it.
    @discardableResult
    public func expireDrains() -> Bool {
        let now = clock.now
        let settle = drainSettleTime
        let expired = state.withLock { state -> Bool in
            let before = state.removed.count
            state.removed = state.removed.filter { id, removed in
                guard removed.deadline > now else { return false }
                let open = state.serverCounters[id]?.currentConnections.load(ordering: .relaxed) ?? 0
                return now - removed.since < settle || open > 0
            }
            var changed = state.removed.count != before
            // A frontend no longer configured under its name: its counters are its drains' alone.
            for (key, removed) in state.removedFrontends
            where !state.config.frontends.contains(where: { $0.name == key.name }) && now - removed.since >= settle
                && (state.frontendCounters[key.name]?.currentConnections.load(ordering: .relaxed) ?? 0) <= 0 {
                state.removedFrontends[key] = nil
                changed = true
            }
            if state.poolSwitches.values.contains(where: { $0.contains { $0.deadline <= now } }) {
                state.poolSwitches = state.poolSwitches.compactMapValues { list in
                    let live = list.filter { $0.deadline > now }
                    return live.isEmpty ? nil : live
                }
                changed = true
            }
            // (A frontend's counters retire in syncCounters once nothing of it is left.)
            for (key, removed) in state.removedFrontends where removed.deadline <= now {
                state.removedFrontends[key] = nil
                changed = true
            }
            for (id, since) in state.weightZeroSince where !state.weightZeroExpired.contains(id) {
                let drain = state.config.pool(named: id.pool)?.drainTimeout ?? .zero
                if since + drain <= now {
                    state.weightZeroExpired.insert(id)
                    changed = true
                }
            }
            // Servers whose drain ended leave the counters too: their counts move to the
            // retired totals now, not at the next reload (the pool's totals never dip).
            if changed { Self.syncCounters(&state, config: state.config, now: now) }
            // slow_start ramps move on (republished when a percentage changed) and end.
            let ramps = Self.ramps(state, now: now)
            state.upSince = state.upSince.filter { ramps[$0.key] != nil }
            if ramps != state.publishedRamps { changed = true }
            return changed
        }
        if expired { republish(now: now) }
        return expired
    }

    /// The seconds until the next drain deadline, for the timer that calls `expireDrains`.
    public var nextDrainDeadline: ContinuousClock.Instant? {
        let now = clock.now
        return state.withLock { state in
            let removed = state.removed.values.map(\.deadline) + state.poolSwitches.values.flatMap { $0.map(\.deadline) }
                + state.removedFrontends.values.map(\.deadline)
            let zero = state.weightZeroSince.compactMap { id, since -> ContinuousClock.Instant? in
                guard !state.weightZeroExpired.contains(id),
                      let drain = state.config.pool(named: id.pool)?.drainTimeout else { return nil }
                return since + drain
            }
            return (removed + zero).min().map { max($0, now) }
        }
    }

    /// Counters and state of every server and frontend, for the stats service.
    public func view() -> RuntimeView {
        let snapshot = snapshots.load().value
        return state.withLock { state in
            RuntimeView(config: state.config, snapshot: snapshot, healthy: state.healthy,
                        frontendCounters: state.frontendCounters, retired: state.retired,
                        serverCounters: state.serverCounters, drained: state.drained)
        }
    }

    /// Every counter a takeover carries to the convey replacing this one (`CarriedCounters`).
    public func carriedCounters() -> CarriedCounters {
        state.withLock { CarriedCounters(frontends: $0.frontendCounters, servers: $0.serverCounters, retired: $0.retired) }
    }

    /// Goes on from the counts of the convey this one replaces: adds `carried` to this one's
    /// counters (what of it this configuration no longer has, to the retired totals), less
    /// `alreadyCounted` (what this convey counted of the same events itself: see
    /// `CarriedCounters`).
    public func carryOn(_ carried: CarriedCounters, alreadyCounted: CarriedCounters? = nil) -> CarriedCounters.Outcome {
        state.withLock { state in
            carried.add(to: state.frontendCounters, state.serverCounters, retired: &state.retired, less: alreadyCounted)
        }
    }

    private func republish(now: ContinuousClock.Instant) {
        // Build under the lock so two publishers cannot publish out of order.
        snapshots.update { old in
            let new = state.withLock { state in
                // What the ramps were at, to republish when one moves on (see `expireDrains`).
                state.publishedRamps = Self.ramps(state, now: now)
                return Self.buildSnapshot(state, now: now, previous: old)
            }
            if let onServingChange {
                for change in Self.servingChanges(from: old, to: new) { onServingChange(change) }
            }
            return new
        }
    }

    /// How `new` changes which servers take each configured frontend's new flows (a frontend
    /// new to `new`, or at start, counts as having been on its servers; one that left is
    /// not reported).
    private static func servingChanges(from old: ForwardingSnapshot, to new: ForwardingSnapshot) -> [ServingChange] {
        var before: [String: ServingServers] = [:]
        for route in old.frontends where !route.isDraining { before[route.name] = route.serving }
        return new.frontends.filter { !$0.isDraining }.compactMap { route in
            let was = before[route.name] ?? .servers
            return route.serving == was ? nil
                : ServingChange(frontend: route.name, pool: route.config.pool, from: was, to: route.serving)
        }
    }

    /// Keeps counters for servers still configured or draining, creates them for new ones,
    /// forgets gone ones, and tracks when weight-0 drains began. A server keeps its counters
    /// when a reload changes its address: its open connections, counted there, close there.
    private static func syncCounters(_ state: inout State, config: ConveyConfig, now: ContinuousClock.Instant) {
        var counters: [ServerID: ServerCounters] = [:]
        var zero: [ServerID: ContinuousClock.Instant] = [:]
        for pool in config.pools {
            for server in pool.servers {
                let id = ServerID(pool: pool.name, name: server.name)
                counters[id] = state.serverCounters[id] ?? ServerCounters()
                if server.weight == 0 { zero[id] = state.weightZeroSince[id] ?? now }
            }
        }
        for id in state.removed.keys {
            counters[id] = state.serverCounters[id] ?? ServerCounters()
        }
        for (id, old) in state.serverCounters where counters[id] !== old {
            state.retired.pools[id.pool, default: TrafficTotals()] += RetiredTotals.cumulative(old.snapshot())
        }
        state.serverCounters = counters
        state.weightZeroSince = zero
        state.weightZeroExpired = state.weightZeroExpired.filter { zero[$0] != nil }
        state.healthy = state.healthy.filter { counters[$0.key] != nil }
        state.upSince = state.upSince.filter { counters[$0.key] != nil }
        var frontends: [String: FrontendCounters] = [:]
        for f in config.frontends { frontends[f.name] = state.frontendCounters[f.name] ?? FrontendCounters() }
        for key in state.removedFrontends.keys { frontends[key.name] = state.frontendCounters[key.name] }
        for (name, old) in state.frontendCounters where frontends[name] == nil {
            state.retired.frontends += RetiredTotals.cumulative(old.snapshot())
        }
        state.frontendCounters = frontends
    }

    /// - Parameter previous: the snapshot this one replaces, whose Maglev tables are reused
    ///   where a frontend's selectable servers and weights are unchanged (a table costs
    ///   milliseconds, and a health change or a ramp step elsewhere changes none).
    private static func buildSnapshot(_ state: State, now: ContinuousClock.Instant,
                                      previous: ForwardingSnapshot? = nil) -> ForwardingSnapshot {
        let config = state.config
        let ramps = Self.ramps(state, now: now)
        var frontends: [FrontendRoute] = []
        for f in config.frontends {
            guard let pool = config.pool(named: f.pool) else { continue }
            var servers: [ServerRoute] = []
            // A slow_start ramp (wrr and leastconn only: a hashing frontend's table would move
            // flows at every step) scales the pool's weights so that weight 1 ramps too.
            let ramping = (f.balance == .wrr || f.balance == .leastconn)
                && pool.servers.contains { ramps[ServerID(pool: pool.name, name: $0.name)] != nil }
            for s in pool.servers {
                let id = ServerID(pool: pool.name, name: s.name)
                let ramp = ramps[id]
                let up = state.healthy[id] ?? true
                let serverState: ServerState = s.weight == 0 || state.drained.contains(id) ? .drain : (up ? .up : .down)
                // `on_down = "close"`: a down server's connections end with its health.
                let closedWhileDown = !up && pool.onDown == .close
                let keeps = !state.weightZeroExpired.contains(id) && !closedWhileDown
                var weight = s.weight
                if ramping {
                    weight = s.weight * ServerRoute.slowStartScale
                    if let ramp, weight > 0 { weight = max(1, weight * ramp / 100) }
                }
                servers.append(ServerRoute(id: id, address: s.address, weight: weight, state: serverState,
                                           isBackup: s.backup, keepsFlows: keeps, closedWhileDown: closedWhileDown,
                                           counters: state.serverCounters[id] ?? ServerCounters(),
                                           configuredWeight: s.weight, slowStartPercent: ramping ? ramp ?? 100 : 100,
                                           maxConnections: s.maxConnections))
            }
            for (id, removed) in state.removed.sorted(by: { $0.key.name < $1.key.name }) where id.pool == pool.name {
                servers.append(ServerRoute(id: id, address: removed.config.address, weight: 0, state: .drain,
                                           isBackup: removed.config.backup, keepsFlows: removed.deadline > now,
                                           counters: state.serverCounters[id] ?? ServerCounters(),
                                           maxConnections: removed.config.maxConnections))
            }
            // The pools this frontend left: their servers keep its established flows, weight 0,
            // until each switch's drain ends.
            servers += Self.switchedAwayServers(f.name, except: pool.name, state, now: now)
            // Backup servers take new flows only while no other server can.
            let available = servers.indices.filter { servers[$0].state == .up && servers[$0].weight > 0 }
            let primaries = available.filter { !servers[$0].isBackup }
            let backups = available.filter { servers[$0].isBackup }
            let selectable = primaries.isEmpty ? backups : primaries
            if !primaries.isEmpty { for i in backups { servers[i].state = .standby } }
            var table: MaglevTable? = nil
            if f.balance == .maglev || f.balance == .source, !selectable.isEmpty {
                let backends = selectable.map { (key: servers[$0].address.description, weight: servers[$0].weight) }
                let same = previous?.frontends.first { $0.name == f.name && !$0.isDraining }.flatMap { old -> MaglevTable? in
                    guard let t = old.maglev, old.selectable.count == backends.count,
                          zip(old.selectable, backends).allSatisfy({ i, b in
                              old.servers[i].address.description == b.key && old.servers[i].weight == b.weight
                          }) else { return nil }
                    return t
                }
                table = same ?? MaglevTable(backends: backends)
            }
            frontends.append(FrontendRoute(config: f, pool: pool, servers: servers, selectable: selectable,
                                           standbyBackups: primaries.isEmpty ? [] : backups, maglev: table,
                                           counters: state.frontendCounters[f.name] ?? FrontendCounters()))
        }
        // Removed frontends while they drain: their pool's servers keep the open flows; no
        // server takes a new one.
        for (key, removed) in state.removedFrontends.sorted(by: { $0.key < $1.key }) where removed.deadline > now {
            guard let pool = config.pool(named: removed.config.pool) ?? removed.pool else { continue }
            let servers = Self.drainingServers(ofPool: pool.name, fallback: removed.pool, state, now: now)
                + Self.switchedAwayServers(key.name, except: pool.name, state, now: now)
            frontends.append(FrontendRoute(config: removed.config, pool: pool, servers: servers, selectable: [], maglev: nil,
                                           counters: state.frontendCounters[key.name] ?? FrontendCounters(),
                                           isDraining: true))
        }
        return ForwardingSnapshot(frontends: frontends)
    }

    /// The servers of pool `name` as routes that keep a frontend's established flows but take
    /// no new ones: the configured servers (or `fallback`'s, for a pool the config dropped) and
    /// removed ones still draining, each once.
    private static func drainingServers(ofPool name: String, fallback: PoolConfig?, _ state: State,
                                        now: ContinuousClock.Instant) -> [ServerRoute] {
        var configs: [String: ServerConfig] = [:]
        let pool = state.config.pool(named: name) ?? fallback
        for s in pool?.servers ?? [] { configs[s.name] = s }
        for (id, removed) in state.removed where id.pool == name && removed.deadline > now && configs[id.name] == nil {
            configs[id.name] = removed.config
        }
        return configs.sorted(by: { $0.key < $1.key }).map { serverName, server in
            let id = ServerID(pool: name, name: serverName)
            // A removed server is not checked any more: its last verdict stands.
            let closedWhileDown = pool?.onDown == .close && state.healthy[id] == false
            return ServerRoute(id: id, address: server.address, weight: 0, state: .drain, isBackup: server.backup,
                               keepsFlows: !closedWhileDown, closedWhileDown: closedWhileDown,
                               counters: state.serverCounters[id] ?? ServerCounters(), maxConnections: server.maxConnections)
        }
    }

    /// The draining servers of the pools frontend `name` switched away from (but `except`).
    private static func switchedAwayServers(_ name: String, except current: String, _ state: State,
                                            now: ContinuousClock.Instant) -> [ServerRoute] {
        (state.poolSwitches[name] ?? []).filter { $0.deadline > now && $0.oldPool != current }
            .flatMap { drainingServers(ofPool: $0.oldPool, fallback: nil, state, now: now) }
    }
}

/// A frontend's new flows moved to another kind of server (see `BalancerRuntime`'s
/// `onServingChange`).
public struct ServingChange: Sendable, Equatable {
    public var frontend: String
    public var pool: String
    public var from: ServingServers
    public var to: ServingServers

    public init(frontend: String, pool: String, from: ServingServers, to: ServingServers) {
        self.frontend = frontend
        self.pool = pool
        self.from = from
        self.to = to
    }

    /// The log line: what now takes the frontend's new connections.
    public var message: String {
        switch (from, to) {
        case (_, .backups):
            return "frontend '\(frontend)': no non-backup server of pool '\(pool)' can take new connections; its backup servers take them"
        case (_, .none):
            return "frontend '\(frontend)': no server of pool '\(pool)' can take new connections; new clients fail (counted as no_backend)"
        case (.backups, .servers):
            return "frontend '\(frontend)': new connections go to pool '\(pool)''s non-backup servers again (the backups keep the connections they have)"
        default:
            return "frontend '\(frontend)': pool '\(pool)' has servers that take new connections again"
        }
    }
}

/// What a reload changed, for the log and for operators.
public struct ReloadReport: Sendable, Equatable {
    /// Human-readable changes applied live.
    public var applied: [String] = []
    /// Changes that need a restart (the settings the data planes read at start).
    public var needsRestart: [String] = []

    public init(applied: [String] = [], needsRestart: [String] = []) {
        self.applied = applied
        self.needsRestart = needsRestart
    }

    /// Says which operator drains end with their server (those kept are no change).
    mutating func noteOperatorDrains(ended: Set<ServerID>) {
        for id in ended.sorted() {
            applied.append("server \(id.pool)/\(id.name) left the configuration: its operator drain ends")
        }
    }

    init(old: ConveyConfig, new: ConveyConfig) {
        func drainText(_ o: FrontendConfig) -> String {
            let drain = (new.pool(named: o.pool) ?? old.pool(named: o.pool))?.drainTimeout ?? .zero
            return drain > .zero ? "its open connections there drain for \(drain.configText)" : "its open connections there are closed"
        }
        for f in new.frontends {
            guard let o = old.frontends.first(where: { $0.name == f.name }) else {
                applied.append("frontend '\(f.name)' added: \(f.listen), backend \(f.pool)")
                continue
            }
            if o.listen != f.listen {
                applied.append("frontend '\(f.name)': listen_addr \(o.listen) -> \(f.listen); \(o.listen) takes no new "
                               + "connections, " + drainText(o))
            }
            if o.pool != f.pool { applied.append("frontend '\(f.name)': backend \(o.pool) -> \(f.pool)") }
            if o.balance != f.balance { applied.append("frontend '\(f.name)': balance \(o.balance) -> \(f.balance)") }
            if o.maxConnections != f.maxConnections {
                applied.append("frontend '\(f.name)': max_connections \(o.maxConnections) -> \(f.maxConnections)")
            }
            if o.sources != f.sources {
                applied.append("frontend '\(f.name)': allow/deny lists (new connections; open ones keep going)")
            }
            if o.tcpKeepalive != f.tcpKeepalive {
                func text(_ n: Int) -> String { n == 0 ? "0 (off)" : "\(n) s" }
                applied.append("frontend '\(f.name)': tcp_keepalive \(text(o.tcpKeepalive)) -> \(text(f.tcpKeepalive)) (new connections)")
            }
            if o.logConnections != f.logConnections {
                applied.append("frontend '\(f.name)': log_connections \(o.logConnections) -> \(f.logConnections)")
            }
            if o.proxyProtocol != f.proxyProtocol {
                applied.append("frontend '\(f.name)': proxy_protocol \(o.proxyProtocol.rawValue) -> \(f.proxyProtocol.rawValue)")
            }
            if o.acceptProxyProtocol != f.acceptProxyProtocol {
                applied.append("frontend '\(f.name)': accept_proxy_protocol \(o.acceptProxyProtocol) -> \(f.acceptProxyProtocol) (new connections)")
            }
            if o.proxyProtocolPeers != f.proxyProtocolPeers {
                applied.append("frontend '\(f.name)': proxy_protocol_peers (new connections)")
            }
        }
        for o in old.frontends where !new.frontends.contains(where: { $0.name == o.name }) {
            applied.append("frontend '\(o.name)' removed: \(o.listen) takes no new connections, " + drainText(o))
        }
        for p in new.pools {
            let o = old.pool(named: p.name)
            if let o {
                if o.health != p.health { applied.append("pool \(p.name): health check settings") }
                if o.connectTimeout != p.connectTimeout { applied.append("pool \(p.name): connect_timeout \(o.connectTimeout.configText) -> \(p.connectTimeout.configText)") }
                if o.idleTimeout != p.idleTimeout { applied.append("pool \(p.name): idle_timeout \(o.idleTimeout.configText) -> \(p.idleTimeout.configText)") }
                if o.errorLimit != p.errorLimit { applied.append("pool \(p.name): error_limit \(o.errorLimit) -> \(p.errorLimit)") }
                if o.queueTimeout != p.queueTimeout {
                    applied.append("pool \(p.name): queue_timeout \(o.queueTimeout.configText) -> \(p.queueTimeout.configText) (clients waiting now too)")
                }
                if o.maxQueue != p.maxQueue {
                    func text(_ n: Int) -> String { n == 0 ? "0 (no limit)" : "\(n)" }
                    applied.append("pool \(p.name): max_queue \(text(o.maxQueue)) -> \(text(p.maxQueue)) (clients that begin to wait; those waiting now stay)")
                }
                if o.onDown != p.onDown {
                    applied.append("pool \(p.name): on_down \(o.onDown.rawValue) -> \(p.onDown.rawValue)"
                                   + (p.onDown == .close ? " (connections of servers down now are closed too)" : ""))
                }
                if o.slowStart != p.slowStart { applied.append("pool \(p.name): slow_start \(o.slowStart.configText) -> \(p.slowStart.configText)") }
                if o.drainTimeout != p.drainTimeout { applied.append("pool \(p.name): drain_timeout \(o.drainTimeout.configText) -> \(p.drainTimeout.configText) (drains under way too, from their start)") }
            }
            for s in p.servers {
                if let os = o?.servers.first(where: { $0.name == s.name }) {
                    if os.address != s.address {
                        applied.append("server \(p.name)/\(s.name): \(os.address) -> \(s.address)"
                                       + (s.hostName.map { " ('\($0)' resolves to it now)" } ?? ""))
                    }
                    if os.weight != s.weight { applied.append("server \(p.name)/\(s.name): weight \(os.weight) -> \(s.weight)") }
                    if os.backup != s.backup { applied.append("server \(p.name)/\(s.name): backup \(os.backup) -> \(s.backup)") }
                    if os.healthCheckPort != s.healthCheckPort {
                        func text(_ port: UInt16?) -> String { port.map { "\($0)" } ?? "unset" }
                        applied.append("server \(p.name)/\(s.name): health_check_port \(text(os.healthCheckPort)) -> \(text(s.healthCheckPort))")
                    }
                    if os.maxConnections != s.maxConnections {
                        applied.append("server \(p.name)/\(s.name): max_connections \(os.maxConnections) -> \(s.maxConnections)"
                                       + (s.maxConnections == 0 ? " (no limit)" : "")
                                       + (s.maxConnections > 0 && (os.maxConnections == 0 || s.maxConnections < os.maxConnections)
                                          ? " (connections it holds over the new limit go on; new ones wait until it is under)" : ""))
                    }
                } else {
                    applied.append("server \(p.name)/\(s.name) added (\(s.address), weight \(s.weight)\(s.backup ? ", backup" : ""))")
                }
            }
            for os in o?.servers ?? [] where !p.servers.contains(where: { $0.name == os.name }) {
                applied.append("server \(p.name)/\(os.name) removed: draining for \(p.drainTimeout.configText)")
            }
        }
        if old.xdp.iface != new.xdp.iface { needsRestart.append("xdp.iface needs a restart") }
        // The data planes read these once, at start.
        let settings: [(String, Bool)] = [
            ("xdp.attach", old.xdp.attach != new.xdp.attach), ("xdp.zero_copy", old.xdp.zeroCopy != new.xdp.zeroCopy),
            ("xdp.nat_addr", old.xdp.natAddresses != new.xdp.natAddresses), ("xdp.nat_ports", old.xdp.natPorts != new.xdp.natPorts),
            ("xdp.syn_timeout", old.xdp.synTimeout != new.xdp.synTimeout),
            ("xdp.established_timeout", old.xdp.establishedTimeout != new.xdp.establishedTimeout),
            ("xdp.closing_timeout", old.xdp.closingTimeout != new.xdp.closingTimeout),
            ("passthrough.connection_tracker_capacity",
             old.passthrough.connectionTrackerCapacity != new.passthrough.connectionTrackerCapacity),
            ("passthrough.workers", old.passthrough.workers != new.passthrough.workers),
            ("passthrough.stats_update_frequency", old.passthrough.statsUpdateFrequency != new.passthrough.statsUpdateFrequency),
            ("proxy.workers", old.proxy.workers != new.proxy.workers),
        ]
        for (key, changed) in settings where changed { needsRestart.append("\(key) needs a restart") }
        if old.stats.address != new.stats.address || old.stats.port != new.stats.port {
            needsRestart.append("[stats] address/port need a restart")
        }
        if old.stats.admin != new.stats.admin { needsRestart.append("[stats] admin needs a restart") }
        if old.stats.stateFile != new.stats.stateFile { needsRestart.append("[stats] state_file needs a restart") }
    }
}

/// A consistent read of the runtime for reporting.
public struct RuntimeView: Sendable {
    public var config: ConveyConfig
    public var snapshot: ForwardingSnapshot
    public var healthy: [ServerID: Bool]
    public var frontendCounters: [String: FrontendCounters]
    public var retired = RetiredTotals()
    /// Every configured (or draining) server's counters, also those of pools no frontend uses.
    public var serverCounters: [ServerID: ServerCounters] = [:]
    /// Servers an operator drained at runtime (`BalancerRuntime.setDrained`).
    public var drained: Set<ServerID> = []
}

/// Why a runtime command on a server was not applied (the stats server's `/servers/…`).
public enum ServerCommandError: Error, Equatable, CustomStringConvertible {
    case unknownPool(String, known: [String])
    case unknownServer(ServerID, known: [String])

    public var description: String {
        switch self {
        case .unknownPool(let name, let known):
            return "no pool '\(name)' in the configuration (pools: \(known.joined(separator: ", ")))"
        case .unknownServer(let id, let known):
            return "no server '\(id.name)' in pool '\(id.pool)' (servers: \(known.joined(separator: ", ")))"
        }
    }
}

/// The cumulative counts (connections, bytes, connect failures) of servers and frontends that
/// left the configuration, by pool and overall: added to the totals of what remains, so
/// `total_connections` and the byte totals never go backwards on a reload.
public struct RetiredTotals: Sendable, Equatable {
    /// Per pool: its removed (or re-addressed) servers' counts.
    public var pools: [String: TrafficTotals] = [:]
    /// Removed frontends' counts.
    public var frontends = TrafficTotals()

    public init() {}

    /// `totals` without the gauge: a removed thing holds no connection open.
    static func cumulative(_ totals: TrafficTotals) -> TrafficTotals {
        var t = totals
        t.currentConnections = 0
        return t
    }
}
