import Foundation
import LabSupport
import Testing

/// What `make install` puts in place for systemd, checked as systemd reads it.
@Suite("The systemd unit and its defaults")
struct ServiceUnitTests {
    /// `dist/convey.service` with the install paths filled in, as `make install` writes it.
    static func installedUnit() throws -> String {
        let template = try String(contentsOfFile: ConveyRun.root + "/dist/convey.service", encoding: .utf8)
        let bindir = URL(fileURLWithPath: ConveyRun.binary).deletingLastPathComponent().path
        return template.replacingOccurrences(of: "@BINDIR@", with: bindir)
            .replacingOccurrences(of: "@DOCDIR@", with: ConveyRun.root)
    }

    @Test("systemd-analyze verifies the installed unit without a complaint; reload is SIGHUP, stop is SIGTERM with time to drain, a bad config is not restarted")
    func unitVerifies() throws {
        let analyze = "/usr/bin/systemd-analyze"
        guard FileManager.default.isExecutableFile(atPath: analyze) else {
            if Lab.isCI { Issue.record("systemd-analyze is missing (make deps installs systemd)") }
            print("SKIPPED unitVerifies: systemd-analyze is not installed")
            return
        }
        let unit = try Self.installedUnit()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("convey-unit-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("convey.service").path
        try unit.write(toFile: path, atomically: true, encoding: .utf8)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: analyze)
        process.arguments = ["verify", path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let complaints = text.split(separator: "\n").filter { $0.contains("convey.service") }
        #expect(complaints.isEmpty, "systemd-analyze: \(text)")

        let lines = Set(unit.split(separator: "\n").map(String.init))
        #expect(lines.contains("ExecReload=/bin/kill -HUP $MAINPID"))
        #expect(lines.contains("KillSignal=SIGTERM"))
        #expect(lines.contains("RestartPreventExitStatus=2"), "exit 2 (bad configuration) is not restarted")
        let stop = lines.first { $0.hasPrefix("TimeoutStopSec=") }.flatMap { Int($0.dropFirst("TimeoutStopSec=".count)) }
        #expect((stop ?? 0) > 30, "longer than the default drain_timeout")
    }

    @Test("the installed defaults start proxy mode on the example config, which validates")
    func defaultsValidate() throws {
        let defaults = try String(contentsOfFile: ConveyRun.root + "/dist/convey.default", encoding: .utf8)
        #expect(defaults.contains("\nCONVEY_CONFIG=/etc/convey/convey.toml\n"))
        #expect(defaults.contains("\nCONVEY_OPTS=\"\"\n"), "proxy mode unless the operator picks another")
        let run = try ConveyRun(["--check", "--config", "examples/proxy.toml"])
        #expect(run.status == 0, "\(run.stderr)")
    }
}
