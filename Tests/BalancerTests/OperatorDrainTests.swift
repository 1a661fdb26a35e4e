import Balancer
import Glibc
import Logging
import Synchronization
import Testing

/// Draining a server at runtime, without editing the file (`POST /servers/POOL/NAME/drain`).
@Suite("An operator's drain at runtime", .serialized)
struct OperatorDrainTests {
    @Test("a drained server takes no new flows but keeps its open ones, with no drain_timeout; ready brings it back; each change published once")
    func drainAndReady() throws {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002], drain: .milliseconds(10)))
        let s0 = ServerID(pool: "pool", name: "s0")
        let g0 = runtime.snapshots.generation
        #expect(try runtime.setDrained(s0, true))
        #expect(runtime.snapshots.generation != g0)
        var route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers[0].state == .drain && route.servers[0].keepsFlows)
        #expect(route.selectable == [1])
        // Unlike weight 0, no drain_timeout closes its flows.
        usleep(50_000)
        _ = runtime.expireDrains()
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers[0].keepsFlows)
        let g1 = runtime.snapshots.generation
        #expect(try runtime.setDrained(s0, true) == false)
        #expect(runtime.snapshots.generation == g1, "no change, no publish")
        #expect(try runtime.setDrained(s0, false))
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.selectable == [0, 1] && route.servers[0].state == .up)
    }

    @Test("the drain lasts across reloads until the server leaves the configuration (the report says when one ends)")
    func acrossReloads() throws {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002]))
        let s1 = ServerID(pool: "pool", name: "s1")
        try runtime.setDrained(s1, true)
        let kept = runtime.apply(config(ports: [9001, 9002], weights: [2, 3]))
        #expect(!kept.applied.contains { $0.contains("drain") }, "kept drains are no change: \(kept.applied)")
        var route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers[1].state == .drain && route.selectable == [0])
        #expect(runtime.view().drained == [s1])
        let ended = runtime.apply(config(ports: [9001]))
        #expect(ended.applied.contains("server pool/s1 left the configuration: its operator drain ends"), "\(ended.applied)")
        #expect(runtime.view().drained.isEmpty)
        // Added back later: not drained.
        runtime.apply(config(ports: [9001, 9002]))
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers.first { $0.id == s1 }?.state == .up)
    }

    @Test("a server restarted while drained (its checks failed, then passed) starts its slow_start ramp when the drain ends, not while drained")
    func slowStartAfterMaintenance() throws {
        var c = config(ports: [9001, 9002])
        c.pools[0].slowStart = .seconds(60)
        let runtime = BalancerRuntime(config: c)
        let s0 = ServerID(pool: "pool", name: "s0")
        try runtime.setDrained(s0, true)
        runtime.setHealth(s0, up: false)
        runtime.setHealth(s0, up: true)
        try runtime.setDrained(s0, false)
        var route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers[0].state == .up && route.servers[0].slowStartPercent < 100, "ramping from the drain's end")
        // Drained and ready again without a failed check: no ramp (it stayed warm).
        let s1 = ServerID(pool: "pool", name: "s1")
        try runtime.setDrained(s1, true)
        try runtime.setDrained(s1, false)
        route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.servers[1].state == .up)
        #expect(route.servers[1].slowStartPercent == 100, "no ramp for a server drained and readied without a failed check")
    }

    @Test("an unknown pool or server is refused, naming what there is")
    func unknown() {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002]))
        #expect(throws: ServerCommandError.unknownPool("nope", known: ["pool"])) { try runtime.setDrained(ServerID(pool: "nope", name: "s0"), true) }
        #expect(throws: ServerCommandError.unknownServer(ServerID(pool: "pool", name: "s9"), known: ["s0", "s1"])) {
            try runtime.setDrained(ServerID(pool: "pool", name: "s9"), true)
        }
        #expect(ServerCommandError.unknownServer(ServerID(pool: "pool", name: "s9"), known: ["s0", "s1"]).description
                == "no server 's9' in pool 'pool' (servers: s0, s1)")
    }

    @Test("POST /servers/POOL/NAME/drain and /ready: refused (403) unless [stats] admin, and from web pages; then applied (names percent-decoded), shown in /stats, /metrics and the answer; unknown ones 404, unknown commands 400, GET 405")
    func overHTTP() async throws {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002]))
        let senders = Mutex<[String]>([])
        func serve(admin: Bool, _ body: @escaping @Sendable (Int) throws -> Void) async throws {
            let port = Atomic<Int>(0)
            var commands: StatsServer.ServerCommands?
            if admin {
                commands = { (id: ServerID, command: ServerCommand, sender: String) throws(ServerCommandError) -> ServerCommandResult in
                    senders.withLock { $0.append(sender) }
                    return ServerCommandResult(changed: try runtime.setDrained(id, command == .drain))
                }
            }
            let server = StatsServer(address: Endpoint(address: .v4(0x7F00_0001), port: 0), logger: Logger(label: "test"),
                                     onListening: { port.store($0, ordering: .relaxed) }, commands: commands) {
                StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test")
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await server.run() }
                for _ in 0..<200 where port.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(10)) }
                try body(port.load(ordering: .relaxed))
                group.cancelAll()
            }
        }
        try await serve(admin: false) { p in
            let refused = try httpGet(port: p, path: "/servers/pool/s0/drain", method: "POST")
            #expect(refused.status == 403 && refused.body.contains("set admin = true in [stats]"), "\(refused)")
        }
        #expect(runtime.view().drained.isEmpty)
        try await serve(admin: true) { p in
            for header in ["Origin: http://example.com", "Sec-Fetch-Site: cross-site"] {
                let forged = try httpGet(port: p, path: "/servers/pool/s0/drain", method: "POST", headers: [header])
                #expect(forged.status == 403 && forged.body.contains("commands are not taken from web pages"), "\(header): \(forged)")
            }
            #expect(runtime.view().drained.isEmpty, "nothing a web page sent was applied")
            let drained = try httpGet(port: p, path: "/servers/p%6Fol/%73%30/drain", method: "POST")
            #expect(drained.status == 200 && drained.body.contains("\"server\": \"pool/s0\"") && drained.body.contains("\"changed\": true"),
                    "\(drained)")
            let stats = try httpGet(port: p, path: "/stats")
            #expect(stats.body.contains("\"operator_drain\": true") && stats.body.contains("\"state\": \"drain\""), "\(stats.body)")
            let metrics = try httpGet(port: p, path: "/metrics")
            #expect(metrics.body.contains("convey_server_operator_drain{pool=\"pool\",server=\"s0\",addr=\"127.0.0.1:9001\"} 1"), "\(metrics.body)")
            let again = try httpGet(port: p, path: "/servers/pool/s0/drain", method: "POST")
            #expect(again.status == 200 && again.body.contains("\"changed\": false"))
            let unknown = try httpGet(port: p, path: "/servers/pool/s9/drain", method: "POST")
            #expect(unknown.status == 404 && unknown.body.contains("no server 's9' in pool 'pool' (servers: s0, s1)"), "\(unknown)")
            let bad = try httpGet(port: p, path: "/servers/pool/s0/disable", method: "POST")
            #expect(bad.status == 400 && bad.body.contains("no command 'disable': use one of drain, ready"), "\(bad)")
            let get = try httpGet(port: p, path: "/servers/pool/s0/drain")
            #expect(get.status == 405 && get.headers.lowercased().contains("allow: post"), "\(get)")
            let ready = try httpGet(port: p, path: "/servers/pool/s0/ready", method: "POST")
            #expect(ready.status == 200 && ready.body.contains("\"operator_drain\": false"), "\(ready)")
        }
        #expect(runtime.view().drained.isEmpty)
        let route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        #expect(route.selectable == [0, 1])
        // Each command applied names its sender (the client's address and port), for the log.
        let sent = senders.withLock { $0 }
        #expect(sent.count == 4 && sent.allSatisfy { $0.hasPrefix("127.0.0.1:") && UInt16($0.dropFirst(10)) != nil }, "\(sent)")
    }
}
