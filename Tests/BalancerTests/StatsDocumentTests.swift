import Balancer
import Testing

@Suite("Stats: the seed's JSON keys, new detail beside them, and Prometheus text")
struct StatsDocumentTests {
    func document() throws -> StatsDocument {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002]))
        let route = try #require(runtime.snapshots.load().value.frontend(named: "web"))
        route.counters.connectionOpened()
        route.counters.addTx(100)
        route.counters.addRx(2000)
        route.servers[0].counters.connectionOpened()
        route.servers[0].counters.addTx(100)
        route.servers[0].counters.addRx(2000)
        runtime.setHealth(ServerID(pool: "pool", name: "s1"), up: false)
        let dp = DataPlaneStats(json: .object([("workers", .int(2))]),
                                metrics: [MetricSample(name: "convey_proxy_loops", help: "Event loops.", kind: .gauge, value: 2)])
        return StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(12), version: "test",
                             dataPlane: dp, lastCheck: [ServerID(pool: "pool", name: "s1"): "connect refused"])
    }

    @Test("/stats keeps the seed's keys with their meaning")
    func seedKeys() throws {
        let json = try document().json
        #expect(json["total_connections"] == .int(1))
        #expect(json["current_connections"] == .int(1))
        #expect(json["total_bytes_tx"] == .int(100))
        #expect(json["total_bytes_rx"] == .int(2000))
        let pool = try #require(json["backends"]?["pool"])
        #expect(pool["total_connections"] == .int(1))
        #expect(pool["bytes_tx"] == .int(100) && pool["bytes_rx"] == .int(2000))
        #expect(pool["servers"]?["127.0.0.1:9001"] == .bool(true))
        #expect(pool["servers"]?["127.0.0.1:9002"] == .bool(false))
        let frontend = try #require(json["frontends"]?["web"])
        #expect(frontend["current_connections"] == .int(1) && frontend["bytes_tx"] == .int(100))
    }

    @Test("/stats servers{addr: bool} is each server's health (as the seed's): a healthy server at weight 0 is true, its drain is server_detail's state")
    func seedServersAreHealth() throws {
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002], weights: [1, 0]))
        let doc = StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test",
                                dataPlane: DataPlaneStats(json: .object([]), metrics: []), lastCheck: [:])
        let pool = try #require(doc.json["backends"]?["pool"])
        #expect(pool["servers"]?["127.0.0.1:9002"] == .bool(true))
        #expect(pool["server_detail"]?["s1"]?["state"] == .string("drain"))
    }

    @Test("/stats lists an address once when a removed server drains at the address a configured one now has")
    func sharedAddressIsListedOnce() throws {
        var two = config(ports: [9001, 9002])
        let runtime = BalancerRuntime(config: two)
        // s1 goes; s2 takes its address in the same reload while s1 drains there.
        two.pools[0].servers.removeLast()
        two.pools[0].servers.append(ServerConfig(name: "s2", address: Endpoint(address: .v4(0x7F00_0001), port: 9002), weight: 1))
        runtime.apply(two)
        // The configured s2 fails its checks; the draining s1, no longer checked, kept "up".
        runtime.setHealth(ServerID(pool: "pool", name: "s2"), up: false)
        let doc = StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test",
                                dataPlane: DataPlaneStats(json: .object([]), metrics: []), lastCheck: [:])
        guard case .object(let servers)? = doc.json["backends"]?["pool"]?["servers"] else {
            Issue.record("no servers object")
            return
        }
        #expect(servers.map(\.0) == ["127.0.0.1:9001", "127.0.0.1:9002"], "\(servers)")
        #expect(doc.json["backends"]?["pool"]?["servers"]?["127.0.0.1:9002"] == .bool(false), "the configured s2's verdict")
    }

    @Test("/stats shows check_port for a server checked on another port than its own, and host for one addr named, only then")
    func checkPort() throws {
        var c = config(ports: [9001, 9002])
        c.pools[0].health.port = 8080
        c.pools[0].servers[1].healthCheckPort = 9002  // s1's own port: nothing to show
        c.pools[0].servers[0].hostName = "web1.internal"
        let doc = StatsDocument(view: BalancerRuntime(config: c).view(), mode: .dsr, uptime: .seconds(1), version: "test",
                                dataPlane: DataPlaneStats(json: .object([]), metrics: []), lastCheck: [:])
        let detail = try #require(doc.json["backends"]?["pool"]?["server_detail"])
        #expect(detail["s0"]?["check_port"] == .int(8080))
        #expect(detail["s1"]?["addr"] == .string("127.0.0.1:9002") && detail["s1"]?["check_port"] == nil)
        #expect(detail["s0"]?["host"] == .string("web1.internal") && detail["s1"]?["host"] == nil, "a server's host name, when addr gave one")
    }

    @Test("/stats adds mode, uptime, per-server state and the data plane's section")
    func newKeys() throws {
        let json = try document().json
        #expect(json["mode"] == .string("proxy"))
        #expect(json["uptime_seconds"] == .double(12))
        let s1 = try #require(json["backends"]?["pool"]?["server_detail"]?["s1"])
        #expect(s1["state"] == .string("down") && s1["healthy"] == .bool(false))
        #expect(s1["last_check"] == .string("connect refused"))
        #expect(json["dataplane"]?["workers"] == .int(2))
        let text = try document().json.serialized(pretty: true)
        #expect(text.hasPrefix("{\n  \"total_connections\": 1,"))
    }

    @Test("/metrics is Prometheus text with convey_ names, types and labels")
    func metrics() throws {
        let text = PrometheusExporter().render(try document())
        #expect(text.contains("# TYPE convey_frontend_connections_total counter"))
        #expect(text.contains("convey_frontend_bytes_rx_total{frontend=\"web\"} 2000"))
        #expect(text.contains("convey_server_up{pool=\"pool\",server=\"s1\",addr=\"127.0.0.1:9002\"} 0"))
        #expect(text.contains("convey_proxy_loops 2"))
        // A second scrape reports current values, not sums of scrapes.
        let again = PrometheusExporter().render(try document())
        #expect(again.contains("convey_frontend_connections_total{frontend=\"web\"} 1"))
    }

    @Test("/metrics drops the series of a server a reload removed")
    func removedServerSeriesGo() {
        let exporter = PrometheusExporter()
        let runtime = BalancerRuntime(config: config(ports: [9001, 9002], drain: .zero))
        func scrape() -> String {
            exporter.render(StatsDocument(view: runtime.view(), mode: .proxy, uptime: .seconds(1), version: "test",
                                          dataPlane: nil, lastCheck: [:]))
        }
        #expect(scrape().contains("addr=\"127.0.0.1:9002\""))
        _ = runtime.apply(config(ports: [9001], drain: .zero))
        _ = runtime.expireDrains()
        let listed = runtime.view().snapshot.frontend(named: "web")?.servers.contains { $0.address.port == 9002 }
        #expect(listed == false, "with drain_timeout 0 the removed server leaves at once")
        let after = scrape()
        #expect(after.contains("addr=\"127.0.0.1:9001\""))
        #expect(!after.contains("addr=\"127.0.0.1:9002\""))
    }

    @Test("JSON strings are escaped")
    func escaping() {
        #expect(JSONValue.string("a\"b\\c\n\u{1}").serialized() == #""a\"b\\c\n\u0001""#)
    }
}
