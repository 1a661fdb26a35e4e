import Balancer
import Synchronization
import Testing

@Suite("Backup servers take new flows only while no other server of their pool can")
struct BackupServerTests {
    /// s0 and s1 are the pool's servers; s2 and s3 its backups (weights 1, 1, 2, 1).
    func withBackups(balance: BalanceAlgorithm = .wrr) -> ConveyConfig {
        var c = config(ports: [9001, 9002, 9003, 9004], weights: [1, 1, 2, 1], balance: balance)
        c.pools[0].servers[2].backup = true
        c.pools[0].servers[3].backup = true
        return c
    }

    @Test("`backup = true` is read, printed back by --check, and a wrong type names the fix")
    func configKey() throws {
        let c = try load("""
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "p"
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            [backends.p.servers.b]
            addr = "127.0.0.1:9001"
            backup = true
            """)
        #expect(c.pools[0].servers.map(\.backup) == [false, true])

        let quoted = problems("""
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "p"
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            backup = "true"
            """)
        #expect(quoted.map(\.key) == ["backends.p.servers.a.backup"] && quoted.first?.line == 6, "\(quoted)")
        #expect(quoted.first?.message == "must be true or false, found string (write it without quotes: true)")

        let onlyBackups = try ConfigLoader.load(source: """
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "p"
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            backup = true
            """, file: "test.toml")
        #expect(onlyBackups.warnings.map(\.key) == ["backends.p.servers"], "\(onlyBackups.warnings)")
        #expect(onlyBackups.warnings.first?.message.contains("every server of pool 'p' has backup = true") == true)
    }

    @Test("backups stand by while a server is up; take over, by weight, when all are down; stand by again when one is back")
    func failover() throws {
        let runtime = BalancerRuntime(config: withBackups())
        var r = try webRoute(runtime)
        #expect(r.servers.map(\.state) == [.up, .up, .standby, .standby])
        #expect(r.selectable == [0, 1] && r.standbyBackups == [2, 3] && !r.onBackup)
        #expect(r.wrrCycle.sorted() == [0, 1])

        runtime.setHealth(ServerID(pool: "pool", name: "s0"), up: false)
        r = try webRoute(runtime)
        #expect(r.selectable == [1] && !r.onBackup, "one server left is enough")

        runtime.setHealth(ServerID(pool: "pool", name: "s1"), up: false)
        r = try webRoute(runtime)
        #expect(r.servers.map(\.state) == [.down, .down, .up, .up])
        #expect(r.selectable == [2, 3] && r.standbyBackups == [] && r.onBackup)
        #expect(r.wrrCycle.sorted() == [2, 2, 3], "backups share by weight (2:1)")

        runtime.setHealth(ServerID(pool: "pool", name: "s1"), up: true)
        r = try webRoute(runtime)
        #expect(r.selectable == [1] && r.standbyBackups == [2, 3] && !r.onBackup)
        #expect(r.servers[2].state == .standby && r.servers[2].keepsFlows, "a backup keeps the flows it took")
    }

    @Test("weight 0 or removal of every other server puts the backups in charge; a failing backup is skipped")
    func drainsAndFailingBackups() throws {
        let runtime = BalancerRuntime(config: withBackups())
        var c = withBackups()
        c.pools[0].servers[0].weight = 0
        c.pools[0].servers.remove(at: 1)
        runtime.apply(c)
        var r = try webRoute(runtime)
        #expect(r.onBackup)
        #expect(r.selectable.map { r.servers[$0].id.name } == ["s2", "s3"])
        runtime.setHealth(ServerID(pool: "pool", name: "s2"), up: false)
        r = try webRoute(runtime)
        #expect(r.selectable.map { r.servers[$0].id.name } == ["s3"])
        runtime.setHealth(ServerID(pool: "pool", name: "s3"), up: false)
        r = try webRoute(runtime)
        #expect(r.selectable.isEmpty && !r.onBackup, "nothing left: no backend")
    }

    @Test("maglev and source frontends hash over the backups while they are in charge")
    func hashingOverBackups() throws {
        let runtime = BalancerRuntime(config: withBackups(balance: .maglev))
        #expect(try webRoute(runtime).maglev?.backendCount == 2)
        runtime.setHealth(ServerID(pool: "pool", name: "s0"), up: false)
        runtime.setHealth(ServerID(pool: "pool", name: "s1"), up: false)
        let r = try webRoute(runtime)
        let table = try #require(r.maglev)
        #expect(table.backendCount == 2)
        let picked = Set(table.entries.map { r.selectable[Int($0)] })
        #expect(picked == [2, 3])
    }

