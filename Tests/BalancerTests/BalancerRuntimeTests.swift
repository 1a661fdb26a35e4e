import Balancer
import Testing

@Suite("The runtime turns config, health and drains into forwarding snapshots")
struct BalancerRuntimeTests {
    @Test("every up, weighted server is selectable at start")
    func initial() throws {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002, 9003], weights: [1, 0, 2]))
        let route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers.map(\.state) == [.up, .drain, .up])
        #expect(route.selectable == [0, 2])
    }

    @Test("a server that fails its checks leaves selection and comes back, each change published once")
    func health() throws {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002]))
        let g0 = runtime.snapshots.generation
        runtime.setHealth(ServerID(pool: "pool", name: "s0"), up: false)
        let g1 = runtime.snapshots.generation
        #expect(g1 != g0)
        var route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.selectable == [1])
        #expect(route.servers[0].state == .down && route.servers[0].keepsFlows)
        runtime.setHealth(ServerID(pool: "pool", name: "s0"), up: false)
        #expect(runtime.snapshots.generation == g1)  // no change, no publish
        runtime.setHealth(ServerID(pool: "pool", name: "s0"), up: true)
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.selectable == [0, 1])
    }

    @Test("a removed server drains, keeping its flows, until drain_timeout passes")
    func removedServerDrains() async throws {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002], drain: .milliseconds(150)))
        let report = runtime.apply(config(ports: [9001], drain: .milliseconds(150)))
        #expect(report.applied.contains { $0.contains("pool/s1 removed") })
        var route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers.map(\.id.name) == ["s0", "s1"])
        #expect(route.servers[1].state == .drain && route.servers[1].keepsFlows)
        #expect(route.selectable == [0])
        #expect(runtime.expireDrains() == false)
        try await Task.sleep(for: .milliseconds(200))
        #expect(runtime.expireDrains() == true)
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers.map(\.id.name) == ["s0"])
    }

    @Test("a frontend moved to another pool (blue/green): the old pool's servers keep its flows until their drain_timeout")
    func poolSwitchDrains() async throws {
        func blueGreen(_ pool: String) -> ConveyConfig {
            var c = config(ports: [9001], drain: .milliseconds(150))
            c.pools[0].name = "blue"
            var green = c.pools[0]
            green.name = "green"
            green.servers[0].address.port = 9002
            c.pools.append(green)
            c.frontends[0].pool = pool
            return c
        }
        let runtime = BalancerRuntime(config: blueGreen("blue"))
        let report = runtime.apply(blueGreen("green"))
        #expect(report.applied.contains { $0.contains("backend blue -> green") })
        var route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers.map(\.id) == [ServerID(pool: "green", name: "s0"), ServerID(pool: "blue", name: "s0")])
        #expect(route.servers[1].state == .drain && route.servers[1].keepsFlows && route.servers[1].weight == 0)
        #expect(route.selectable == [0], "new flows go to green only")
        #expect(runtime.expireDrains() == false)
        try await Task.sleep(for: .milliseconds(200))
        #expect(runtime.expireDrains() == true)
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers.map(\.id.pool) == ["green"])

        // Switching back: green's flows drain in turn, and blue's servers are the frontend's own again.
        runtime.apply(blueGreen("blue"))
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers.map(\.id.pool) == ["blue", "green"])
        #expect(route.selectable == [0])
    }

    @Test("cumulative totals never go backwards: a removed server's counts stay in its pool's, a removed frontend's in the top level")
    func totalsSurviveRemovals() throws {
        var two = config(ports: [9001, 9002], drain: .zero)
        two.frontends.append(FrontendConfig(name: "other", listen: Endpoint(address: .v4(0x7F00_0001), port: 18081), pool: "pool"))
        let runtime = BalancerRuntime(config: two)
        let route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        for server in route.servers {
            server.counters.connectionOpened()
            server.counters.addTx(100)
            server.counters.connectionClosed()
        }
        route.counters.connectionOpened()
        route.counters.addTx(200)
        route.counters.connectionClosed()
        let other = try #require(runtime.snapshots.load().value.frontend(named: "other"))
        other.counters.connectionOpened()
        other.counters.addTx(50)
        func document() -> StatsDocument { Self.document(runtime) }
        let before = document()
        #expect(before.totals.totalConnections == 2 && before.totals.bytesTx == 250)

        runtime.apply(config(ports: [9001], drain: .zero))  // s1 and frontend "other" go
        let after = document()
        #expect(after.totals.totalConnections == 2 && after.totals.bytesTx == 250, "top level keeps other's counts")
        #expect(after.totals.currentConnections == 0, "a removed frontend holds nothing open")
        #expect(Self.poolField(runtime, "pool", "total_connections") == 2, "pool keeps s1's connection")
        #expect(Self.poolField(runtime, "pool", "bytes_tx") == 200)
    }

    static func document(_ runtime: BalancerRuntime) -> StatsDocument {
        StatsDocument(view: runtime.view(), mode: .proxy, uptime: .zero, version: "t")
    }

    /// `backends.POOL.KEY` of the runtime's `/stats` JSON, when it is an integer.
    static func poolField(_ runtime: BalancerRuntime, _ pool: String, _ key: String) -> Int64? {
        guard case .object(let root) = document(runtime).json,
              case .object(let backends)? = root.first(where: { $0.0 == "backends" })?.1,
              case .object(let fields)? = backends.first(where: { $0.0 == pool })?.1,
              case .int(let n)? = fields.first(where: { $0.0 == key })?.1 else { return nil }
        return n
    }

    @Test("a drain with nothing left to drain ends early, after the settle time: its frontend's address is free at once")
    func emptyDrainsEndEarly() async throws {
        var two = config(ports: [9001, 9002], drain: .seconds(30))
        two.frontends.append(FrontendConfig(name: "other", listen: Endpoint(address: .v4(0x7F00_0001), port: 18081), pool: "pool"))
        let runtime = BalancerRuntime(config: two, drainSettleTime: .milliseconds(100))
        let snapshot = runtime.snapshots.load().value
        // One open connection on the removed frontend, through server s1 (removed too).
        let other = try #require(snapshot.frontend(named: "other"))
        other.counters.connectionOpened()
        other.servers[1].counters.connectionOpened()
        runtime.apply(config(ports: [9001], drain: .seconds(30)))
        #expect(runtime.expireDrains() == false, "within the settle time")
        try await Task.sleep(for: .milliseconds(150))
        #expect(runtime.expireDrains() == false, "a connection is still open")
        #expect(runtime.snapshots.load().value.frontend(named: "other")?.isDraining == true)
        other.counters.connectionClosed()
        other.servers[1].counters.connectionClosed()
        #expect(runtime.expireDrains() == true)
        #expect(runtime.snapshots.load().value.frontend(named: "other") == nil)
        #expect(runtime.snapshots.load().value.frontend(named: "web")?.servers.map(\.id.name) == ["s0"])
        // The address is free for another frontend in the next reload.
        var renamed = try ConfigLoader.load(source: """
            [frontends.renamed]
            listen_addr = "127.0.0.1:18081"
            backend = "pool"
            [backends.pool.servers.s0]
            addr = "127.0.0.1:9001"
            """, file: "test.toml")
        renamed.config.frontends.append(runtime.config.frontends[0])
        #expect(runtime.reloadProblems(renamed).isEmpty)
    }

    @Test("a removed frontend takes no new connections, and its open ones drain on its pool's servers until drain_timeout")
    func removedFrontendDrains() async throws {
        var two = config(ports: [9001], drain: .milliseconds(150))
        two.frontends.append(FrontendConfig(name: "other", listen: Endpoint(address: .v4(0x7F00_0001), port: 18081), pool: "pool"))
        let runtime = BalancerRuntime(config: two)
        try #require(runtime.snapshots.load().value.frontend(named: "other")).counters.connectionOpened()
        let report = runtime.apply(config(ports: [9001], drain: .milliseconds(150)))
        #expect(report.applied.contains { $0.contains("'other' removed") && $0.contains("drain for") })
        #expect(report.needsRestart.isEmpty)
        let other = try #require(runtime.snapshots.load().value.frontend(named: "other"))
        #expect(other.isDraining && other.selectable.isEmpty && other.servers.allSatisfy { $0.keepsFlows && $0.state == .drain })
        #expect(runtime.view().frontendCounters["other"]?.snapshot().totalConnections == 1)
        try await Task.sleep(for: .milliseconds(200))
        #expect(runtime.expireDrains() == true)
        #expect(runtime.snapshots.load().value.frontend(named: "other") == nil)
        #expect(runtime.view().retired.frontends.totalConnections == 1, "its counts stay in the totals")
    }

    @Test("pool totals hold when a removed server's drain ends, and an unused pool keeps its servers' counts")
    func totalsHoldThroughDrainsAndSwitches() async throws {
        func poolTotal(_ runtime: BalancerRuntime, _ name: String) -> Int64? { Self.poolField(runtime, name, "total_connections") }
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002], drain: .milliseconds(100)))
        for s in try #require(runtime.snapshots.load().value.frontend(named: "web")).servers { s.counters.connectionOpened() }
        runtime.apply(config(ports: [9001], drain: .milliseconds(100)))
        #expect(poolTotal(runtime, "pool") == 2)
        try await Task.sleep(for: .milliseconds(150))
        #expect(runtime.expireDrains())
        #expect(poolTotal(runtime, "pool") == 2, "the drained server's connection stays in its pool's total")

        // Blue/green: once the switch's drain is over, blue is unused but keeps its counts.
        var blueGreen = config(ports: [9001], drain: .milliseconds(100))
        var green = blueGreen.pools[0]
        green.name = "green"
        blueGreen.pools.append(green)
        let bg = BalancerRuntime(config: blueGreen)
        try #require(bg.snapshots.load().value.frontend(named: "web")).servers[0].counters.connectionOpened()
        blueGreen.frontends[0].pool = "green"
        bg.apply(blueGreen)
        try await Task.sleep(for: .milliseconds(150))
        #expect(bg.expireDrains())
        #expect(poolTotal(bg, "pool") == 1, "the unused pool still shows its server's connection")
    }

    @Test("a removed frontend's draining route keeps the servers removed in the same reload")
    func removedFrontendKeepsRemovedServers() throws {
        var two = config(ports: [9001, 9002], drain: .seconds(30))
        two.frontends.append(FrontendConfig(name: "other", listen: Endpoint(address: .v4(0x7F00_0001), port: 18081), pool: "pool"))
        let runtime = BalancerRuntime(config: two)
        runtime.apply(config(ports: [9001], drain: .seconds(30)))
        let other = try #require(runtime.snapshots.load().value.frontend(named: "other"))
        #expect(other.servers.map(\.id.name) == ["s0", "s1"] && other.servers.allSatisfy(\.keepsFlows))
    }

    @Test("switches in a row (A → B → C) keep every earlier pool's drain, also when the frontend is then removed")
    func poolSwitchesInARow() throws {
        func pools(_ current: String, frontends: Bool = true) -> ConveyConfig {
            var c = config(ports: [9001], drain: .seconds(30))
            c.pools = ["a", "b", "c"].enumerated().map { i, name in
                PoolConfig(name: name, drainTimeout: .seconds(30),
                           servers: [ServerConfig(name: "s", address: Endpoint(address: .v4(0x7F00_0001), port: UInt16(9001 + i)))])
            }
            c.frontends[0].pool = current
            if !frontends {
                c.frontends = [FrontendConfig(name: "other", listen: Endpoint(address: .v4(0x7F00_0001), port: 18081), pool: "c")]
            }
            return c
        }
        let runtime = BalancerRuntime(config: pools("a"))
        runtime.apply(pools("b"))
        runtime.apply(pools("c"))
        var route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers.map(\.id.pool) == ["c", "a", "b"] && route.selectable == [0])
        runtime.apply(pools("c", frontends: false))  // "web" removed while a and b still drain
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(Set(route.servers.map(\.id.pool)) == ["a", "b", "c"] && route.selectable.isEmpty)
    }

    @Test("drains under way follow a reloaded drain_timeout, counted from their start: shortened, they end once it has passed; lengthened, they run on")
    func drainsFollowAReloadedTimeout() async throws {
        // A removed server, a removed frontend and a pool switch, all draining with 60 s.
        func setup(drain: Duration, servers: [UInt16] = [9001, 9002], switched: Bool = false, other: Bool = true) -> ConveyConfig {
            var c = config(ports: servers, drain: drain)
            var green = PoolConfig(name: "green", drainTimeout: drain, servers: [
                ServerConfig(name: "g0", address: Endpoint(address: .v4(0x7F00_0001), port: 9101)),
            ])
            green.drainTimeout = drain
            c.pools.append(green)
            if other {
                c.frontends.append(FrontendConfig(name: "other", listen: Endpoint(address: .v4(0x7F00_0001), port: 18081), pool: "pool"))
            }
            c.frontends.append(FrontendConfig(name: "app", listen: Endpoint(address: .v4(0x7F00_0001), port: 18082),
                                              pool: switched ? "pool" : "green"))
            return c
        }
        func drainingCount(_ runtime: BalancerRuntime) -> Int {
            let snapshot = runtime.snapshots.load().value
            let removedServer = snapshot.frontend(named: "web")?.servers.contains { $0.id.name == "s1" } == true
            let removedFrontend = snapshot.frontend(named: "other") != nil
            let switchDrain = snapshot.frontend(named: "app")?.servers.contains { $0.id.pool == "green" } == true
            return [removedServer, removedFrontend, switchDrain].filter { $0 }.count
        }
        let runtime = BalancerRuntime(config: setup(drain: .seconds(60)))
        runtime.apply(setup(drain: .seconds(60), servers: [9001], switched: true, other: false))
        #expect(drainingCount(runtime) == 3)
        #expect(runtime.expireDrains() == false)

        // Lengthened from what remains (60 s) to 120 s: nothing ends.
        let longer = runtime.apply(setup(drain: .seconds(120), servers: [9001], switched: true, other: false))
        #expect(longer.applied.contains { $0.contains("drain_timeout") && $0.contains("drains under way") })
        #expect(runtime.expireDrains() == false && drainingCount(runtime) == 3)
        #expect(try #require(runtime.nextDrainDeadline) > ContinuousClock.now + .seconds(100))

        // Shortened below the time they have run: every drain ends, by the next check at the latest.
        try await Task.sleep(for: .milliseconds(100))
        runtime.apply(setup(drain: .milliseconds(50), servers: [9001], switched: true, other: false))
        runtime.expireDrains()
        #expect(drainingCount(runtime) == 0)
        #expect(runtime.nextDrainDeadline == nil)
    }

    @Test("weight 0 drains a configured server: no new flows, then its flows end after drain_timeout")
    func weightZeroDrains() async throws {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002], drain: .milliseconds(100)))
        runtime.apply(config(ports: [9001, 9002], weights: [1, 0], drain: .milliseconds(100)))
        var route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.selectable == [0])
        #expect(route.servers[1].state == .drain && route.servers[1].keepsFlows)
        #expect(runtime.nextDrainDeadline != nil)
        try await Task.sleep(for: .milliseconds(150))
        #expect(runtime.expireDrains())
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers[1].keepsFlows == false)
        #expect(runtime.expireDrains() == false)  // reported once
        // Weighted again: back in selection, keeping flows.
        runtime.apply(config(ports: [9001, 9002], drain: .milliseconds(100)))
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.selectable == [0, 1] && route.servers[1].keepsFlows)
    }

    @Test("a server keeps its counters across a reload, also one the reload moves: its open connections close where they were counted")
    func countersSurviveReload() throws {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002]))
        let before = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        before.servers[0].counters.connectionOpened()
        before.servers[1].counters.connectionOpened()
        before.counters.connectionOpened()
        runtime.apply(config(ports: [9001, 9009], weights: [5, 1]))
        let after = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(after.servers[0].weight == 5)
        #expect(after.servers[0].counters.snapshot().totalConnections == 1)
        #expect(after.servers[1].address.port == 9009)
        #expect(after.servers[1].counters.snapshot().currentConnections == 1, "its connection to the old address is still open")
        // That connection ends: the gauge returns to 0, never below (leastconn and drains read it).
        after.servers[1].counters.connectionClosed()
        #expect(after.servers[1].counters.snapshot().currentConnections == 0)
        #expect(after.counters.snapshot().totalConnections == 1)
    }

    @Test("a server that was down, removed and added back while it still drains starts up, as its fresh health check does")
    func readdedServerStartsUp() throws {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002], drain: .seconds(30)))
        let s1 = ServerID(pool: "pool", name: "s1")
        runtime.setHealth(s1, up: false)
        runtime.apply(config(ports: [9001], drain: .seconds(30)))
        var route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers.map(\.id.name) == ["s0", "s1"], "s1 drains")
        runtime.apply(config(ports: [9001, 9002], drain: .seconds(30)))
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers[1].state == .up)
        #expect(route.selectable == [0, 1])
        // A server that stays configured keeps its verdict across a reload.
        runtime.setHealth(s1, up: false)
        runtime.apply(config(ports: [9001, 9002], weights: [2, 1], drain: .seconds(30)))
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers[1].state == .down)
    }

    @Test("a listen address moves live: the new one takes new connections, the old one drains its open ones, sharing the counters")
    func listenAddressMoves() async throws {
        let runtime = BalancerRuntime(config: config(ports: [9001], drain: .milliseconds(150)))
        runtime.snapshots.load().value.frontends[0].counters.connectionOpened()
        var moved = config(ports: [9001], drain: .milliseconds(150))
        moved.frontends[0].listen = Endpoint(address: .v4(0x7F00_0001), port: 18081)
        let report = runtime.apply(moved)
        #expect(report.applied.contains { $0.contains("listen_addr 127.0.0.1:18080 -> 127.0.0.1:18081") && $0.contains("drain for") })
        #expect(report.needsRestart.isEmpty)
        let routes = runtime.snapshots.load().value.frontends
        #expect(routes.map(\.config.listen.port) == [18081, 18080] && routes.map(\.isDraining) == [false, true])
        #expect(routes[0].selectable == [0] && routes[1].selectable.isEmpty)
        #expect(routes[0].counters === routes[1].counters, "one frontend, one set of counters")
        #expect(runtime.snapshots.load().value.frontend(named: "web")?.config.listen.port == 18081)
        let document = StatsDocument(view: runtime.view(), mode: .proxy, uptime: .zero, version: "test")
        #expect(document.frontends.map(\.listen.port) == [18081], "/stats lists the frontend once, at its address")
        #expect(document.frontends.first?.drainingListen.map(\.port) == [18080], "and where it still drains")
        #expect(document.totals.currentConnections == 1)
        try await Task.sleep(for: .milliseconds(200))
        #expect(runtime.expireDrains())
        #expect(runtime.snapshots.load().value.frontends.map(\.config.listen.port) == [18081])
        #expect(runtime.view().frontendCounters["web"]?.snapshot().currentConnections == 1, "the counters stay with the frontend")
        #expect(runtime.view().retired.frontends.totalConnections == 0)
    }

    @Test("a frontend added back, while it still drains, with another pool: the old pool's servers keep its open flows")
    func readdedWithAnotherPool() throws {
        var start = config(ports: [9001])
        start.pools.append(PoolConfig(name: "green", servers: [ServerConfig(name: "g", address: Endpoint(address: .v4(0x7F00_0001), port: 9101))]))
        let runtime = BalancerRuntime(config: start)
        var removed = start
        removed.frontends = []
        runtime.apply(removed)
        #expect(runtime.snapshots.load().value.frontend(named: "web")?.isDraining == true)
        var back = start
        back.frontends[0].pool = "green"
        runtime.apply(back)
        let web = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(!web.isDraining && runtime.snapshots.load().value.frontends.count == 1)
        #expect(web.servers.map(\.id.name) == ["g", "s0"], "green's server, and the old pool's kept for its flows")
        #expect(web.servers[1].keepsFlows && web.servers[1].state == .drain)
        #expect(web.selectable == [0])
    }

    @Test("a frontend added by a reload is routed at once and reported as added")
    func frontendAdded() throws {
        let runtime = BalancerRuntime(config: config(ports: [9001]))
        var more = config(ports: [9001])
        more.frontends.append(FrontendConfig(name: "api", listen: Endpoint(address: .v4(0x7F00_0001), port: 18090), pool: "pool"))
        let report = runtime.apply(more)
        #expect(report.applied == ["frontend 'api' added: 127.0.0.1:18090, backend pool"])
        #expect(report.needsRestart.isEmpty)
        let api = try #require(runtime.snapshots.load().value.frontend(named: "api"))
        #expect(!api.isDraining && api.selectable == [0])
    }

    @Test("a reload is judged as it would run: start-only settings stay, the rest (listen addresses too) is the file's")
    func effectiveConfig() {
        let runtime = BalancerRuntime(config: config(ports: [9001]))
        var file = config(ports: [9001, 9002])
        file.frontends[0].listen = Endpoint(address: IPAddress("fd77::100")!, port: 80)
        file.xdp.natAddresses = [IPAddress("fd77::2")!]
        let effective = runtime.effectiveConfig(file)
        #expect(effective.frontends[0].listen == file.frontends[0].listen, "listen addresses change live")
        #expect(effective.xdp == runtime.config.xdp)
        #expect(effective.pools == file.pools)
    }

    @Test("a reload that gives a frontend's address to another (a rename, or a move) is refused, naming both")
    func renameIsRefused() throws {
        let runtime = BalancerRuntime(config: config(ports: [9001]))
        let renamed = try ConfigLoader.load(source: """
            [frontends.web2]
            listen_addr = "127.0.0.1:18080"
            backend = "pool"
            [backends.pool.servers.s0]
            addr = "127.0.0.1:9001"
            """, file: "test.toml")
        let problems = runtime.reloadProblems(renamed)
        #expect(problems.map(\.key) == ["frontends.web2.listen_addr"] && problems.first?.line == 2)
        #expect(problems.first?.message.contains("is the address of frontend 'web', which this file removes") == true)
        var kept = renamed
        kept.config.frontends[0].name = "web"
        #expect(runtime.reloadProblems(kept).isEmpty)
        // web moves to 18081 and a new frontend takes 18080 in the same file.
        let swapped = try ConfigLoader.load(source: """
            [frontends.web]
            listen_addr = "127.0.0.1:18081"
            backend = "pool"
            [frontends.api]
            listen_addr = "127.0.0.1:18080"
            backend = "pool"
            [backends.pool.servers.s0]
            addr = "127.0.0.1:9001"
            """, file: "test.toml")
        let taken = runtime.reloadProblems(swapped)
        #expect(taken.map(\.key) == ["frontends.api.listen_addr"])
        #expect(taken.first?.message.contains("frontend 'web', which this file moves away from") == true)
    }

    @Test("on_down = close: a down server's route stops keeping its flows until it is up again; keep (the default) keeps them")
    func onDownClose() throws {
        var c = config(ports: [9001, 9002])
        let runtime = BalancerRuntime(config: c)
        let s0 = ServerID(pool: "pool", name: "s0")
        func route() throws -> ServerRoute {
            try #require(runtime.snapshots.load().value.frontend(named: "web")?.servers.first { $0.id == s0 })
        }
        runtime.setHealth(s0, up: false)
        #expect(try route().state == .down && route().keepsFlows, "keep: a down server's flows go on")
        c.pools[0].onDown = .close
        let report = runtime.apply(c)
        #expect(report.applied == ["pool pool: on_down keep -> close (connections of servers down now are closed too)"])
        #expect(try route().state == .down && !route().keepsFlows && route().closedWhileDown, "close: a down server's flows end")
        // At weight 0 too (its state says drain; the reason its flows end is still its health).
        c.pools[0].servers[0].weight = 0
        runtime.apply(c)
        #expect(try route().state == .drain && !route().keepsFlows && route().closedWhileDown)
        c.pools[0].servers[0].weight = 1
        runtime.apply(c)
        runtime.setHealth(s0, up: true)
        #expect(try route().state == .up && route().keepsFlows && !route().closedWhileDown)
        let s1 = try #require(runtime.snapshots.load().value.frontend(named: "web")?.servers.first { $0.id.name == "s1" })
        #expect(s1.keepsFlows)
    }

    @Test("live changes of frontend limits and pool settings are reported as applied")
    func liveSettingsAreReported() {
        let runtime = BalancerRuntime(config: config(ports: [9001]))
        var changed = config(ports: [9001])
        changed.frontends[0].maxConnections = 10
        changed.pools[0].idleTimeout = .seconds(60)
        changed.pools[0].health.rise = 5
        changed.pools[0].servers[0].healthCheckPort = 8080
        changed.frontends[0].tcpKeepalive = 60
        let report = runtime.apply(changed)
        #expect(report.applied == ["frontend 'web': max_connections 0 -> 10",
                                   "frontend 'web': tcp_keepalive 0 (off) -> 60 s (new connections)", "pool pool: health check settings",
                                   "pool pool: idle_timeout 300 s -> 60 s", "server pool/s0: health_check_port unset -> 8080"])
    }

    @Test("settings the data planes read once at start are reported as needing a restart, each by its key")
    func startSettingsNeedRestart() {
        let runtime = BalancerRuntime(config: config(ports: [9001]))
        var changed = config(ports: [9001])
        changed.xdp.natAddresses = [.v4(0x0A4D_0002)]
        changed.xdp.establishedTimeout = .seconds(60)
        changed.passthrough.connectionTrackerCapacity = 5
        let report = runtime.apply(changed)
        #expect(report.needsRestart == ["xdp.nat_addr needs a restart", "xdp.established_timeout needs a restart",
                                        "passthrough.connection_tracker_capacity needs a restart"])
        // They stay as running (and the next reload still says so), as the listen address does.
        #expect(runtime.config.xdp.natAddresses.isEmpty && runtime.config.passthrough.connectionTrackerCapacity == 20_000)
        #expect(runtime.apply(changed).needsRestart.count == 3)
        #expect(runtime.apply(config(ports: [9001])).needsRestart.isEmpty)
    }
}
