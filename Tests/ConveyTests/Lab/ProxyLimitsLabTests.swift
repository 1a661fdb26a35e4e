import Foundation
import Glibc
import LabSupport
import Testing

/// Proxy mode at the open-files limit, as a shell or systemd starts it (a low soft limit).
extension EndToEndLabTests {
    /// Frontend `web` on the balancer's 10.77.0.2:8000 in front of b1, checked every 0.3 s and
    /// marked down after `fall` failed checks; stats on port 7000.
    static func proxyLabConfig(fall: Int) -> String {
        """
        [frontends.web]
        listen_addr = "10.77.0.2:8000"
        backend = "pool"
        [backends.pool]
        health_check_interval = 0.3
        health_check_timeout = 0.3
        rise = 1
        fall = \(fall)
        [backends.pool.servers.b1]
        addr = "10.77.0.21:80"
        [stats]
        port = 7000

        """
    }

    @Test("proxy mode runs as an unprivileged user: its health checks pass and clients are served")
    func proxyRunsUnprivileged() throws {
        guard try labAvailable("proxyRunsUnprivileged") else { return }
        let config = Self.proxyLabConfig(fall: 1)
        // nobody, without capabilities (util-linux setpriv), as a systemd User= service runs it.
        let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"]
        try ProxyLab.with(config: config, wrapper: nobody) { lab, convey, _ in
            #expect(waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }) != nil },
                    "convey serves: \(convey.output)")
            let status = try String(contentsOfFile: "/proc/\(convey.pid)/status", encoding: .utf8)
            #expect(status.split(separator: "\n").contains { $0.hasPrefix("Uid:") && $0.contains("65534") }, "runs as nobody")
            // Many checks later (fall = 1: one failed check would take the server down).
            Thread.sleep(forTimeInterval: 2)
            for _ in 0..<5 {
                #expect(try lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }.name == "b1", "\(convey.output)")
            }
            let stats = try lab.check("lb", ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:7000/stats"])
            #expect(stats.contains("\"state\":\"up\"") || stats.contains("\"state\": \"up\""), "\(stats)")
            #expect(!convey.output.contains("Permission denied"), "\(convey.output)")
        }
    }

    @Test("proxy mode raises its open files limit to the hard limit; at that limit, clients wait in the queue and are served once descriptors free up (health checks the host cannot make mark no server down), counted in accept_pauses")
    func proxyAtTheOpenFilesLimit() throws {
        guard try labAvailable("proxyAtTheOpenFilesLimit") else { return }
        let config = Self.proxyLabConfig(fall: 2) + "[proxy]\nworkers = 1\n"
        // Soft limit 40 (raised to the hard 52): after the descriptors convey keeps for itself
        // (stats, health checks, the handover socket, its reserve) a few echo connections fit.
        try ProxyLab.with(config: config, wrapper: ["prlimit", "--nofile=40:52"]) { lab, convey, _ in
            #expect(waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }) != nil },
                    "convey serves: \(convey.output)")
            let limits = try String(contentsOfFile: "/proc/\(convey.pid)/limits", encoding: .utf8)
            #expect(limits.split(separator: "\n").contains { $0.hasPrefix("Max open files") && $0.contains(" 52 ") && !$0.contains(" 40 ") },
                    "the soft limit was raised to the hard one: \(limits)")
            #expect(convey.output.contains("open files limit raised to the hard limit"))

            // Echo connections until one is not answered: it waits in the accept queue.
            func open() throws -> (LabClient, Bool) {
                try lab.inNamespace("client") {
                    let c = try LabClient(to: "10.77.0.2", port: 8000, timeout: 1.5)
                    try c.send("ECHO\nping\n")
                    return (c, (try? c.receive(upTo: 5)) == Array("ping\n".utf8))
                }
            }
            var held: [LabClient] = []
            var waiting: LabClient?
            for _ in 0..<30 {
                let (client, answered) = try open()
                if answered { held.append(client) } else { waiting = client; break }
            }
            let queued = try #require(waiting, "some connection reached the limit (held \(held.count))")
            #expect(held.count >= 3, "a few connections fit under the limit")

            // At the limit for a while: checks the host cannot make (no descriptor for their
            // socket) must not take the server down, or the queued client would be reset.
            Thread.sleep(forTimeInterval: 1.5)
            // Free descriptors: the queued client is accepted by the retry, without any new
            // connection arriving to wake the listener.
            for c in held.prefix(3) {
                c.shutdownWrite()
                _ = try c.readToEnd()
            }
            try queued.send("pong\n")
            queued.shutdownWrite()
            let echoed = String(decoding: try queued.readToEndRetrying(seconds: 5), as: UTF8.self)
            #expect(echoed == "ping\npong\n", "the queued client was served once descriptors freed up: \(echoed)")
            for c in held.dropFirst(3) { c.shutdownWrite() }

            let stats = try lab.check("lb", ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:7000/stats"])
            #expect(stats.contains("\"accept_pauses\": ") && !stats.contains("\"accept_pauses\": 0"), "\(stats)")
            #expect(convey.output.contains("the open files limit is reached"), "\(convey.output)")
            #expect(convey.stop(SIGTERM) == 0)
        }
    }
}

extension LabClient {
    /// Reads until EOF, going on through receive timeouts for up to `seconds`.
    func readToEndRetrying(seconds: Double) throws -> [UInt8] {
        let end = Date().addingTimeInterval(seconds)
        var out: [UInt8] = []
        while Date() < end {
            guard let chunk = try? receive(upTo: 1 << 16) else { continue }
            if chunk.isEmpty { return out }
            out += chunk
        }
        return out
    }
}