    @Test("each change of what serves a frontend is reported once, in order, with its own words: onto backups, to none, back to its servers")
    func changesAreReported() throws {
        let seen = Mutex<[String]>([])
        let runtime = BalancerRuntime(config: withBackups()) { change in
            seen.withLock { $0.append("\(change.frontend) \(change.from)->\(change.to)") }
        }
        for (name, up) in [("s0", false), ("s1", false), ("s2", false), ("s3", false), ("s3", true), ("s0", true), ("s1", true)] {
            runtime.setHealth(ServerID(pool: "pool", name: name), up: up)
        }
        #expect(seen.withLock { $0 } == ["web servers->backups", "web backups->none", "web none->backups", "web backups->servers"])
        #expect(ServingChange(frontend: "web", pool: "pool", from: .backups, to: .none).message
                == "frontend 'web': no server of pool 'pool' can take new connections; new clients fail (counted as no_backend)")
        #expect(ServingChange(frontend: "web", pool: "pool", from: .backups, to: .servers).message.contains("non-backup servers again"))

        // A frontend a reload removes (or renames) is not reported as back on its servers.
        runtime.setHealth(ServerID(pool: "pool", name: "s0"), up: false)
        runtime.setHealth(ServerID(pool: "pool", name: "s1"), up: false)
        seen.withLock { $0 = [] }
        var renamed = withBackups()
        renamed.frontends[0].name = "web2"
        renamed.frontends[0].listen.port += 1
        runtime.apply(renamed)
        #expect(seen.withLock { $0 } == ["web2 servers->backups"])
    }

    @Test("a frontend that starts on its backups (its other servers at weight 0) is reported at start; a pool of backups only is never on backup")
    func startAndBackupOnlyPools() throws {
        let seen = Mutex<[String]>([])
        var c = withBackups()
        c.pools[0].servers[0].weight = 0
        c.pools[0].servers[1].weight = 0
        _ = BalancerRuntime(config: c) { change in seen.withLock { $0.append("\(change.frontend) \(change.to)") } }
        #expect(seen.withLock { $0 } == ["web backups"])

        var only = withBackups()
        only.pools[0].servers.removeFirst(2)
        let runtime = BalancerRuntime(config: only)
        let r = try webRoute(runtime)
        #expect(r.selectable == [0, 1] && !r.onBackup && r.serving == .servers)
        #expect(r.servers.map(\.state) == [.up, .up])
    }

    @Test("a refused connect tries the backups standing by once every other server has refused")
    func fallbackReachesBackups() throws {
        let runtime = BalancerRuntime(config: withBackups())
        let r = try webRoute(runtime)
        #expect(Scheduler.fallback(after: 0, attempt: 1, in: r) == 1)
        #expect(Scheduler.fallback(after: 0, attempt: 2, in: r) == 2)
        #expect(Scheduler.fallback(after: 0, attempt: 3, in: r) == 3)
        #expect(Scheduler.fallback(after: 0, attempt: 4, in: r) == nil)
    }

    @Test("a removed backup, and the backups of a pool no frontend uses, keep their kind in /stats")
    func statsOfDrainingAndUnusedBackups() throws {
        let runtime = BalancerRuntime(config: withBackups())
        var c = withBackups()
        c.pools[0].servers.removeLast()
        var unused = c.pools[0]
        unused.name = "spare"
        c.pools.append(unused)
        runtime.apply(c)
        let doc = StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test")
        let rows = Dictionary(uniqueKeysWithValues: doc.pools.flatMap { p in p.servers.map { ("\(p.name)/\($0.name)", $0) } })
        #expect(rows["pool/s3"]?.backup == true && rows["pool/s3"]?.state == .drain)
        #expect(rows["spare/s2"]?.backup == true && rows["spare/s2"]?.state == .standby)
        #expect(rows["spare/s0"]?.state == .up)
    }

    @Test("/stats and /metrics say which servers are backups and which frontends run on them")
    func stats() throws {
        let runtime = BalancerRuntime(config: withBackups())
        runtime.setHealth(ServerID(pool: "pool", name: "s0"), up: false)
        runtime.setHealth(ServerID(pool: "pool", name: "s1"), up: false)
        let doc = StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test")
        let json = doc.json.serialized()
        #expect(json.contains("\"on_backup\":true"), "\(json)")
        #expect(json.contains("\"s2\":{\"addr\":\"127.0.0.1:9003\",\"state\":\"up\",\"healthy\":true,\"weight\":2,\"slow_start_percent\":100,\"backup\":true"), "\(json)")
        let metrics = PrometheusExporter().render(doc)
        #expect(metrics.contains("convey_frontend_on_backup{frontend=\"web\"} 1"), "\(metrics)")
        #expect(metrics.contains("convey_server_backup{pool=\"pool\",server=\"s2\",addr=\"127.0.0.1:9003\"} 1"))

        runtime.setHealth(ServerID(pool: "pool", name: "s1"), up: true)
        let standby = StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test")
        #expect(standby.json.serialized().contains("\"state\":\"standby\""))
        #expect(PrometheusExporter().render(standby).contains("convey_server_up{pool=\"pool\",server=\"s2\",addr=\"127.0.0.1:9003\"} 0"),
                "a standby backup takes no new connections")
    }
}
