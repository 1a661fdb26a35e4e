import Foundation
import Glibc

/// A long-running program started in a lab host, detached from the test process: a shell in
/// the host starts it in the background, records its pid, waits for it and records its exit
/// status. The test signals it by pid and reads the status file, so no child of the test
/// process is ever waited for (Foundation's `Process.waitUntilExit` can miss the exit of a
/// child killed while other labs' processes come and go).
public final class LabDaemon: @unchecked Sendable {
    public let pid: pid_t
    public let log: String
    private let statusFile: String

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Starts `arguments` in `host`. It is killed (SIGKILL) at the latest after `maxSeconds`.
    public init(lab: Lab, host: String, _ arguments: [String], maxSeconds: Int = 300) throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("\(lab.prefix)-\(host)-\(UUID().uuidString)").path
        log = base + ".log"
        statusFile = base + ".status"
        let pidFile = base + ".pid"
        let command = arguments.map(Self.quote).joined(separator: " ")
        // A watchdog kills the program after maxSeconds should the test never stop it.
        let script = "{ \(command) </dev/null >\(log) 2>&1 & p=$!; echo $p >\(pidFile); " +
            "( sleep \(maxSeconds); kill -9 $p ) & w=$!; wait $p; echo $? >\(statusFile); pkill -P $w; kill $w; } >/dev/null 2>&1 &"
        _ = try lab.check(host, ["sh", "-c", script])
        var found: pid_t?
        _ = waitUntil(seconds: 5) {
            found = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            return found != nil
        }
        try? FileManager.default.removeItem(atPath: pidFile)
        guard let found else { throw Failure(description: "could not start \(command) in \(host)") }
        pid = found
    }

    /// True while the program runs.
    public var isRunning: Bool { exitStatus == nil && Glibc.kill(pid, 0) == 0 }

    /// The exit status once it ended (128+N when killed by signal N).
    public var exitStatus: Int32? {
        (try? String(contentsOfFile: statusFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Sends `signal` and waits up to `seconds` for the exit; returns the exit status.
    @discardableResult
    public func stop(_ signal: Int32 = SIGTERM, seconds: Double = 15) -> Int32? {
        if exitStatus == nil { Glibc.kill(pid, signal) }
        if !waitUntil(seconds: seconds, { exitStatus != nil }) {
            Glibc.kill(pid, SIGKILL)
            _ = waitUntil(seconds: 2) { exitStatus != nil }
        }
        return exitStatus
    }

    /// What it printed.
    public var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    deinit {
        if exitStatus == nil { Glibc.kill(pid, SIGKILL) }
        for path in [log, statusFile] { try? FileManager.default.removeItem(atPath: path) }
    }

    private static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
}
