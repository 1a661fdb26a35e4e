import Foundation
import Glibc
import LabSupport

/// A namespace lab with `lab/backend.py` on every backend and `convey` in the balancer's
/// namespace on `veth0`, as an operator would run it: `convey --dsr|--passthrough --iface veth0`.
final class ConveyLab: @unchecked Sendable {
    let lab: Lab
    let mode: String
    let configPath: String
    private(set) var convey: LabDaemon?
    private var backendProcesses: [String: LabDaemon] = [:]

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Builds the lab, starts the backends and convey with `config` (TOML text), and runs `body`.
    /// Everything is stopped and removed afterwards, also when `body` throws.
    static func with<T>(mode: String, backends: Int = 3, config: String, _ body: (ConveyLab) throws -> T) throws -> T {
        try Lab.with(backends: backends) { lab in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(lab.prefix)-conf")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let path = directory.appendingPathComponent("convey.toml").path
            try config.write(toFile: path, atomically: true, encoding: .utf8)
            let harness = ConveyLab(lab: lab, mode: mode, configPath: path)
            defer { harness.stopAll() }
            for i in 1...backends { try harness.startBackend("b\(i)") }
            try harness.startConvey()
            return try body(harness)
        }
    }

    private init(lab: Lab, mode: String, configPath: String) {
        self.lab = lab
        self.mode = mode
        self.configPath = configPath
    }

    static var backendScript: String { Lab.packageRoot + "/lab/backend.py" }

    /// Starts `lab/backend.py NAME 80` in `host` and waits until it answers from the client.
    func startBackend(_ host: String) throws {
        backendProcesses[host] = try LabDaemon(lab: lab, host: host, ["python3", Self.backendScript, host, "80"])
        let address = "10.77.0.2" + host.dropFirst()
        let up = waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who(address, timeout: 1) }) != nil }
        guard up else { throw Failure(description: "backend \(host) did not come up") }
    }

    /// Kills the backend server of `host` (its host stays: connections are refused).
    func killBackend(_ host: String) {
        backendProcesses[host]?.stop(SIGKILL)
        backendProcesses[host] = nil
    }

    /// Starts convey and waits until its stats answer and every backend has a known MAC.
    func startConvey() throws {
        convey = try LabDaemon(lab: lab, host: "lb", [ConveyRun.binary, "--\(mode)", "--iface", "veth0",
                                                      "--config", configPath, "--log-level", "info"])
        let ready = waitUntil(seconds: 15) {
            guard convey?.isRunning == true, let stats = try? self.stats() else { return false }
            let dataplane = stats["dataplane"] as? [String: Any]
            return (dataplane?["unresolved_servers"] as? [Any])?.isEmpty == true
        }
        guard ready else {
            throw Failure(description: "convey did not become ready; its output:\n\(convey?.output ?? "")")
        }
    }

    /// Starts a second convey with `--takeover` (and `extra` arguments) and waits until the
    /// running one has exited; from then on the newcomer is this lab's convey. Returns the
    /// one that was replaced (exited).
    @discardableResult
    func takeOver(extra: [String] = [], seconds: Double = 20) throws -> LabDaemon {
        guard let old = convey else { throw Failure(description: "no convey to take over") }
        let new = try LabDaemon(lab: lab, host: "lb", [ConveyRun.binary, "--\(mode)", "--iface", "veth0",
                                                       "--config", configPath, "--log-level", "info", "--takeover"] + extra)
        guard waitUntil(seconds: seconds, { old.exitStatus != nil }) else {
            new.stop(SIGKILL)
            throw Failure(description: "the running convey did not exit; its output:\n\(old.output)\nthe newcomer's:\n\(new.output)")
        }
        convey = new
        return old
    }

    /// Stops convey with SIGTERM; returns its exit status.
    @discardableResult
    func stopConvey() -> Int32? {
        guard let process = convey else { return nil }
        convey = nil
        return process.stop(SIGTERM)
    }

    func stopAll() {
        convey?.stop(SIGKILL)
        convey = nil
        for (_, p) in backendProcesses { p.stop(SIGKILL) }
        backendProcesses = [:]
    }

    /// convey's `/stats`, parsed.
    func stats() throws -> [String: Any] {
        let text = try lab.check("lb", ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:7000/stats"])
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw Failure(description: "/stats is not a JSON object: \(text.prefix(200))")
        }
        return object
    }

    /// `dataplane.totals` from `/stats`.
    func forwarderTotals() throws -> [String: Any] {
        let dataplane = try stats()["dataplane"] as? [String: Any]
        return dataplane?["totals"] as? [String: Any] ?? [:]
    }

    /// Figure `key` of frontend `name` in `/stats` (as `current_connections`, `over_limit`),
    /// or nil when `/stats` does not answer.
    func frontendFigure(_ name: String, _ key: String) -> Int? {
        let frontend = (try? stats()["frontends"] as? [String: Any])?[name] as? [String: Any]
        return frontend?[key] as? Int
    }

    /// A drop counter from `dataplane.totals.drops`.
    func drops(_ reason: String) throws -> Int {
        ((try forwarderTotals()["drops"] as? [String: Any])?[reason] as? Int) ?? 0
    }

    /// Replaces the config file (convey reloads it by inotify).
    func rewriteConfig(_ text: String) throws {
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Runs `body` on a thread in the client's namespace.
    func fromClient<T>(_ body: @escaping () throws -> T) throws -> T {
        try lab.inNamespace("client", body)
    }

    /// Whether `veth0` in the balancer's namespace has an XDP program.
    func balancerHasXDP() throws -> Bool {
        try lab.check("lb", ["ip", "link", "show", "veth0"]).contains("xdp")
    }
}

/// The lab's AF_XDP config: frontend `web` on the VIP, backends b1..bN, fast health checks.
func labConfig(backends: Int = 3, weights: [Int]? = nil, backups: Set<Int> = [], balance: String = "maglev", capacity: Int = 100_000,
               natPorts: String? = nil, establishedTimeout: Double = 300, extraXDP: String = "", extraPool: String = "") -> String {
    var text = """
    [frontends.web]
    listen_addr = "10.77.0.100:80"
    backend = "web_pool"
    balance = "\(balance)"

    [backends.web_pool]
    health_check_interval = 0.5
    health_check_timeout = 0.4
    rise = 1
    fall = 2
    drain_timeout = 5
    \(extraPool)

    """
    for i in 1...backends {
        text += """
          [backends.web_pool.servers.b\(i)]
          addr = "10.77.0.2\(i):80"
          weight = \(weights?[i - 1] ?? 1)\(backups.contains(i) ? "\nbackup = true" : "")

        """
    }
    text += """

    [stats]
    port = 7000

    [passthrough]
    workers = 1
    connection_tracker_capacity = \(capacity)
    stats_update_frequency = 0.5

    [xdp]
    iface = "veth0"
    established_timeout = \(establishedTimeout)
    closing_timeout = 2
    \(natPorts.map { "nat_ports = \"\($0)\"" } ?? "")
    \(extraXDP)

    """
    return text
}
