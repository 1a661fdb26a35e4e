/// Which data path is running, as shown in stats and logs.
public enum ConveyMode: String, Sendable, CaseIterable {
    case proxy, passthrough, dsr
}

/// Everything the stats endpoints render, read at one instant.
///
/// `/stats` JSON keeps the seed's keys with their meaning (`total_connections`,
/// `current_connections`, `total_bytes_tx` = client→server, `total_bytes_rx` = server→client,
/// `backends.NAME.servers{"ip:port": bool}`, `frontends.NAME`), and adds new keys beside them.
public struct StatsDocument: Sendable {
    public struct ServerRow: Sendable {
        public var pool: String
        public var name: String
        public var address: Endpoint
        public var state: ServerState
        public var healthy: Bool
        public var weight: Int
        /// How far a `slow_start` ramp has come (100: none runs).
        public var slowStartPercent: Int = 100
        public var backup: Bool
        public var keepsFlows: Bool
        public var totals: TrafficTotals
        public var lastCheck: String?
        /// `max_connections` (0: none).
        public var maxConnections: Int = 0
        /// Drained by the operator at runtime (`POST /servers/POOL/NAME/drain`).
        public var operatorDrain = false
        /// The port its health checks connect to, when `health_check_port` makes it another
        /// than `address`'s (nil: that one, or a removed server no longer checked).
        public var checkPort: UInt16? = nil
        /// The host name its `addr` gave, resolved to `address` (nil: an address was given).
        public var hostName: String? = nil
    }

    public struct FrontendRow: Sendable {
        public var name: String
        public var listen: Endpoint
        public var pool: String
        public var balance: BalanceAlgorithm
        public var totals: TrafficTotals
        public var noBackend: Int64
        public var overLimit: Int64
        /// New connections the `allow` / `deny` lists refused.
        public var denied: Int64 = 0
        /// Clients waiting now for a place at a server with `max_connections` (proxy mode).
        public var queued: Int64 = 0
        /// Clients closed after waiting `queue_timeout`.
        public var queueTimeouts: Int64 = 0
        /// Clients closed at once because `max_queue` clients were waiting.
        public var queueFull: Int64 = 0
        /// Clients closed because their PROXY header did not read or did not come in time.
        public var badProxyHeader: Int64 = 0
        /// AF_XDP modes: SYNs dropped because every server that could take them was full.
        public var serversFull: Int64 = 0
        /// No non-backup server can take new connections; backup servers take them.
        public var onBackup: Bool
        /// Removed by a reload: takes no new connections while its open ones drain.
        public var draining: Bool
        /// Addresses a reload moved it away from, where its open connections still drain.
        public var drainingListen: [Endpoint] = []
    }

    public var mode: ConveyMode
    public var uptimeSeconds: Double
    public var version: String
    public var frontends: [FrontendRow]
    /// Per pool, its servers (draining removed ones included).
    public var pools: [(name: String, servers: [ServerRow])]
    public var dataPlane: DataPlaneStats?
    /// Counts of servers and frontends that left the configuration (see `RetiredTotals`).
    public var retired: RetiredTotals

