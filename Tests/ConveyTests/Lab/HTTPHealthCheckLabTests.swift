import Foundation
import Glibc
import LabSupport
import Testing

extension EndToEndLabTests {
    @Test("DSR, health_check_http on health_check_port: a backend whose status port answers 404 for the path stays out of selection though its service answers; once the path is there (200) it comes back; /stats shows the check port and why")
    func httpChecksOnAStatusPort() throws {
        guard try labAvailable("httpChecksOnAStatusPort") else { return }
        let config = labConfig(extraPool: "health_check_http = \"/healthz\"\nhealth_check_port = 8080")
        try ConveyLab.with(mode: "dsr", config: config) { lab in
            // Each backend's status port: Python's http.server over a directory of its own;
            // b1's and b2's hold the path, b3's does not (404).
            var statusServers: [LabDaemon] = []
            var directories: [URL] = []
            defer {
                for server in statusServers { _ = server.stop(SIGKILL) }
                for directory in directories { try? FileManager.default.removeItem(at: directory) }
            }
            for i in 1...3 {
                let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(lab.lab.prefix)-status-b\(i)")
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                directories.append(directory)
                if i < 3 { try Data("ok\n".utf8).write(to: directory.appendingPathComponent("healthz")) }
                statusServers.append(try LabDaemon(lab: lab.lab, host: "b\(i)",
                                                   ["python3", "-m", "http.server", "--directory", directory.path, "8080"],
                                                   maxSeconds: 120))
            }
            func detail(_ server: String) -> [String: Any]? {
                let pool = ((try? lab.stats())?["backends"] as? [String: Any])?["web_pool"] as? [String: Any]
                return (pool?["server_detail"] as? [String: Any])?[server] as? [String: Any]
            }
            #expect(waitUntil(seconds: 10) {
                detail("b1")?["healthy"] as? Bool == true && detail("b2")?["healthy"] as? Bool == true
                    && (detail("b3")?["last_check"] as? String)?.hasPrefix("HTTP status 404, not 200-399") == true
                    && detail("b3")?["healthy"] as? Bool == false
            }, "b1, b2 up; b3 down by its 404: \(String(describing: detail("b3")))\n\(lab.convey?.output ?? "")")
            #expect(detail("b3")?["check_port"] as? Int == 8080)
            #expect(lab.convey?.output.contains("server web_pool/b3 at 10.77.0.23:80 (checks on port 8080) is down") == true)
            usleep(200_000)  // the data plane adopts new routes within 50 ms
            let before = try lab.fromClient { try (0..<16).map { _ in try LabClient.who().name } }
            #expect(before.count == 16 && !before.contains("b3"), "b3's service answers, but its check fails: \(before)")

            try Data("ok\n".utf8).write(to: directories[2].appendingPathComponent("healthz"))
            #expect(waitUntil(seconds: 10) { detail("b3")?["healthy"] as? Bool == true }, "\(String(describing: detail("b3")))")
            #expect(lab.convey?.output.contains("server web_pool/b3 at 10.77.0.23:80 (checks on port 8080) is up again") == true)
            usleep(200_000)
            let after = try lab.fromClient { try (0..<40).map { _ in try LabClient.who().name } }
            #expect(after.contains("b3"), "b3 takes its Maglev share again: \(after)")
            #expect(lab.stopConvey() == 0)
        }
    }
}
