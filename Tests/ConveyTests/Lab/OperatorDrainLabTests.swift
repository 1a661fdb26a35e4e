import Foundation
import Glibc
import LabSupport
import Testing

/// Draining a server at runtime over the stats server, in a data plane that is not proxy mode.
extension EndToEndLabTests {
    @Test("DSR, POST /servers/POOL/NAME/drain ([stats] admin = true): the drained server's open connection goes on, new ones all go to the other server, and /ready brings it back")
    func operatorDrainsAServer() throws {
        guard try labAvailable("operatorDrainsAServer") else { return }
        let config = labConfig(backends: 2).replacingOccurrences(of: "port = 7000", with: "port = 7000\nadmin = true")
        try ConveyLab.with(mode: "dsr", backends: 2, config: config) { lab in
            #expect(waitUntil(seconds: 10) { (try? lab.fromClient { try LabClient.who(timeout: 1) }) != nil })
            let held = try lab.fromClient { try LabClient.holding("ping") }
            let text = try lab.lab.check("lb", ["curl", "-fsS", "--max-time", "5", "http://127.0.0.1:7000/flows?client=10.77.0.10"])
            let flows = (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["flows"] as? [[String: Any]] ?? []
            let server = try #require(flows.first { $0["client"] as? String == "10.77.0.10:\(held.localPort)" }?["server"] as? String, "\(text)")
            let drained = String(server.split(separator: "/").last ?? "")
            let other = drained == "b1" ? "b2" : "b1"

            let answer = try lab.lab.check("lb", ["curl", "-fsS", "--max-time", "5", "-X", "POST", "http://127.0.0.1:7000/servers/\(server)/drain"])
            #expect(answer.contains("\"changed\": true"), "\(answer)")
            #expect(waitUntil(seconds: 5) { lab.convey?.output.contains("server \(server): drained by the operator (POST /servers/…/drain from 127.0.0.1:") == true })
            // The AF_XDP control plane takes up a published snapshot within its 50 ms round and
            // the worker at its next batch: give it ten rounds, then ten clients in a row on the
            // other server (1 in 1024 by chance alone) say the drain is in force.
            usleep(500_000)
            #expect(waitUntil(seconds: 5) {
                (0..<10).allSatisfy { _ in (try? lab.fromClient { try LabClient.who(timeout: 3) })?.name == other }
            }, "the drain is in force")
            let names = try (0..<20).map { _ in try lab.fromClient { try LabClient.who(timeout: 3) }.name }
            #expect(Set(names) == [other], "new connections avoid the drained server: \(names)")
            try held.send("\nstill here\n")
            held.shutdownWrite()
            #expect(String(decoding: try held.readToEnd(), as: UTF8.self) == "\nstill here\n", "the open connection goes on")
            let stats = try lab.stats()
            let detail = ((stats["backends"] as? [String: Any])?["web_pool"] as? [String: Any])?["server_detail"] as? [String: Any]
            let row = detail?[drained] as? [String: Any]
            #expect(row?["operator_drain"] as? Bool == true && row?["state"] as? String == "drain", "\(String(describing: row))")

            _ = try lab.lab.check("lb", ["curl", "-fsS", "--max-time", "5", "-X", "POST", "http://127.0.0.1:7000/servers/\(server)/ready"])
            #expect(waitUntil(seconds: 5) {
                Set((0..<20).compactMap { _ in try? lab.fromClient { try LabClient.who(timeout: 3) }.name }).contains(drained)
            }, "back in selection")
            #expect(lab.stopConvey() == 0)
        }
    }
}
