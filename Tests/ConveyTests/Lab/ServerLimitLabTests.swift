import Dispatch
import Foundation
import Glibc
import LabSupport
import Testing

/// A server's `max_connections` in an AF_XDP data plane.
extension EndToEndLabTests {
    @Test("passthrough, max_connections = 2 on both servers: four clients held open fill them, a fifth client's SYNs are dropped and counted (servers_full), and its retry gets in once a connection closes")
    func serverLimitsInPassthrough() throws {
        guard try labAvailable("serverLimitsInPassthrough") else { return }
        let config = labConfig(backends: 2, balance: "wrr")
            .replacingOccurrences(of: "weight = 1\n", with: "weight = 1\nmax_connections = 2\n")
        #expect(config.components(separatedBy: "max_connections = 2").count == 3, "\(config)")
        try ConveyLab.with(mode: "passthrough", backends: 2, config: config) { lab in
            #expect(waitUntil(seconds: 10) { (try? lab.fromClient { try LabClient.who(timeout: 1) }) != nil })
            // Let the WHO connections above close (the FINs of both sides free their places).
            #expect(waitUntil(seconds: 5) {
                let pool = (try? lab.stats()["backends"] as? [String: Any])?["web_pool"] as? [String: Any]
                return pool?["current_connections"] as? Int == 0
            })
            let held = try (0..<4).map { i in try lab.fromClient { try LabClient.holding("hold\(i)") } }
            let text = try lab.lab.check("lb", ["curl", "-fsS", "--max-time", "5", "http://127.0.0.1:7000/flows?client=10.77.0.10"])
            let flows = (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["flows"] as? [[String: Any]] ?? []
            let ports = Set(held.map { "10.77.0.10:\($0.localPort)" })
            let servers = flows.filter { ports.contains($0["client"] as? String ?? "") }.compactMap { $0["server"] as? String }
            #expect(servers.sorted() == ["web_pool/b1", "web_pool/b1", "web_pool/b2", "web_pool/b2"], "\(text)")

            // Both servers are full: the SYN and its retransmission are dropped.
            #expect(throws: (any Error).self, "a fifth connection is not let in") {
                try lab.fromClient { try LabClient(to: "10.77.0.100", port: 80, timeout: 1.5) }
            }
            #expect(waitUntil(seconds: 5) { (lab.frontendFigure("web", "servers_full") ?? 0) >= 2 },
                    "the frontend counts the dropped SYNs")
            #expect(try lab.drops("servers_full") >= 2)
            #expect(try lab.drops("no_backend") == 0)
            let metrics = try lab.lab.check("lb", ["curl", "-fsS", "--max-time", "5", "http://127.0.0.1:7000/metrics"])
            #expect(metrics.contains("convey_frontend_servers_full_total{frontend=\"web\"}"), "\(metrics.prefix(400))")

            // One held connection closes half a second from now: a waiting client's next SYN
            // (its TCP retries at 1 s, then 3 s) takes the freed place.
            let closing = held[0]
            DispatchQueue.global().asyncAfter(deadline: .now() + 0.5) {
                closing.shutdownWrite()
                _ = try? closing.readToEnd()
            }
            let waited = try lab.fromClient { () -> [UInt8] in
                let c = try LabClient(to: "10.77.0.100", port: 80, timeout: 8)
                try c.send("ECHO\nlet in")
                c.shutdownWrite()
                return try c.readToEnd()
            }
            #expect(String(decoding: waited, as: UTF8.self) == "let in")
            for c in held.dropFirst() {
                try c.send("\nstill here")
                c.shutdownWrite()
                #expect(String(decoding: try c.readToEnd(), as: UTF8.self).hasSuffix("\nstill here"), "the held connections go on")
            }
            #expect(lab.stopConvey() == 0)
        }
    }

    @Test("DSR, a frontend's max_connections = 1: one client held open fills it, the next one's SYNs are dropped and counted (over_limit), and once the first closes a new client is served")
    func frontendLimitInDSR() throws {
        guard try labAvailable("frontendLimitInDSR") else { return }
        let config = labConfig(backends: 2, balance: "wrr")
            .replacingOccurrences(of: "balance = \"wrr\"\n", with: "balance = \"wrr\"\nmax_connections = 1\n")
            .replacingOccurrences(of: "closing_timeout = 2", with: "closing_timeout = 0.5")
        #expect(config.contains("max_connections = 1"), "\(config)")
        try ConveyLab.with(mode: "dsr", backends: 2, config: config) { lab in
            // The health checks bring both up; WHO's flows close (closing_timeout, then the
            // sweep) before the held one opens.
            #expect(waitUntil(seconds: 10) { (try? lab.fromClient { try LabClient.who(timeout: 1) }) != nil })
            #expect(waitUntil(seconds: 10) { lab.frontendFigure("web", "current_connections") == 0 },
                    "the frontend's flows end: \(String(describing: try? lab.stats()["frontends"]))")
            var held: LabClient?
            var lastError: (any Error)?
            #expect(waitUntil(seconds: 15) {
                do { held = try lab.fromClient { try LabClient.holding("hold", timeout: 5) } } catch { lastError = error }
                return held != nil
            }, "the first client gets in; its last error: \(String(describing: lastError)); /stats: \(String(describing: try? lab.stats())); convey's output:\n\(lab.convey?.output ?? "")")
            #expect(throws: (any Error).self, "a second connection is not let in") {
                try lab.fromClient { try LabClient(to: "10.77.0.100", port: 80, timeout: 1.5) }
            }
            #expect(waitUntil(seconds: 5) { (lab.frontendFigure("web", "over_limit") ?? 0) >= 2 },
                    "the frontend counts the dropped SYNs")
            #expect(try lab.drops("over_limit") >= 2)
            held?.shutdownWrite()
            _ = try held?.readToEnd()
            held = nil
            // The flow ends closing_timeout after the client's FIN; a client retrying gets in.
            let answer = try lab.fromClient { () -> [UInt8] in
                let c = try LabClient(to: "10.77.0.100", port: 80, timeout: 8)
                try c.send("ECHO\nnext")
                c.shutdownWrite()
                return try c.readToEnd()
            }
            #expect(String(decoding: answer, as: UTF8.self) == "next")
            #expect(lab.stopConvey() == 0)
        }
    }
}