    /// Reads the runtime (and optional data-plane and health details) into a document.
    public init(view: RuntimeView, mode: ConveyMode, uptime: Duration, version: String,
                dataPlane: DataPlaneStats? = nil, lastCheck: [ServerID: String] = [:]) {
        self.mode = mode
        self.version = version
        let (s, atto) = uptime.components
        self.uptimeSeconds = Double(s) + Double(atto) / 1e18
        self.dataPlane = dataPlane
        self.retired = view.retired
        var rowsByPool: [String: [ServerRow]] = [:]
        var seen = Set<ServerID>()
        // A server's row comes from a route of its own pool first: a frontend that moved away
        // from a pool lists that pool's servers as draining, which they are only for it.
        let routes = view.snapshot.frontends
        // A ramp shows in wrr and leastconn frontends only: a server's progress is the lowest
        // any frontend's route has for it.
        var ramps: [ServerID: Int] = [:]
        for route in routes { for s in route.servers { ramps[s.id] = min(ramps[s.id] ?? 100, s.slowStartPercent) } }
        for (pass, route) in (routes.map { (0, $0) } + routes.map { (1, $0) }) {
            for server in route.servers where !seen.contains(server.id) && (pass == 1 || server.id.pool == route.config.pool) {
                seen.insert(server.id)
                rowsByPool[server.id.pool, default: []].append(
                    ServerRow(pool: server.id.pool, name: server.id.name, address: server.address,
                              state: server.state, healthy: view.healthy[server.id] ?? true,
                              weight: server.configuredWeight, slowStartPercent: ramps[server.id] ?? 100,
                              backup: server.isBackup, keepsFlows: server.keepsFlows,
                              totals: server.counters.snapshot(), lastCheck: lastCheck[server.id],
                              maxConnections: server.maxConnections, operatorDrain: view.drained.contains(server.id)))
            }
        }
        // Pools no frontend uses still appear (their servers carry no traffic).
        for pool in view.config.pools where rowsByPool[pool.name] == nil {
            // Its backups stand by while a non-backup server could take connections.
            let serverUp = pool.servers.contains { s in
                let id = ServerID(pool: pool.name, name: s.name)
                return !s.backup && s.weight > 0 && !view.drained.contains(id) && view.healthy[id] ?? true
            }
            rowsByPool[pool.name] = pool.servers.map { s in
                let id = ServerID(pool: pool.name, name: s.name)
                let healthy = view.healthy[id] ?? true
                let drained = view.drained.contains(id)
                return ServerRow(pool: pool.name, name: s.name, address: s.address,
                                 state: s.weight == 0 || drained ? .drain : (!healthy ? .down : (s.backup && serverUp ? .standby : .up)),
                                 healthy: view.healthy[id] ?? true, weight: s.weight, backup: s.backup, keepsFlows: true,
                                 totals: view.serverCounters[id]?.snapshot() ?? TrafficTotals(), lastCheck: lastCheck[id],
                                 maxConnections: s.maxConnections, operatorDrain: drained)
            }
        }
        // Check ports and host names come from the configuration (a removed server draining is
        // not checked).
        for pool in view.config.pools {
            for s in pool.servers {
                let port = HealthTarget(id: ServerID(pool: pool.name, name: s.name), address: s.address, check: pool.health,
                                        checkPort: s.healthCheckPort).checkedAddress.port
                guard let rows = rowsByPool[pool.name],
                      let i = rows.firstIndex(where: { $0.name == s.name && $0.address == s.address }) else { continue }
                if port != s.address.port { rowsByPool[pool.name]![i].checkPort = port }
                rowsByPool[pool.name]![i].hostName = s.hostName
            }
        }
        pools = rowsByPool.keys.sorted().map { ($0, rowsByPool[$0]!) }
        // One row per frontend, its live route first: a moved one's draining old address shares
        // its counters.
        var named = Set<String>()
        let rows = view.snapshot.frontends.filter { !$0.isDraining } + view.snapshot.frontends.filter(\.isDraining)
        frontends = rows.filter { named.insert($0.name).inserted }.map { route in
            let c = route.counters
            let left = view.snapshot.frontends.filter { $0.isDraining && $0.name == route.name && $0.config.listen != route.config.listen }
            return FrontendRow(name: route.name, listen: route.config.listen, pool: route.config.pool,
                               balance: route.config.balance, totals: c.snapshot(),
                               noBackend: c.noBackend.load(ordering: .relaxed),
                               overLimit: c.overLimit.load(ordering: .relaxed), denied: c.denied.load(ordering: .relaxed),
                               queued: c.queued.load(ordering: .relaxed), queueTimeouts: c.queueTimeouts.load(ordering: .relaxed),
                               queueFull: c.queueFull.load(ordering: .relaxed),
                               badProxyHeader: c.badProxyHeader.load(ordering: .relaxed),
                               serversFull: c.serversFull.load(ordering: .relaxed),
                               onBackup: route.onBackup || dataPlane?.frontendsOnBackup.contains(route.name) == true,
                               draining: route.isDraining,
                               drainingListen: left.map(\.config.listen))
        }
    }

