@testable import Balancer
import Foundation
import Testing

@Suite("The operator's drains kept on disk ([stats] state_file)")
struct DrainStateFileTests {
    /// A fresh directory, removed after `body`.
    func inDirectory(_ body: (String) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("convey-drains-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try body(directory)
    }

    @Test("a missing file lists no drain; a saved list reads back in order, names with any bytes included, and leaves no temporary file")
    func roundTrip() throws {
        try inDirectory { directory in
            let file = DrainStateFile(path: directory + "/drains.json")
            #expect(try file.load().isEmpty)
            let drained = [ServerID(pool: "web_pool", name: "b1"), ServerID(pool: "pool \"é\"", name: "a/b\n")]
            try file.save(drained)
            #expect(try file.load() == drained)
            try file.save([])
            #expect(try file.load().isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["drains.json"])
            let text = try String(contentsOfFile: directory + "/drains.json", encoding: .utf8)
            #expect(text.contains("\"drained\" : [") && text.contains("rewrites this file"), "\(text)")
        }
    }

    @Test("a file convey did not write is refused, naming the file and what is wrong")
    func refusesOtherFiles() throws {
        try inDirectory { directory in
            let path = directory + "/drains.json"
            let file = DrainStateFile(path: path)
            for (text, reason) in [("not json", "not a drain list convey wrote"),
                                   ("{\"servers\": []}", "no 'drained' key"),
                                   ("{\"drained\": [{\"pool\": 1, \"server\": \"b\"}]}", "drained.Index 0.pool")] {
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                #expect {
                    _ = try file.load()
                } throws: { error in
                    let text = "\(error)"
                    return text.hasPrefix("state_file \(path): not a drain list convey wrote") && text.contains(reason)
                        && (error as? DrainStateFileError)?.kind == .notADrainList
                }
            }
            // One that cannot be read at all is told apart: its list may be good.
            try FileManager.default.removeItem(atPath: path)
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
            #expect {
                _ = try file.load()
            } throws: { error in
                (error as? DrainStateFileError)?.kind == .unreadable && "\(error)".contains("cannot read it: Is a directory")
            }
        }
    }

    @Test("a file that cannot be written says so, naming it and the reason")
    func unwritable() throws {
        try inDirectory { directory in
            let file = DrainStateFile(path: directory + "/missing/drains.json")
            #expect(throws: DrainStateFileError(path: directory + "/missing/drains.json", kind: .unwritable,
                                                reason: "cannot write it: No such file or directory")) {
                try file.save([ServerID(pool: "p", name: "s")])
            }
        }
    }

    @Test("state_file: an absolute path, kept only with admin = true")
    func configuration() throws {
        let head = """
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "p"
            [backends.p.servers.a]
            addr = "127.0.0.1:9000"
            [stats]

            """
        #expect(try load(head + "admin = true\nstate_file = \"/var/lib/convey/drains.json\"").stats.stateFile == "/var/lib/convey/drains.json")
        #expect(problems(head + "admin = true\nstate_file = \"drains.json\"").map(\.description)
                == ["test.toml:8: stats.state_file: 'drains.json' is not an absolute path to a file (as \"/var/lib/convey/drains.json\")"])
        let without = try ConfigLoader.load(source: head + "state_file = \"/var/lib/convey/drains.json\"", file: "test.toml")
        #expect(without.config.stats.stateFile == nil)
        #expect(without.warnings.map(\.description) == ["test.toml:7: stats.state_file: kept only with admin = true (it holds the drains the stats server's commands make): ignored"])
        let off = try ConfigLoader.load(source: head + "admin = true\nport = 0\nstate_file = \"/var/lib/convey/drains.json\"", file: "test.toml")
        #expect(off.warnings.map(\.description).first?.hasPrefix("test.toml:9: stats.state_file: the stats server is off (port = 0)") == true,
                "\(off.warnings)")
    }
}
