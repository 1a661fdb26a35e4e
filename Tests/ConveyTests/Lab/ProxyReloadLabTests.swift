import Foundation
import Glibc
import LabSupport
import Testing

/// Proxy mode as an operator reloads it: `convey --config FILE` (no privileges needed, run in
/// the lab's balancer namespace so its listeners stay off this machine's own network), the
/// file edited under it.
extension EndToEndLabTests {
    static func proxyConfig(frontends: [(name: String, listen: String)]) -> String {
        var text = ""
        for f in frontends {
            text += """
            [frontends.\(f.name)]
            listen_addr = "\(f.listen)"
            backend = "pool"

            """
        }
        return text + """
        [backends.pool]
        drain_timeout = 5
          [backends.pool.servers.b1]
          addr = "10.77.0.21:80"

        [stats]
        port = 7000

        """
    }

    @Test("a frontend added to the file is served at once; one whose address cannot be bound rejects the file, naming its line, and the running config stays")
    func frontendAddedByEditingTheFile() throws {
        guard try labAvailable("frontendAddedByEditingTheFile") else { return }
        try ProxyLab.with(config: Self.proxyConfig(frontends: [("web", "10.77.0.2:8000")])) { lab, convey, path in
            func who(_ port: UInt16) -> String? {
                try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: port, timeout: 2).name }
            }
            func frontends() -> [String] {
                let text = try? lab.check("lb", ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:7000/stats"])
                let stats = text.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                return ((stats?["frontends"] as? [String: Any])?.keys).map { $0.sorted() } ?? []
            }
            #expect(waitUntil(seconds: 10) { who(8000) == "b1" }, "convey serves the first frontend: \(convey.output)")
            #expect(who(8001) == nil)

            try Self.proxyConfig(frontends: [("web", "10.77.0.2:8000"), ("api", "10.77.0.2:8001")])
                .write(toFile: path, atomically: true, encoding: .utf8)
            #expect(waitUntil(seconds: 5) { who(8001) == "b1" }, "the added frontend answers: \(convey.output)")
            #expect((0..<10).allSatisfy { _ in who(8001) == "b1" }, "in every event loop")
            #expect(frontends() == ["api", "web"])

            // 10.77.0.99 is no address of the balancer: the bind fails, the file is rejected.
            try Self.proxyConfig(frontends: [("web", "10.77.0.2:8000"), ("api", "10.77.0.2:8001"), ("bad", "10.77.0.99:8002")])
                .write(toFile: path, atomically: true, encoding: .utf8)
            #expect(waitUntil(seconds: 5) { convey.output.contains("config rejected") }, "\(convey.output)")
            #expect(convey.output.contains("convey.toml:8: frontends.bad.listen_addr: frontend 'bad': cannot listen on 10.77.0.99:8002"),
                    "\(convey.output)")
            #expect(frontends() == ["api", "web"], "the running configuration stays")
            #expect(who(8000) == "b1" && who(8001) == "b1")
            #expect(convey.stop(SIGTERM) == 0)
        }
    }
}
