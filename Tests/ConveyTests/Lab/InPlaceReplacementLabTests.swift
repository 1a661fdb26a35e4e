import Foundation
import Glibc
import LabSupport
import Testing

extension EndToEndLabTests {
    @Test("proxy mode with a notification socket (systemd's protocol): READY=1 once it listens; SIGUSR2 starts the binary again with --takeover as the old one's sibling, which takes the listening sockets over, announces MAINPID=itself and only then stops the old one (exit 0); a steady client load sees no failure; a replacement that cannot start is said, and the old one serves on")
    func proxyReplacedInPlace() throws {
        guard try labAvailable("proxyReplacedInPlace") else { return }
        let notify = try NotifyListener()
        defer { notify.close() }
        let config = Self.proxyLabConfig(fall: 3) + "[proxy]\nworkers = 2\n"
        try ProxyLab.with(config: config, wrapper: ["env", "NOTIFY_SOCKET=\(notify.path)"]) { lab, old, path in
            #expect(waitUntil(seconds: 10) { notify.messages.contains { $0.hasPrefix("READY=1\nSTATUS=proxy mode: 1 frontend(s) listening") } },
                    "\(notify.messages) \(old.output)")
            #expect(waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }) != nil })

            // A replacement that fails (the file became invalid meanwhile): said, and the old one serves on.
            try "[frontends.web\n".write(toFile: path, atomically: true, encoding: .utf8)
            kill(old.pid, SIGUSR2)
            #expect(waitUntil(seconds: 10) { old.output.contains("exited before taking the listening sockets over") },
                    "\(old.output)")
            #expect(old.isRunning)
            try config.write(toFile: path, atomically: true, encoding: .utf8)
            #expect(try lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }.name == "b1")

            let oldParent = Self.parent(of: old.pid)
            let (tally, load) = Self.clientLoad(lab)
            defer { _ = Self.finish(tally, load) }
            #expect(waitUntil(seconds: 5) { tally.served.load(ordering: .relaxed) >= 50 })
            kill(old.pid, SIGUSR2)
            var replacement: pid_t?
            #expect(waitUntil(seconds: 10) {
                replacement = notify.messages.lazy.compactMap { m -> pid_t? in
                    guard m.contains("READY=1"), let line = m.split(separator: "\n").first(where: { $0.hasPrefix("MAINPID=") }) else { return nil }
                    return pid_t(line.dropFirst("MAINPID=".count))
                }.first
                return replacement != nil
            }, "\(notify.messages) \(old.output)")
            let new = try #require(replacement)
            #expect(new != old.pid)
            // Its parent is the old one's (under systemd, the service manager, which reaps it).
            #expect(Self.parent(of: new) == oldParent, "parent of \(new): \(String(describing: Self.parent(of: new))), of \(old.pid): \(String(describing: oldParent))")
            #expect(waitUntil(seconds: 15) { old.exitStatus != nil }, "the old convey is told to stop: \(old.output)")
            #expect(old.exitStatus == 0, "\(old.output)")
            #expect(old.output.contains("handed the listening sockets to the replacement (pid \(new))"), "\(old.output)")
            #expect(old.output.contains("took over frontend web's 1 listening socket(s) at 10.77.0.2:8000"), "the replacement's log: \(old.output)")
            #expect(old.output.contains("takeover: telling the convey this one replaces (pid \(old.pid)) to stop (SIGTERM)"), "\(old.output)")
            #expect(!old.output.contains("send it SIGTERM now"), "the replacement stops the old one itself: \(old.output)")
            #expect(!notify.messages.contains { $0.contains("STOPPING=1") }, "no convey tells the unit it stops: \(notify.messages)")
            let atExit = tally.served.load(ordering: .relaxed)
            #expect(waitUntil(seconds: 5) { tally.served.load(ordering: .relaxed) >= atExit + 100 }, "served by the replacement")
            let failures = Self.finish(tally, load)
            #expect(failures.isEmpty, "\(failures.count) of \(tally.served.load(ordering: .relaxed) + failures.count) clients failed: \(Set(failures))")

            // The replacement is the one running now: SIGTERM stops it, and it says so.
            kill(new, SIGTERM)
            #expect(waitUntil(seconds: 15) {
                let state = (try? String(contentsOfFile: "/proc/\(new)/stat", encoding: .utf8))?.split(separator: " ").dropFirst(2).first
                return state == nil || state == "Z"
            }, "the replacement stops on SIGTERM")
        }
    }

    /// The parent pid of `pid` (`/proc/PID/stat`'s fourth field), while it runs.
    static func parent(of pid: pid_t) -> pid_t? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let afterName = stat.range(of: ") ")?.upperBound else { return nil }
        return stat[afterName...].split(separator: " ").dropFirst(1).first.flatMap { pid_t($0) }
    }

    @Test("proxy mode, SIGUSR2 when the binary at its path is gone: the start fails with the reason, and the running convey serves on")
    func replacementThatCannotStart() throws {
        guard try labAvailable("replacementThatCannotStart") else { return }
        try ProxyLab.with(config: Self.proxyLabConfig(fall: 3)) { lab, first, path in
            #expect(waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }) != nil })
            #expect(first.stop() == 0)
            // A copy of the binary, started by its absolute path, then removed (an upgrade gone wrong).
            let copy = path + ".convey"
            try FileManager.default.copyItem(atPath: ConveyRun.binary, toPath: copy)
            defer { try? FileManager.default.removeItem(atPath: copy) }
            let convey = try LabDaemon(lab: lab, host: "lb", [copy, "--config", path, "--log-level", "info"])
            defer { convey.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { convey.output.contains("proxy listening") }, "\(convey.output)")
            try FileManager.default.removeItem(atPath: copy)
            kill(convey.pid, SIGUSR2)
            #expect(waitUntil(seconds: 5) {
                convey.output.contains("SIGUSR2: cannot start \(copy) to replace this convey: No such file or directory; this one keeps serving")
            }, "\(convey.output)")
            #expect(try lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }.name == "b1")
            #expect(convey.stop() == 0)
        }
    }
}
