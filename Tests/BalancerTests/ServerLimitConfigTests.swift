@testable import Balancer
import Testing

@Suite("A server's max_connections and its pool's queue_timeout")
struct ServerLimitConfigTests {
    static let head = """
        [frontends.web]
        listen_addr = "127.0.0.1:80"
        backend = "p"

        """

    @Test("read per server, with queue_timeout defaulting to the pool's connect_timeout")
    func readsKeys() throws {
        let c = try load(Self.head + """
            [backends.p]
            connect_timeout = 1.5
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            max_connections = 200
            [backends.p.servers.b]
            addr = "127.0.0.1:9001"
            """)
        #expect(c.pools[0].servers.map(\.maxConnections) == [200, 0])
        #expect(c.pools[0].queueTimeout == .milliseconds(1500))
        let set = try load(Self.head + """
            [backends.p]
            queue_timeout = 20
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            max_connections = 1
            """)
        #expect(set.pools[0].queueTimeout == .seconds(20))
        #expect(set.pools[0].maxQueue == 0, "no limit unless set")
        let limited = try load(Self.head + """
            [backends.p]
            max_queue = 50
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            max_connections = 1
            """)
        #expect(limited.pools[0].maxQueue == 50)
    }

    @Test("bad values name their key and line")
    func badValues() {
        let cases: [(String, String)] = [
            ("[backends.p.servers.a]\naddr = \"127.0.0.1:9000\"\nmax_connections = -1", "backends.p.servers.a.max_connections"),
            ("[backends.p.servers.a]\naddr = \"127.0.0.1:9000\"\nmax_connections = \"ten\"", "backends.p.servers.a.max_connections"),
            ("[backends.p]\nqueue_timeout = 0\n[backends.p.servers.a]\naddr = \"127.0.0.1:9000\"\nmax_connections = 1", "backends.p.queue_timeout"),
            ("[backends.p]\nmax_queue = -1\n[backends.p.servers.a]\naddr = \"127.0.0.1:9000\"\nmax_connections = 1", "backends.p.max_queue"),
            ("[backends.p]\nmax_queue = 2.5\n[backends.p.servers.a]\naddr = \"127.0.0.1:9000\"\nmax_connections = 1", "backends.p.max_queue"),
        ]
        for (text, key) in cases {
            let p = problems(Self.head + text)
            #expect(p.map(\.key) == [key], "\(text): \(p)")
        }
    }

    @Test("queue_timeout in a pool where no server has a limit is warned about: no client ever waits")
    func uselessQueueTimeout() throws {
        let loaded = try ConfigLoader.load(source: Self.head + """
            [backends.p]
            queue_timeout = 5
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            """, file: "t.toml")
        #expect(loaded.warnings.map(\.key) == ["backends.p.queue_timeout"])
        #expect(loaded.warnings.first?.message.contains("no server of pool 'p' sets max_connections") == true)
        let queue = try ConfigLoader.load(source: Self.head + """
            [backends.p]
            max_queue = 5
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            """, file: "t.toml")
        #expect(queue.warnings.map(\.key) == ["backends.p.max_queue"])
    }

    @Test("a key in the wrong table, or by HAProxy's name, is warned about saying where it goes")
    func misplacedKeys() throws {
        let loaded = try ConfigLoader.load(source: """
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "p"
            maxconn = 100
            queue_timeout = 3
            addr = "127.0.0.1:81"
            [backends.p]
            max_connections = 10
            maxqueue = 3
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            maxconn = 4
            connect_timeout = 1
            max_queue = 2
            """, file: "t.toml")
        #expect(loaded.warnings.map(\.description) == [
            "t.toml:4: frontends.web.maxconn: unknown key here: HAProxy's maxconn is max_connections here",
            "t.toml:5: frontends.web.queue_timeout: unknown key here: queue_timeout is a pool setting: put it under [backends.POOL]",
            "t.toml:6: frontends.web.addr: unknown key here: a frontend's address is listen_addr (addr is a server's)",
            "t.toml:8: backends.p.max_connections: unknown key here: max_connections is set per server: put it under [backends.p.servers.NAME] (or per frontend, under [frontends.NAME])",
            "t.toml:9: backends.p.maxqueue: unknown key here: HAProxy's maxqueue is max_queue here (the clients one frontend may have waiting)",
            "t.toml:12: backends.p.servers.a.maxconn: unknown key here: HAProxy's maxconn is max_connections here",
            "t.toml:13: backends.p.servers.a.connect_timeout: unknown key here: connect_timeout is a pool setting: put it under [backends.p], for all its servers",
            "t.toml:14: backends.p.servers.a.max_queue: unknown key here: max_queue is a pool setting: put it under [backends.p], for all its servers",
        ], "\(loaded.warnings.map(\.description))")
    }

    @Test("a reload reports a changed limit and queue_timeout, and the route carries the limit")
    func reload() throws {
        let before = try load(Self.head + "[backends.p.servers.a]\naddr = \"127.0.0.1:9000\"\nmax_connections = 10")
        let after = try load(Self.head + "[backends.p]\nqueue_timeout = 9\nmax_queue = 4\n[backends.p.servers.a]\naddr = \"127.0.0.1:9000\"\nmax_connections = 5")
        let runtime = BalancerRuntime(config: before)
        #expect(runtime.view().snapshot.frontends[0].servers[0].maxConnections == 10)
        let report = runtime.apply(after)
        #expect(report.applied.contains { $0.hasPrefix("server p/a: max_connections 10 -> 5 (connections it holds over the new limit go on") },
                "\(report.applied)")
        #expect(report.applied.contains { $0.hasPrefix("pool p: queue_timeout ") && $0.hasSuffix("(clients waiting now too)") }, "\(report.applied)")
        #expect(report.applied.contains { $0.hasPrefix("pool p: max_queue 0 (no limit) -> 4 ") }, "\(report.applied)")
        #expect(runtime.view().snapshot.frontends[0].servers[0].maxConnections == 5)
    }

    @Test("/stats shows each server's limit and each frontend's waiting clients; /metrics too")
    func statistics() throws {
        let runtime = BalancerRuntime(config: try load(Self.head + "[backends.p.servers.a]\naddr = \"127.0.0.1:9000\"\nmax_connections = 7"))
        let route = runtime.view().snapshot.frontends[0]
        route.counters.queued.store(3, ordering: .relaxed)
        route.counters.queueTimeouts.store(2, ordering: .relaxed)
        route.counters.queueFull.store(4, ordering: .relaxed)
        let document = StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test")
        let json = document.json.serialized(pretty: false)
        #expect(json.contains("\"max_connections\":7"), "\(json)")
        #expect(json.contains("\"queued\":3,\"queue_timeouts\":2,\"queue_full\":4"), "\(json)")
        let metrics = PrometheusExporter.samples(document)
        #expect(metrics.first { $0.name == "convey_server_max_connections" }?.value == 7)
        #expect(metrics.first { $0.name == "convey_frontend_queued" }?.value == 3)
        #expect(metrics.first { $0.name == "convey_frontend_queue_timeouts_total" }?.value == 2)
        #expect(metrics.first { $0.name == "convey_frontend_queue_full_total" }?.value == 4)
    }
}
