import Foundation
import Glibc
import LabSupport
import Testing

extension EndToEndLabTests {
    @Test("DSR: a backup server takes no connection while another server is up, takes them all when none is (logged, on_backup in /stats), and keeps its open one when a server comes back; /flows names it as that connection's holder")
    func backupServerTakesOver() throws {
        guard try labAvailable("backupServerTakesOver") else { return }
        try ConveyLab.with(mode: "dsr", config: labConfig(backups: [3])) { lab in
            func onBackup() -> Bool? {
                let frontends = (try? lab.stats())?["frontends"] as? [String: Any]
                return (frontends?["web"] as? [String: Any])?["on_backup"] as? Bool
            }
            #expect(onBackup() == false)
            let before = try lab.fromClient { try (0..<12).map { _ in try LabClient.who().name } }
            #expect(before.count == 12 && !before.contains("b3"), "the backup stands by: \(before)")

            lab.killBackend("b1")
            lab.killBackend("b2")
            #expect(waitUntil(seconds: 8) { onBackup() == true }, "b1 and b2 down: on backup\n\(lab.convey?.output ?? "")")
            usleep(200_000)  // the data plane adopts new routes within 50 ms
            let during = try lab.fromClient { try (0..<8).map { _ in try LabClient.who().name } }
            #expect(during == Array(repeating: "b3", count: 8), "\(during)")
            #expect(lab.convey?.output.contains("frontend 'web': no non-backup server of pool 'web_pool' can take new connections") == true)

            // A connection the backup holds, open across the failback.
            let stream = try lab.fromClient { () -> LabClient in
                let c = try LabClient(to: "10.77.0.100", port: 80, timeout: 3)
                try c.send("ECHO\n")
                return c
            }
            func roundTrip(_ seed: UInt64) -> Bool { stream.echoes(randomBytes(32 << 10, seed: seed)) }
            #expect(roundTrip(1))
            // /flows names the backup as the holder of that connection.
            let port = stream.localPort
            let text = try lab.lab.check("lb", ["curl", "-fsS", "--max-time", "5", "http://127.0.0.1:7000/flows?client=10.77.0.10&frontend=web"])
            let listed = (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["flows"] as? [[String: Any]] ?? []
            let held = listed.first { $0["client"] as? String == "10.77.0.10:\(port)" }
            #expect(held?["server"] as? String == "web_pool/b3" && held?["state"] as? String == "established", "\(text)")
            #expect(listed.allSatisfy { ($0["client"] as? String)?.hasPrefix("10.77.0.10:") == true })

            try lab.startBackend("b1")
            #expect(waitUntil(seconds: 8) { onBackup() == false }, "b1 back: off the backup")
            usleep(200_000)
            let after = try lab.fromClient { try (0..<8).map { _ in try LabClient.who().name } }
            #expect(after == Array(repeating: "b1", count: 8), "\(after)")
            #expect(roundTrip(2), "the backup keeps the connection it holds")
            #expect(lab.convey?.output.contains("frontend 'web': new connections go to pool 'web_pool''s non-backup servers again") == true)
            stream.shutdownWrite()
            #expect(lab.stopConvey() == 0)
        }
    }
}
