import Balancer
import Testing

@Suite("slow_start: a server back from down takes a growing share of new connections")
struct SlowStartTests {
    func ramped(_ balance: BalanceAlgorithm, slowStart: Duration = .milliseconds(600)) -> ConveyConfig {
        var c = config(ports: [9001, 9002], weights: [1, 3], balance: balance)
        c.pools[0].slowStart = slowStart
        return c
    }

    @Test("`slow_start` is read in seconds, printed back, and reported when a reload changes it")
    func configKey() throws {
        let c = try load("""
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "p"
            [backends.p]
            slow_start = 30
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            """)
        #expect(c.pools[0].slowStart == .seconds(30))
        #expect(problems("""
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "p"
            [backends.p]
            slow_start = -1
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            """).map(\.key) == ["backends.p.slow_start"])
        let runtime = BalancerRuntime(config: ramped(.wrr))
        #expect(runtime.apply(ramped(.wrr, slowStart: .seconds(5))).applied.contains { $0.contains("slow_start") })
    }

    @Test("wrr: the returning server's weight grows from 1 (of 16 per configured unit) to its own, and the pool's weights go back to the configured ones after")
    func wrrRamp() async throws {
        let runtime = BalancerRuntime(config: ramped(.wrr))
        #expect(try webRoute(runtime).servers.map(\.weight) == [1, 3], "no ramp at start")
        let s1 = ServerID(pool: "pool", name: "s1")
        runtime.setHealth(s1, up: false)
        runtime.setHealth(s1, up: true)
        var r = try webRoute(runtime)
        #expect(r.servers.map(\.weight) == [16, 1], "the cold server starts with 1 of 17 turns (its full share would be 3 of 4)")
        #expect(r.servers[1].slowStartPercent == 1 && r.servers[1].configuredWeight == 3)
        #expect(r.wrrCycle.count == 17)

        try await Task.sleep(for: .milliseconds(300))
        #expect(runtime.expireDrains(), "the ramp moved on: republished")
        r = try webRoute(runtime)
        #expect(r.servers[1].weight > 8 && r.servers[1].weight < 48, "\(r.servers.map(\.weight))")
        #expect(r.servers[1].slowStartPercent >= 40 && r.servers[1].slowStartPercent < 100)

        try await Task.sleep(for: .milliseconds(400))
        #expect(runtime.expireDrains())
        r = try webRoute(runtime)
        #expect(r.servers.map(\.weight) == [1, 3] && r.servers[1].slowStartPercent == 100, "over: the configured weights")
        #expect(runtime.expireDrains() == false, "nothing more to publish")
    }

    @Test("hashing frontends keep their weights (a ramp would move flows at each step); a server that goes down again leaves the ramp")
    func notForHashingFrontends() throws {
        let runtime = BalancerRuntime(config: ramped(.maglev))
        let s1 = ServerID(pool: "pool", name: "s1")
        runtime.setHealth(s1, up: false)
        runtime.setHealth(s1, up: true)
        #expect(try webRoute(runtime).servers.map(\.weight) == [1, 3])

        let wrr = BalancerRuntime(config: ramped(.leastconn, slowStart: .seconds(60)))
        wrr.setHealth(s1, up: false)
        wrr.setHealth(s1, up: true)
        #expect(try webRoute(wrr).servers.map(\.weight) == [16, 1])
        wrr.setHealth(s1, up: false)
        #expect(try webRoute(wrr).servers.map(\.weight) == [1, 3], "down: no ramp, weights as configured")
    }

    @Test("a server a reload removes and adds back takes its full share: its ramp ended with it")
    func removedAndAddedBackNoRamp() throws {
        let runtime = BalancerRuntime(config: ramped(.wrr, slowStart: .seconds(60)))
        let s1 = ServerID(pool: "pool", name: "s1")
        runtime.setHealth(s1, up: false)
        runtime.setHealth(s1, up: true)
        #expect(try webRoute(runtime).servers.map(\.weight) == [16, 1])
        var without = ramped(.wrr, slowStart: .seconds(60))
        without.pools[0].servers.removeLast()
        runtime.apply(without)
        runtime.apply(ramped(.wrr, slowStart: .seconds(60)))
        #expect(try webRoute(runtime).servers.map(\.weight) == [1, 3])
        #expect(runtime.expireDrains() == false, "no ramp left to step")
    }

    @Test("a pool shared by a maglev and a wrr frontend: only the wrr one ramps, and /stats shows the ramp whichever comes first")
    func sharedPool() throws {
        var c = ramped(.maglev, slowStart: .seconds(60))
        var second = c.frontends[0]
        second.name = "web2"
        second.listen.port += 1
        second.balance = .wrr
        c.frontends.append(second)
        let runtime = BalancerRuntime(config: c)
        let s1 = ServerID(pool: "pool", name: "s1")
        runtime.setHealth(s1, up: false)
        runtime.setHealth(s1, up: true)
        let snapshot = runtime.snapshots.load().value
        #expect(snapshot.frontend(named: "web")?.servers.map(\.weight) == [1, 3])
        #expect(snapshot.frontend(named: "web2")?.servers.map(\.weight) == [16, 1])
        let doc = StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test")
        #expect(doc.pools.first?.servers.first { $0.name == "s1" }?.slowStartPercent == 1)
    }

    @Test("/stats shows the configured weight and the ramp's progress")
    func stats() throws {
        let runtime = BalancerRuntime(config: ramped(.wrr, slowStart: .seconds(60)))
        let s1 = ServerID(pool: "pool", name: "s1")
        runtime.setHealth(s1, up: false)
        runtime.setHealth(s1, up: true)
        let json = StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test").json.serialized()
        #expect(json.contains("\"weight\":3,\"slow_start_percent\":1,"), "\(json)")
        #expect(json.contains("\"weight\":1,\"slow_start_percent\":100,"), "\(json)")
        let metrics = PrometheusExporter().render(StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test"))
        #expect(metrics.contains("convey_server_slow_start_percent{pool=\"pool\",server=\"s1\",addr=\"127.0.0.1:9002\"} 1.0\n"), "\(metrics)")
        #expect(metrics.contains("convey_server_slow_start_percent{pool=\"pool\",server=\"s0\",addr=\"127.0.0.1:9001\"} 100.0\n"), "\(metrics)")
    }
}
