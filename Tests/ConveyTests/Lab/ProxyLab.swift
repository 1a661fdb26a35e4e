import Foundation
import Glibc
import LabSupport

/// Proxy mode in a namespace lab, as an operator runs it: `lab/backend.py` on b1 and
/// `convey --config FILE` in the balancer's namespace (its listeners stay off this machine's
/// own network). Everything is stopped and removed afterwards, also when `body` throws.
enum ProxyLab {
    /// Writes `config` to a file, starts the backend and convey (behind `wrapper`, e.g.
    /// `prlimit`), and runs `body` with the lab, convey and the config file's path.
    static func with<T>(config: String, wrapper: [String] = [],
                        _ body: (Lab, LabDaemon, String) throws -> T) throws -> T {
        try Lab.with(backends: 1) { lab in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(lab.prefix)-proxy")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let path = directory.appendingPathComponent("convey.toml").path
            try config.write(toFile: path, atomically: true, encoding: .utf8)
            let backend = try LabDaemon(lab: lab, host: "b1", ["python3", ConveyLab.backendScript, "b1", "80"])
            defer { backend.stop(SIGKILL) }
            let convey = try LabDaemon(lab: lab, host: "lb", wrapper + [ConveyRun.binary, "--config", path, "--log-level", "info"])
            defer { convey.stop(SIGKILL) }
            return try body(lab, convey, path)
        }
    }
}
