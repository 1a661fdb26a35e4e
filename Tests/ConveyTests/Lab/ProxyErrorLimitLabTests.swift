import Foundation
import Glibc
import LabSupport
import Testing

extension EndToEndLabTests {
    @Test("proxy mode, error_limit = 3: a server that refuses its clients is down within moments, long before its checks (every 30 s, fall 3) could say so; every client is served; a server marked down by a blip is checked again within a second; /flows lists a held connection with its server, convey's own end and its bytes")
    func errorLimitMarksDown() throws {
        guard try labAvailable("errorLimitMarksDown") else { return }
        let config = """
            [frontends.web]
            listen_addr = "10.77.0.2:8000"
            backend = "pool"
            [backends.pool]
            health_check_interval = 30
            health_check_timeout = 1
            rise = 1
            fall = 3
            error_limit = 3
            [backends.pool.servers.live]
            addr = "10.77.0.21:80"
            [backends.pool.servers.dead]
            addr = "10.77.0.21:81"
            [stats]
            port = 7000

            """
        try ProxyLab.with(config: config) { lab, convey, _ in
            let started = Date()
            // The first clients may come before the backend listens: then "live" is marked
            // down too, and its check a second later brings it back (rise = 1).
            #expect(waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }) != nil },
                    "convey serves: \(convey.output)")
            var served: [String] = []
            for _ in 0..<12 {
                served.append((try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000).name }) ?? "none")
                usleep(100_000)
            }
            #expect(served == Array(repeating: "b1", count: 12), "every client served (a refused connect fails over): \(served)")
            let text = try lab.check("lb", ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:7000/stats"])
            let stats = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            let detail = ((stats?["backends"] as? [String: Any])?["pool"] as? [String: Any])?["server_detail"] as? [String: Any]
            #expect((detail?["dead"] as? [String: Any])?["state"] as? String == "down", "\(text)")
            #expect((detail?["live"] as? [String: Any])?["state"] as? String == "up", "\(text)")
            #expect(Date().timeIntervalSince(started) < 20, "the checks alone would have needed 60 s or more")
            #expect(convey.output.contains("server pool/dead at 10.77.0.21:81 is down: 3 connections of clients in a row failed (error_limit)"),
                    "\(convey.output)")

            // /flows lists a held connection with its server, convey's own end toward it, and its bytes.
            let held = try lab.inNamespace("client") { try LabClient.holding("ping", host: "10.77.0.2", port: 8000, timeout: 3) }
            let listing = try lab.check("lb", ["curl", "-fsS", "--max-time", "5", "http://127.0.0.1:7000/flows?server=pool/live"])
            let rows = (try JSONSerialization.jsonObject(with: Data(listing.utf8)) as? [String: Any])?["flows"] as? [[String: Any]] ?? []
            let row = rows.first { ($0["client"] as? String)?.hasSuffix(":\(held.localPort)") == true }
            #expect(row?["state"] as? String == "established" && row?["backend"] as? String == "10.77.0.21:80"
                    && (row?["local"] as? String)?.hasPrefix("10.77.0.2:") == true, "\(listing)")
            #expect(row?["bytes_tx"] as? Int == 9 && row?["bytes_rx"] as? Int == 4, "\(listing)")
            held.shutdownWrite()
        }
    }
}