    /// Sum over all frontends, and what removed ones had counted.
    public var totals: TrafficTotals { frontends.reduce(retired.frontends) { $0 + $1.totals } }

    /// The `/stats` JSON.
    public var json: JSONValue {
        func four(_ t: TrafficTotals, prefix: String) -> [(String, JSONValue)] {
            [("total_connections", .int(t.totalConnections)), ("current_connections", .int(t.currentConnections)),
             ("\(prefix)bytes_tx", .int(t.bytesTx)), ("\(prefix)bytes_rx", .int(t.bytesRx))]
        }
        let all = totals
        var root: [(String, JSONValue)] = four(all, prefix: "total_")
        root.append(("backends", .object(pools.map { pool in
            let sum = pool.servers.reduce(retired.pools[pool.name] ?? TrafficTotals()) { $0 + $1.totals }
            var fields = four(sum, prefix: "")
            // The seed's field: each server's health verdict by address (weight 0 or a drain is
            // `server_detail.state`'s to say). A removed server draining at an address a
            // configured one now has appears once, with the configured one's verdict (listed
            // first; the removed one is no longer checked).
            var up: [(String, Bool)] = []
            for s in pool.servers where !up.contains(where: { $0.0 == s.address.description }) {
                up.append((s.address.description, s.healthy))
            }
            fields.append(("servers", .object(up.map { ($0.0, .bool($0.1)) })))
            fields.append(("server_detail", .object(pool.servers.map { s in
                var detail: [(String, JSONValue)] = [
                    ("addr", .string(s.address.description)), ("state", .string(s.state.rawValue)),
                    ("healthy", .bool(s.healthy)), ("weight", .int(Int64(s.weight))),
                    ("slow_start_percent", .int(Int64(s.slowStartPercent))), ("backup", .bool(s.backup)),
                    ("keeps_flows", .bool(s.keepsFlows)), ("max_connections", .int(Int64(s.maxConnections))),
                    ("operator_drain", .bool(s.operatorDrain)),
                ]
                detail += four(s.totals, prefix: "")
                detail.append(("connect_failures", .int(s.totals.connectFailures)))
                if let check = s.lastCheck { detail.append(("last_check", .string(check))) }
                if let port = s.checkPort { detail.append(("check_port", .int(Int64(port)))) }
                if let name = s.hostName { detail.append(("host", .string(name))) }
                return (s.name, .object(detail))
            })))
            return (pool.name, .object(fields))
        })))
        root.append(("frontends", .object(frontends.map { f in
            var fields = four(f.totals, prefix: "")
            fields += [("listen_addr", .string(f.listen.description)), ("backend", .string(f.pool)),
                       ("balance", .string(f.balance.rawValue)), ("no_backend", .int(f.noBackend)),
                       ("over_limit", .int(f.overLimit)), ("denied", .int(f.denied)),
                       ("queued", .int(f.queued)), ("queue_timeouts", .int(f.queueTimeouts)),
                       ("queue_full", .int(f.queueFull)), ("bad_proxy_header", .int(f.badProxyHeader)),
                       ("servers_full", .int(f.serversFull)), ("on_backup", .bool(f.onBackup)), ("draining", .bool(f.draining)),
                       ("draining_listen_addrs", .array(f.drainingListen.map { .string($0.description) }))]
            return (f.name, .object(fields))
        })))
        root += [("mode", .string(mode.rawValue)), ("uptime_seconds", .double((uptimeSeconds * 1000).rounded() / 1000)),
                 ("version", .string(version))]
        if let dp = dataPlane { root.append(("dataplane", dp.json)) }
        return .object(root)
    }
}
