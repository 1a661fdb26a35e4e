import Foundation
import Glibc
import LabSupport
import Testing

/// `accept_proxy_protocol` behind a real balancer: HAProxy (`send-proxy-v2`) in front of convey
/// in proxy mode, real kernel TCP from the client's namespace to the backend's.
extension EndToEndLabTests {
    static let haproxy = "/usr/sbin/haproxy"

    @Test("proxy mode behind HAProxy's send-proxy-v2 (accept_proxy_protocol): the backend, told by convey's own v1 header, sees the real client, not HAProxy; a client reaching convey directly, without a header, is reset and counted")
    func behindHAProxy() throws {
        guard try labAvailable("behindHAProxy") else { return }
        guard FileManager.default.isExecutableFile(atPath: Self.haproxy) else {
            let text = "behindHAProxy needs HAProxy (apt-get install haproxy) as the balancer in front"
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("\(text)") } else { print("SKIPPED \(text)") }
            return
        }
        let config = Self.proxyLabConfig(fall: 3)
            .replacingOccurrences(of: "backend = \"pool\"\n", with: "backend = \"pool\"\naccept_proxy_protocol = true\nproxy_protocol = \"v1\"\n")
        try ProxyLab.with(config: config) { lab, convey, path in
            let haproxyConfig = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("haproxy.cfg").path
            try """
            defaults
              mode tcp
              timeout connect 2s
              timeout client 10s
              timeout server 10s
            frontend in
              bind 10.77.0.2:8100
              default_backend convey
            backend convey
              server convey 10.77.0.2:8000 send-proxy-v2

            """.write(toFile: haproxyConfig, atomically: true, encoding: .utf8)
            let haproxy = try LabDaemon(lab: lab, host: "lb", [Self.haproxy, "-db", "-f", haproxyConfig])
            defer { haproxy.stop(SIGKILL) }
            var answer: (name: String, peer: String)?
            #expect(waitUntil(seconds: 10) {
                answer = try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8100) }
                return answer != nil
            }, "through HAProxy and convey: \(convey.output)\nHAProxy: \(haproxy.output)")
            #expect(answer?.name == "b1")
            #expect(answer?.peer == "10.77.0.10", "the backend saw the client itself, not HAProxy (10.77.0.2): \(String(describing: answer))")

            // Straight to convey, no header: reset, counted, logged.
            let direct = try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }
            #expect(direct == nil, "a client without a header is not served")
            var stats: [String: Any] = [:]
            #expect(waitUntil(seconds: 5) {
                let text = try? lab.check("lb", ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:7000/stats"])
                stats = text.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] } ?? [:]
                return ((stats["frontends"] as? [String: Any])?["web"] as? [String: Any])?["bad_proxy_header"] as? Int == 1
            }, "\(stats)")
            #expect(convey.output.contains("sent no PROXY protocol header"), "\(convey.output)")
        }
    }
}
