import Balancer
import Logging
@testable import Proxy
import ServiceLifecycle
import Synchronization

/// Builds forwarding snapshots by hand the way the runtime does (counters kept per server and
/// per frontend across republishes), runs a `ProxyService` on loopback and stops it.
final class ProxyHarness: Sendable {
    let publisher: SnapshotPublisher<ForwardingSnapshot>
    let service: ProxyService
    private let tables: CounterTables

    /// The counters of every server and frontend published, as the runtime keeps them.
    private final class CounterTables: Sendable {
        let servers = Mutex<[ServerID: ServerCounters]>([:])
        let frontends = Mutex<[String: FrontendCounters]>([:])

        /// What a takeover carries of these counters, as the runtime's `CounterCarry` does.
        var carry: CounterCarry {
            CounterCarry(totals: { [self] in
                CarriedCounters(frontends: frontends.withLock { $0 }, servers: servers.withLock { $0 }, retired: RetiredTotals())
            }, carryOn: { [self] carried, counted in
                var retired = RetiredTotals()
                return carried.add(to: frontends.withLock { $0 }, servers.withLock { $0 }, retired: &retired, less: counted)
            })
        }
    }
    private let task = Mutex<Task<Void, any Error>?>(nil)

    /// One server as a test describes it.
    struct Server {
        var name: String
        var address: Endpoint
        var weight = 1
        var state: ServerState? = nil
        var keepsFlows = true
        /// Its flows are not kept because it is down (`on_down = "close"`).
        var closedWhileDown = false
        /// The server's `max_connections` (0: none).
        var maxConnections = 0
    }

    /// A frontend on 127.0.0.1 (ephemeral port) in front of `servers`.
    init(servers: [Server], balance: BalanceAlgorithm = .wrr, pool: (inout PoolConfig) -> Void = { _ in },
         frontend: (inout FrontendConfig) -> Void = { _ in }, workers: Int = 2, forceCopy: Bool = false,
         logger: Logger = Logger(label: "proxy-test"), takeover: Bool = false, handoverName: String? = nil,
         operatorDrains: OperatorDrains? = nil, carriesCounters: Bool = false, proxyHeaderTimeout: Duration? = nil) {
        var tuning = ProxyTuning()
        if let proxyHeaderTimeout { tuning.proxyHeaderTimeout = proxyHeaderTimeout }
        tuning.forceCopy = forceCopy
        tuning.pinThreads = false
        let tables = CounterTables()
        self.tables = tables
        let initial = ForwardingSnapshot(frontends: [])
        publisher = SnapshotPublisher(initial)
        service = ProxyService(snapshots: publisher, settings: ProxySettings(workers: workers),
                               logger: logger, tuning: tuning, takeover: takeover, handoverName: handoverName,
                               operatorDrains: operatorDrains, counterCarry: carriesCounters ? tables.carry : nil)
        var poolConfig = PoolConfig(name: "pool", servers: servers.map {
            ServerConfig(name: $0.name, address: $0.address, weight: $0.weight, maxConnections: $0.maxConnections)
        })
        pool(&poolConfig)
        var frontendConfig = FrontendConfig(name: "web", listen: Endpoint(address: .v4(0x7F00_0001), port: 0),
                                            pool: "pool", balance: balance)
        frontend(&frontendConfig)
        self.frontendConfig = Mutex(frontendConfig)
        self.poolConfig = Mutex(poolConfig)
        publish(servers)
    }

    private let frontendConfig: Mutex<FrontendConfig>
    private let poolConfig: Mutex<PoolConfig>

    /// Publishes a snapshot with `servers` as the frontend's pool (the runtime's view after a
    /// reload or health change): state defaults to up for weight > 0, drain for weight 0.
    func publish(_ servers: [Server]) {
        let f = frontendConfig.withLock { $0 }
        var p = poolConfig.withLock { $0 }
        p.servers = servers.map { ServerConfig(name: $0.name, address: $0.address, weight: $0.weight, maxConnections: $0.maxConnections) }
        let routes = servers.map { s in
            let id = ServerID(pool: p.name, name: s.name)
            let counters = tables.servers.withLock { table in
                if let c = table[id] { return c }
                let c = ServerCounters()
                table[id] = c
                return c
            }
            return ServerRoute(id: id, address: s.address, weight: s.weight,
                               state: s.state ?? (s.weight > 0 ? .up : .drain), isBackup: s.state == .standby,
                               keepsFlows: s.keepsFlows, closedWhileDown: s.closedWhileDown, counters: counters,
                               maxConnections: s.maxConnections)
        }
        let selectable = routes.indices.filter { routes[$0].state == .up && routes[$0].weight > 0 }
        let standby = routes.indices.filter { routes[$0].state == .standby }
        let fc = counters(frontend: f.name)
        publisher.publish(ForwardingSnapshot(frontends: [
            FrontendRoute(config: f, pool: p, servers: routes, selectable: selectable, standbyBackups: standby,
                          maglev: nil, counters: fc),
        ]))
    }

    /// Changes the frontend's configuration for the next `publish` (a reload of its settings).
    func reconfigure(frontend change: (inout FrontendConfig) -> Void) {
        frontendConfig.withLock { change(&$0) }
    }

    func counters(server name: String) -> ServerCounters {
        tables.servers.withLock { table in
            let id = ServerID(pool: "pool", name: name)
            if let c = table[id] { return c }
            let c = ServerCounters()
            table[id] = c
            return c
        }
    }

    func counters(frontend name: String = "web") -> FrontendCounters {
        tables.frontends.withLock { table in
            if let c = table[name] { return c }
            let c = FrontendCounters()
            table[name] = c
            return c
        }
    }

    /// Starts the service and waits until it listens; returns the frontend's address.
    @discardableResult
    func start() async throws -> Endpoint {
        let service = self.service
        task.withLock { $0 = Task { try await service.run() } }
        guard await eventually({ service.status().listening["web"] != nil }) else {
            try await stop()
            throw TestError.timeout("the proxy to listen")
        }
        return service.status().listening["web"]!
    }

    var address: Endpoint { service.status().listening["web"]! }

    /// Stops the service (cancellation: everything closed at once) and waits for `run()`.
    func stop() async throws {
        guard let t = task.withLock({ $0 }) else { return }
        t.cancel()
        try await t.value
    }
}
