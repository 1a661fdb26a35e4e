import Foundation
import Glibc
import LabSupport
import Testing

extension EndToEndLabTests {
    @Test("DSR, on_down: a server whose checks fail (its status port, health_check_port, stops) while its service runs keeps its open connection by default; a reload to on_down = close has its next segment answered with a reset, while the other server's connection goes on")
    func serverDownClosesFlows() throws {
        guard try labAvailable("serverDownClosesFlows") else { return }
        let keep = labConfig(backends: 2, extraPool: "health_check_port = 8080")
        try ConveyLab.with(mode: "dsr", backends: 2, config: keep) { lab in
            // Each backend's status port: another lab/backend.py, which any TCP check passes.
            var status: [String: LabDaemon] = [:]
            defer { for daemon in status.values { _ = daemon.stop(SIGKILL) } }
            for host in ["b1", "b2"] {
                status[host] = try LabDaemon(lab: lab.lab, host: host, ["python3", ConveyLab.backendScript, host, "8080"], maxSeconds: 120)
            }
            func healthy(_ server: String) -> Bool? {
                let pool = ((try? lab.stats())?["backends"] as? [String: Any])?["web_pool"] as? [String: Any]
                return ((pool?["server_detail"] as? [String: Any])?[server] as? [String: Any])?["healthy"] as? Bool
            }
            #expect(waitUntil(seconds: 10) { healthy("b1") == true && healthy("b2") == true })

            // Held connections until one lands on each server (Maglev places them by 5-tuple).
            var held: [String: LabClient] = [:]
            for _ in 0..<40 where held.count < 2 {
                let client = try lab.fromClient { () -> LabClient in
                    let c = try LabClient(to: "10.77.0.100", port: 80, timeout: 3)
                    try c.send("ECHO\n")
                    return c
                }
                let text = try lab.lab.check("lb", ["curl", "-fsS", "--max-time", "5", "http://127.0.0.1:7000/flows?client=10.77.0.10"])
                let flows = (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["flows"] as? [[String: Any]]
                let flow = flows?.first { $0["client"] as? String == "10.77.0.10:\(client.localPort)" }
                guard let server = (flow?["server"] as? String)?.split(separator: "/").last.map(String.init),
                      held[server] == nil else { continue }  // closed as it goes
                held[server] = client
            }
            let (c1, c2) = (try #require(held["b1"]), try #require(held["b2"]))
            func roundTrip(_ client: LabClient, _ seed: UInt64) -> Bool { client.echoes(randomBytes(8 << 10, seed: seed)) }
            #expect(roundTrip(c1, 1) && roundTrip(c2, 2))

            // b1's status port stops: b1 is down, its service still answers.
            _ = status["b1"]?.stop(SIGKILL)
            status["b1"] = nil
            #expect(waitUntil(seconds: 10) { healthy("b1") == false })
            usleep(300_000)
            #expect(roundTrip(c1, 3), "on_down = keep (the default): b1's connection goes on")

            try lab.rewriteConfig(keep.replacingOccurrences(of: "health_check_port = 8080", with: "health_check_port = 8080\non_down = \"close\""))
            #expect(waitUntil(seconds: 10) { lab.convey?.output.contains("pool web_pool: on_down keep -> close") == true },
                    "\(lab.convey?.output ?? "")")
            usleep(300_000)  // the workers adopt the new routes within 50 ms
            // Its next segment meets a reset: convey's (resets_sent), or, once the table's sweep
            // has forgotten the flow, b2's, which the hash now picks and which holds no such
            // connection. Either way the client learns at once.
            #expect(!roundTrip(c1, 4), "on_down = close: b1's connection is over")
            #expect(roundTrip(c2, 5), "b2's connection goes on")
            c2.shutdownWrite()
            #expect(lab.stopConvey() == 0)
        }
    }
}
