import Balancer
import Glibc
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// Serialized: each test reads with blocking sockets on a task of the cooperative pool, which
/// has one thread per core; two at once on a 2-core machine left none for the server's
/// handlers, and the first request waited out its 5 s timeout.
@Suite("The stats HTTP server", .serialized)
struct StatsServerTests {
    @Test("serves /stats, /metrics and the page on loopback, with live values; HEAD answers each without a body")
    func endpoints() async throws {
        let runtime = BalancerRuntime(config: config(ports: [9001]))
        let port = Atomic<Int>(0)
        let server = StatsServer(address: Endpoint(address: .v4(0x7F00_0001), port: 0),
                                 logger: Logger(label: "test"),
                                 onListening: { port.store($0, ordering: .relaxed) }) {
            StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test")
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            for _ in 0..<200 where port.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(10)) }
            let p = port.load(ordering: .relaxed)
            #expect(p != 0)

            let stats = try httpGet(port: p, path: "/stats")
            #expect(stats.status == 200)
            #expect(stats.headers.lowercased().contains("content-type: application/json"))
            #expect(stats.body.contains("\"total_connections\": 0"))
            #expect(stats.body.contains("\"127.0.0.1:9001\": true"))

            runtime.snapshots.load().value.frontends[0].counters.connectionOpened()
            let again = try httpGet(port: p, path: "/stats")
            #expect(again.body.contains("\"total_connections\": 1"))

            let metrics = try httpGet(port: p, path: "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.body.contains("convey_frontend_connections_total{frontend=\"web\"} 1"))

            let page = try httpGet(port: p, path: "/")
            #expect(page.status == 200)
            #expect(page.body.contains("<title>convey</title>"))

            for path in ["/", "/metrics"] {
                let head = try httpGet(port: p, path: path, method: "HEAD")
                let get = try httpGet(port: p, path: path)
                #expect(head.status == 200 && head.body.isEmpty, "HEAD \(path): \(head)")
                #expect(head.headers.lowercased().contains("content-length: \(get.body.utf8.count)"),
                        "HEAD \(path) gives the GET's length: \(head.headers)")
            }
            #expect(try httpGet(port: p, path: "/stats", method: "HEAD").body.isEmpty)
            #expect(try httpGet(port: p, path: "/stats", method: "HEAD").headers.lowercased().contains("content-type: application/json"))
            let unknown = try httpGet(port: p, path: "/nope")
            #expect(unknown.status == 404 && unknown.body.contains("no page '/nope': convey serves /, /flows, /metrics, /stats"),
                    "\(unknown)")
            // A known page asked with a method it does not take: 405, saying which it takes.
            for (method, path, allowed) in [("POST", "/flows", "GET, HEAD"), ("DELETE", "/stats", "GET, HEAD"), ("PUT", "/", "GET, HEAD")] {
                let refused = try httpGet(port: p, path: path, method: method)
                #expect(refused.status == 405 && refused.headers.lowercased().contains("allow: \(allowed.lowercased())")
                        && refused.body.contains("\(method) is not served on \(path): use \(allowed)"), "\(method) \(path): \(refused)")
            }

            // No listing given: /flows says so.
            let flows = try httpGet(port: p, path: "/flows")
            #expect(flows.status == 404 && flows.body.contains("lists no connections"), "\(flows)")
            let bad = try httpGet(port: p, path: "/flows?client=nowhere")
            #expect(bad.status == 400 && bad.body.contains("client: 'nowhere' is not an IPv4 or IPv6 address"), "\(bad)")
            // HEAD /flows: the GET's status and headers, no body.
            let head = try httpGet(port: p, path: "/flows?client=nowhere", method: "HEAD")
            #expect(head.status == 400 && head.body.isEmpty
                    && head.headers.lowercased().contains("content-length: \(bad.body.utf8.count)"), "\(head)")
            group.cancelAll()
        }
    }

    @Test("a connection that sends no request is closed after the idle timeout; one that asks in time is answered")
    func idleConnectionsAreClosed() async throws {
        let runtime = BalancerRuntime(config: config(ports: [9001]))
        let port = Atomic<Int>(0)
        let server = StatsServer(address: Endpoint(address: .v4(0x7F00_0001), port: 0), logger: Logger(label: "test"),
                                 idleTimeout: .milliseconds(300), onListening: { port.store($0, ordering: .relaxed) }) {
            StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test")
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            for _ in 0..<200 where port.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(10)) }
            let p = port.load(ordering: .relaxed)
            try #require(p != 0)
            let idle = try connectLoopback(port: p)
            defer { close(idle) }
            let opened = ContinuousClock.now
            var byte: UInt8 = 0
            let n = recv(idle, &byte, 1, 0)  // blocks until the server closes (5 s receive timeout)
            let waited = ContinuousClock.now - opened
            #expect(n == 0, "closed by the server (end of stream), not timed out: n=\(n) errno=\(errno)")
            #expect(waited >= .milliseconds(250) && waited < .seconds(3), "after the idle timeout: \(waited)")
            #expect(try httpGet(port: p, path: "/stats").status == 200)
            group.cancelAll()
        }
    }
}
