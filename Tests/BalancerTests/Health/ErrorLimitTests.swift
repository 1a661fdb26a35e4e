import Balancer
import Logging
import Testing

@Suite("error_limit: clients' failed connects mark a server down before its checks notice")
struct ErrorLimitTests {
    @Test("markDown takes a server down at once, logged and reported; its checks bring it back after rise passes")
    func markDownThenRise() async throws {
        let backend = try await LoopbackServer.start(.silent)
        defer { Task { try await backend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, lines) = CapturingLogHandler.logger()
        let a = HealthCheckerTests.target("a", port: backend.port, HealthCheckerTests.check(rise: 2))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)
        try await whileRunning(checker) {
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 1 })
            checker.markDown(a.id, because: .clientConnectsFailed(3))
            let down = try #require(checker.status(of: a.id))
            #expect(!down.isUp && down.lastResultText == "3 connections of clients in a row failed (error_limit)")
            checker.markDown(a.id, because: .clientConnectsFailed(3))  // already down: nothing more
            #expect(await eventually { checker.status(of: a.id)?.isUp == true }, "two passed checks later")
        }
        #expect(recorder.of(a.id).map(\.isUp) == [false, true])
        #expect(lines.all.contains { $0.message.contains("server web_pool/a at 127.0.0.1:\(backend.port) is down: 3 connections of clients in a row failed") })
    }

    @Test("the watch marks a server down once its pool's limit of failures in a row is reached, and only then; a success starts the count again")
    func watch() throws {
        var c = config(ports: [9001, 9002])
        c.pools[0].errorLimit = 3
        let runtime = BalancerRuntime(config: c)
        let checker = HealthChecker(targets: HealthTarget.targets(for: c, frontendsSendHeaders: true),
                                    logger: Logger(label: "test")) { id, status in runtime.setHealth(id, up: status.isUp) }
        let watch = ConnectErrorWatch(runtime: runtime, health: checker)
        let s0 = ServerID(pool: "pool", name: "s0")
        let counters = try #require(runtime.view().serverCounters[s0])
        counters.connectFailed()
        counters.connectFailed()
        counters.connectionOpened()  // a success: the count starts again
        counters.connectFailed()
        counters.connectFailed()
        watch.check()
        #expect(checker.status(of: s0)?.isUp == true)
        counters.connectFailed()
        watch.check()
        #expect(checker.status(of: s0)?.isUp == false)
        #expect(runtime.snapshots.load().value.frontend(named: "web")?.selectable == [1], "s0 left selection")
        #expect(counters.connectFailuresInARow.load(ordering: .relaxed) == 0)

        var off = c
        off.pools[0].errorLimit = 0
        runtime.apply(off)
        let s1 = ServerID(pool: "pool", name: "s1")
        let c1 = try #require(runtime.view().serverCounters[s1])
        for _ in 0..<50 { c1.connectFailed() }
        watch.check()
        #expect(checker.status(of: s1)?.isUp == true, "error_limit = 0: only the checks decide")
    }

    @Test("the count of failed connects starts again when the server moves to another address, comes back up, or its pool's limit changes")
    func countResets() throws {
        var c = config(ports: [9001, 9002])
        c.pools[0].errorLimit = 3
        let runtime = BalancerRuntime(config: c)
        let s0 = ServerID(pool: "pool", name: "s0")
        let counters = try #require(runtime.view().serverCounters[s0])
        func streak() -> Int64 { counters.connectFailuresInARow.load(ordering: .relaxed) }
        counters.connectFailed(); counters.connectFailed()
        var moved = c
        moved.pools[0].servers[0].address.port = 9101
        runtime.apply(moved)
        #expect(streak() == 0, "another machine")
        counters.connectFailed(); counters.connectFailed()
        runtime.setHealth(s0, up: false)
        runtime.setHealth(s0, up: true)
        #expect(streak() == 0, "back up")
        counters.connectFailed()
        var limit = moved
        limit.pools[0].errorLimit = 5
        runtime.apply(limit)
        #expect(streak() == 0, "a new limit")
        #expect(counters.connectFailures.load(ordering: .relaxed) == 5, "the total keeps counting")
    }
}
