import Foundation
import Glibc
import LabSupport
import Testing

extension EndToEndLabTests {
    @Test("proxy mode, tcp_keepalive = 1: a server that vanishes under an idle connection (its link goes down: no FIN, no RST) is found by the probes within seconds; the client's side is closed and the end logged as the server's timeout; without it the connection stays open")
    func keepaliveFindsAVanishedServer() throws {
        guard try labAvailable("keepaliveFindsAVanishedServer") else { return }
        for keepalive in [true, false] {
            // fall = 1000: the health checks never mark b1 down within the test.
            let config = Self.proxyLabConfig(fall: 1000).replacingOccurrences(
                of: "backend = \"pool\"\n", with: "backend = \"pool\"\nlog_connections = true\n\(keepalive ? "tcp_keepalive = 1\n" : "")")
            try ProxyLab.with(config: config) { lab, convey, _ in
                #expect(waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }) != nil },
                        "convey serves: \(convey.output)")
                let client = try lab.inNamespace("client") { try LabClient.holding("hello", host: "10.77.0.2", port: 8000, timeout: 1) }
                // b1 vanishes: its link goes down, so nothing it could answer reaches convey.
                _ = try lab.check("b1", ["ip", "link", "set", "veth0", "down"])
                // Probes after 1 s of silence, 1 s apart, 3 missed: the server's side ends about
                // 4 s after the last byte. Each receive waits at most 1 s.
                let start = Date()
                var ended = false
                while !ended && Date().timeIntervalSince(start) < (keepalive ? 15 : 8) {
                    do {
                        let bytes = try client.receive(upTo: 4096)
                        if bytes.isEmpty { ended = true }
                    } catch {
                        // A timeout (nothing yet) reads as EAGAIN; a reset ends it.
                        if "\(error)".contains("Connection reset") { ended = true }
                    }
                }
                if keepalive {
                    #expect(ended, "closed within 15 s: \(convey.output)")
                    #expect(waitUntil(seconds: 3) { convey.output.contains("server error: Connection timed out") }, "\(convey.output)")
                } else {
                    #expect(!ended, "no keepalive: the connection stays open (until idle_timeout)")
                }
            }
        }
    }
}
