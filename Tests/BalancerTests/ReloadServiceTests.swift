import Balancer
import Glibc
import Logging
import Synchronization
import Testing

@Suite("Reloading the configuration")
struct ReloadServiceTests {
    /// A temporary directory with a config file, replaced the way editors do (write + rename).
    struct ConfigDirectory {
        let path: String
        var file: String { path + "/convey.toml" }

        init() {
            var template = Array("/tmp/convey-reload-XXXXXX".utf8CString)
            path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        }

        func write(_ text: String) {
            let temp = path + "/.convey.toml.tmp"
            let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            _ = text.utf8CString.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, $0.count - 1) }
            close(fd)
            rename(temp, file)
        }

        func remove() {
            unlink(file)
            rmdir(path)
        }
    }

    static func toml(weights: [Int], extra: String = "") -> String {
        var s = "[frontends.web]\nlisten_addr = \"127.0.0.1:18080\"\nbackend = \"pool\"\n\(extra)\n[backends.pool]\n"
        for (i, w) in weights.enumerated() {
            s += "  [backends.pool.servers.s\(i)]\n  addr = \"127.0.0.1:\(9001 + i)\"\n  weight = \(w)\n"
        }
        return s
    }

    func waitFor(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<300 {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }

    @Test("a file replaced by rename is applied; a broken one is ignored and the running config stays")
    func watchesDirectory() async throws {
        let dir = ConfigDirectory()
        defer { dir.remove() }
        dir.write(Self.toml(weights: [1, 1]))
        let runtime = BalancerRuntime(config: try ConfigLoader.load(path: dir.file).config)
        let service = ReloadService(path: dir.file, runtime: runtime, logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            try await Task.sleep(for: .milliseconds(100))

            dir.write(Self.toml(weights: [1, 1, 4]))
            #expect(try await waitFor { runtime.config.pools[0].servers.count == 3 })
            #expect(runtime.config.pools[0].servers[2].weight == 4)

            dir.write(Self.toml(weights: [1, 1, 4], extra: "balance = \"nonsense\""))
            try await Task.sleep(for: .milliseconds(400))
            #expect(runtime.config.frontends[0].balance == .wrr)
            #expect(runtime.config.pools[0].servers.count == 3)

            dir.write(Self.toml(weights: [2]))
            #expect(try await waitFor { runtime.config.pools[0].servers.count == 1 })
            #expect(runtime.config.pools[0].servers[0].weight == 2)
            group.cancelAll()
        }
    }

    /// `sudo convey --iface eth0 --dsr --config f.toml` with no `[xdp] iface` in the file: a
    /// reload must see the interface the command line gave, as the start did (before, every
    /// reload was rejected with "dsr mode needs an interface").
    @Test("command-line overrides apply to every reloaded file before it is checked")
    func overridesApplyToReloads() async throws {
        let dir = ConfigDirectory()
        defer { dir.remove() }
        dir.write(Self.toml(weights: [1]))
        var config = try ConfigLoader.load(path: dir.file).config
        #expect(config.xdp.iface == nil)
        config.xdp.iface = "lab0"
        let runtime = BalancerRuntime(config: config)
        let service = ReloadService(path: dir.file, runtime: runtime, logger: Logger(label: "test"),
                                    overrides: { $0.xdp.iface = "lab0" },
                                    check: { candidate in
                                        candidate.config.xdp.iface == nil
                                            ? [candidate.problem(key: "xdp.iface", "needs an interface")]
                                            : []
                                    })
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            try await Task.sleep(for: .milliseconds(100))
            dir.write(Self.toml(weights: [5]))
            #expect(try await waitFor { runtime.config.pools[0].servers[0].weight == 5 })
            #expect(runtime.config.xdp.iface == "lab0")
            group.cancelAll()
        }
    }

    @Test("the data plane prepares only a file that passed every check; a problem it finds rejects the file")
    func prepareRunsLastAndCanReject() async throws {
        let dir = ConfigDirectory()
        defer { dir.remove() }
        dir.write(Self.toml(weights: [1]))
        let runtime = BalancerRuntime(config: try ConfigLoader.load(path: dir.file).config)
        let prepared = Mutex<[Int]>([])
        let service = ReloadService(path: dir.file, runtime: runtime, logger: Logger(label: "test"),
                                    check: { candidate in
                                        candidate.config.pools[0].servers[0].weight == 7
                                            ? [candidate.problem(key: "backends.pool.servers.s0.weight", "not 7")] : []
                                    },
                                    prepare: { candidate in
                                        let weight = candidate.config.pools[0].servers[0].weight
                                        prepared.withLock { $0.append(weight) }
                                        return weight == 3 ? [candidate.problem(key: "frontends.web.listen_addr", "in use")] : []
                                    })
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            try await Task.sleep(for: .milliseconds(100))
            dir.write(Self.toml(weights: [7]))  // fails its check: never prepared
            try await Task.sleep(for: .milliseconds(300))
            dir.write(Self.toml(weights: [3]))  // prepared, and rejected by it
            // (Another test's SIGHUP may reload the same file again: compare sets.)
            #expect(try await waitFor { prepared.withLock { $0 }.contains(3) })
            try await Task.sleep(for: .milliseconds(100))
            #expect(runtime.config.pools[0].servers[0].weight == 1, "a file its data plane rejects is not applied")
            dir.write(Self.toml(weights: [5]))
            #expect(try await waitFor { runtime.config.pools[0].servers[0].weight == 5 })
            #expect(Set(prepared.withLock { $0 }) == [3, 5], "the file that failed its check was never prepared")
            group.cancelAll()
        }
    }

    @Test("SIGHUP reloads even without a file event")
    func sighup() async throws {
        let dir = ConfigDirectory()
        defer { dir.remove() }
        dir.write(Self.toml(weights: [1]))
        let runtime = BalancerRuntime(config: try ConfigLoader.load(path: dir.file).config)
        // The runtime is older than the file: SIGHUP must bring it up to date.
        dir.write(Self.toml(weights: [3]))
        let service = ReloadService(path: dir.file, runtime: runtime, logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            try await Task.sleep(for: .milliseconds(400))
            // The watcher saw nothing new since it started; the first event is the signal.
            if runtime.config.pools[0].servers[0].weight != 3 {
                kill(getpid(), SIGHUP)
            }
            #expect(try await waitFor { runtime.config.pools[0].servers[0].weight == 3 })
            group.cancelAll()
        }
    }
}
