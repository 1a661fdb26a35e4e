import Foundation
import Glibc
import LabSupport
import Testing

/// `[stats] state_file`: the operator's drains outlive a restart.
extension EndToEndLabTests {
    @Test("[stats] state_file: a drain is written at once, a restarted convey starts with it (logged) and /ready clears it; a reload removing the server drops it from the file; a file that is not a drain list is set aside as .bad; a failed write is said in the answer; a file that cannot be read or written fails the start naming it")
    func drainsOutliveARestart() throws {
        guard try labAvailable("drainsOutliveARestart") else { return }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("convey-state-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let statePath = directory + "/drains.json"
        func drained() throws -> [String] {
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: statePath))) as? [String: Any]
            return (object?["drained"] as? [[String: String]] ?? []).map { "\($0["pool"] ?? "")/\($0["server"] ?? "")" }
        }
        let config = Self.proxyLabConfig(fall: 2) + "admin = true\nstate_file = \"\(statePath)\"\n"
        try ProxyLab.with(config: config) { lab, convey, configPath in
            func stats() -> String { (try? lab.check("lb", ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:7000/stats"])) ?? "" }
            #expect(waitUntil(seconds: 10) { stats().contains("\"operator_drain\"") }, "\(convey.output)")
            #expect(try drained() == [], "written at start (which shows it can be)")
            _ = try lab.check("lb", ["curl", "-fsS", "--max-time", "5", "-X", "POST", "http://127.0.0.1:7000/servers/pool/b1/drain"])
            #expect(try drained() == ["pool/b1"], "written before the answer")
            #expect(convey.stop() == 0)

            // A new convey on the same file: b1 is still drained.
            let again = try LabDaemon(lab: lab, host: "lb", [ConveyRun.binary, "--config", configPath, "--log-level", "info"])
            defer { again.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { stats().contains("\"operator_drain\": true") }, "\(again.output)")
            #expect(again.output.contains("server pool/b1: drained by the operator before this start (kept in \(statePath))"), "\(again.output)")
            _ = try lab.check("lb", ["curl", "-fsS", "--max-time", "5", "-X", "POST", "http://127.0.0.1:7000/servers/pool/b1/ready"])
            #expect(try drained() == [])
            // A reload that removes a drained server takes its drain out of the file too.
            _ = try lab.check("lb", ["curl", "-fsS", "--max-time", "5", "-X", "POST", "http://127.0.0.1:7000/servers/pool/b1/drain"])
            #expect(try drained() == ["pool/b1"])
            try config.replacingOccurrences(of: "servers.b1]", with: "servers.b9]").write(toFile: configPath, atomically: true, encoding: .utf8)
            #expect(waitUntil(seconds: 10) { (try? drained()) == [] }, "\(again.output)")
            #expect(again.stop() == 0)

            // A file that is not a drain list: logged, kept aside, replaced; convey runs.
            try "{ half a file".write(toFile: statePath, atomically: true, encoding: .utf8)
            let third = try LabDaemon(lab: lab, host: "lb", [ConveyRun.binary, "--config", configPath, "--log-level", "info"])
            defer { third.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { stats().contains("\"operator_drain\": false") }, "\(third.output)")
            #expect(third.output.contains("state_file \(statePath): not a drain list convey wrote"), "\(third.output)")
            #expect(third.output.contains("it is kept as \(statePath).bad"), "\(third.output)")
            #expect(try String(contentsOfFile: statePath + ".bad", encoding: .utf8) == "{ half a file")
            #expect(try drained() == [])
            #expect(third.stop() == 0)

            // The file goes away under a running convey: the command is applied, and its
            // answer says the change is not kept.
            let fifth = try LabDaemon(lab: lab, host: "lb", [ConveyRun.binary, "--config", configPath, "--log-level", "info"])
            defer { fifth.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { stats().contains("\"operator_drain\": false") }, "\(fifth.output)")
            try FileManager.default.removeItem(atPath: directory)
            let answer = try lab.check("lb", ["curl", "-fsS", "--max-time", "5", "-X", "POST", "http://127.0.0.1:7000/servers/pool/b9/drain"])
            #expect(answer.contains("\"changed\": true") && answer.contains("\"warning\": \"state_file \(statePath): cannot write it"), "\(answer)")
            #expect(fifth.output.contains("a restart would lose this change"), "\(fifth.output)")
            #expect(fifth.stop() == 0)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)

            // A file convey cannot read: the start fails (its list may be good).
            try FileManager.default.createDirectory(atPath: statePath, withIntermediateDirectories: false)
            let unreadable = try LabDaemon(lab: lab, host: "lb", [ConveyRun.binary, "--config", configPath])
            defer { unreadable.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { unreadable.exitStatus != nil })
            #expect(unreadable.exitStatus == 1 && unreadable.output.contains("state_file \(statePath): cannot read it: Is a directory"),
                    "\(unreadable.output)")

            // A file convey cannot write: the start fails, naming it.
            try config.replacingOccurrences(of: statePath, with: directory + "/missing/drains.json")
                .write(toFile: configPath, atomically: true, encoding: .utf8)
            let fourth = try LabDaemon(lab: lab, host: "lb", [ConveyRun.binary, "--config", configPath])
            defer { fourth.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { fourth.exitStatus != nil })
            #expect(fourth.exitStatus == 1, "\(fourth.output)")
            #expect(fourth.output.contains("state_file \(directory)/missing/drains.json: cannot write it: No such file or directory"), "\(fourth.output)")
        }
    }
}
