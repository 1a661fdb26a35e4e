@testable import Balancer
import Glibc
import Logging
import Synchronization
import Testing

@Suite("Reloading the configuration", .serialized)  // the SIGHUP test signals the whole process
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

    /// A save between convey's first read and its watcher's start raises no event the watcher
    /// could see: the service compares the file with the text convey started from.
    @Test("a file changed while convey was starting is applied once the service runs")
    func changeDuringStart() async throws {
        let dir = ConfigDirectory()
        defer { dir.remove() }
        dir.write(Self.toml(weights: [1, 1]))
        let started = try ConfigLoader.load(path: dir.file)
        let runtime = BalancerRuntime(config: started.config)
        dir.write(Self.toml(weights: [1, 1, 4]))
        let service = ReloadService(path: dir.file, runtime: runtime, logger: Logger(label: "test"),
                                    startedWith: started.source)
        try await withThrowingTaskGroup(of: Void.self) { group throws in
            group.addTask { try await service.run() }
            #expect(try await waitFor { runtime.config.pools[0].servers.count == 3 })
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

    /// `cat > convey.toml`, `scp` and `rsync --inplace` write the file where it is. Before,
    /// any event in the directory re-read it, and a valid prefix (fewer servers, fewer
    /// frontends) was applied while the writer was still writing.
    @Test("a file written in place is read once its writer closes it, whatever else changes in its directory")
    func inPlaceWriteIsReadWhenClosed() async throws {
        let dir = ConfigDirectory()
        defer {
            unlink(dir.path + "/neighbour.txt")
            dir.remove()
        }
        dir.write(Self.toml(weights: [1, 1]))
        let runtime = BalancerRuntime(config: try ConfigLoader.load(path: dir.file).config)
        let service = ReloadService(path: dir.file, runtime: runtime, logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            try await Task.sleep(for: .milliseconds(100))

            let full = Self.toml(weights: [1, 1, 1])
            let prefix = Self.toml(weights: [1])  // valid on its own: one server
            #expect(full.hasPrefix(prefix))
            let fd = open(dir.file, O_WRONLY | O_TRUNC)
            #expect(fd >= 0)
            _ = prefix.utf8CString.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, $0.count - 1) }
            // Something else in the directory changes meanwhile (a log, a backup, a lock file).
            let other = open(dir.path + "/neighbour.txt", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            close(other)
            try await Task.sleep(for: .milliseconds(500))
            #expect(runtime.config.pools[0].servers.count == 2, "a half-written file was applied")

            let rest = String(full.dropFirst(prefix.count))
            _ = rest.utf8CString.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, $0.count - 1) }
            close(fd)
            #expect(try await waitFor { runtime.config.pools[0].servers.count == 3 })
            group.cancelAll()
        }
    }

    /// How Kubernetes mounts a ConfigMap: `convey.toml -> ..data/convey.toml`, `..data -> ..v1`,
    /// updated by renaming a new `..data` symlink over the old one.
    @Test("a ConfigMap-style symlink swap is applied")
    func configMapSwap() async throws {
        let dir = ConfigDirectory()
        func put(_ version: String, _ text: String) {
            mkdir(dir.path + "/" + version, 0o755)
            let fd = open(dir.path + "/\(version)/convey.toml", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            _ = text.utf8CString.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, $0.count - 1) }
            close(fd)
        }
        defer {
            for name in ["convey.toml", "..data", "..v1/convey.toml", "..v2/convey.toml"] { unlink(dir.path + "/" + name) }
            for name in ["..v1", "..v2"] { rmdir(dir.path + "/" + name) }
            rmdir(dir.path)
        }
        put("..v1", Self.toml(weights: [1]))
        symlink("..v1", dir.path + "/..data")
        symlink("..data/convey.toml", dir.file)
        let runtime = BalancerRuntime(config: try ConfigLoader.load(path: dir.file).config)
        let service = ReloadService(path: dir.file, runtime: runtime, logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            try await Task.sleep(for: .milliseconds(100))
            put("..v2", Self.toml(weights: [5]))
            symlink("..v2", dir.path + "/..data_tmp")
            rename(dir.path + "/..data_tmp", dir.path + "/..data")
            #expect(try await waitFor { runtime.config.pools[0].servers[0].weight == 5 })
            group.cancelAll()
        }
    }

    @Test("only changes to the config file's own entry (or its symlink's first step) trigger a read")
    func relevantChanges() {
        let path = "/nonexistent-dir/convey.toml"
        #expect(ReloadService.touchesConfig([DirectoryChange(name: "convey.toml", written: true)], path: path))
        #expect(ReloadService.touchesConfig([DirectoryChange(name: "convey.toml")], path: path))  // renamed over
        #expect(ReloadService.touchesConfig([DirectoryChange(name: "")], path: path))  // queue overflow
        #expect(!ReloadService.touchesConfig([DirectoryChange(name: "other.toml", written: true)], path: path))
        #expect(!ReloadService.touchesConfig([DirectoryChange(name: ".convey.toml.swp", written: true)], path: path))
        // A new regular file is still being written: read it when it is closed.
        #expect(!ReloadService.touchesConfig([DirectoryChange(name: "convey.toml", created: true)], path: path))
        #expect(ReloadService.touchesConfig([DirectoryChange(name: "convey.toml", written: true, created: true)], path: path))
    }

    @Test("a config reached through links in its directory (./real.toml, a chain) follows each link's target")
    func linkChains() {
        var template = Array("/tmp/convey-links-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        defer {
            for name in ["convey.toml", "middle.toml", "real.toml"] { unlink(dir + "/" + name) }
            rmdir(dir)
        }
        symlink("./middle.toml", dir + "/convey.toml")
        symlink("real.toml", dir + "/middle.toml")
        let path = dir + "/convey.toml"
        #expect(ReloadService.touchesConfig([DirectoryChange(name: "real.toml", written: true)], path: path))
        #expect(ReloadService.touchesConfig([DirectoryChange(name: "middle.toml")], path: path))
        #expect(!ReloadService.touchesConfig([DirectoryChange(name: "other.toml", written: true)], path: path))
    }

    @Test("inotify records are read by name and kind")
    func parsesInotifyRecords() {
        func record(mask: Int32, name: String, padded: Int) -> [UInt8] {
            func le(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
            var nameBytes = Array(name.utf8)
            nameBytes += [UInt8](repeating: 0, count: padded - nameBytes.count)
            return le(1) + le(UInt32(mask)) + le(0) + le(UInt32(padded)) + nameBytes
        }
        let bytes = record(mask: IN_CLOSE_WRITE, name: "convey.toml", padded: 16)
            + record(mask: IN_CREATE, name: "x", padded: 16) + record(mask: IN_Q_OVERFLOW, name: "", padded: 0)
        #expect(DirectoryWatcher.parse(bytes[...]) == [
            DirectoryChange(name: "convey.toml", written: true),
            DirectoryChange(name: "x", created: true),
            DirectoryChange(name: ""),
        ])
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

    @Test("SIGHUP with the file unchanged parses nothing, unless it names hosts: then they are looked up again")
    func sighupLooksNamesUpAgain() async throws {
        for named in [false, true] {
            let dir = ConfigDirectory()
            defer { dir.remove() }
            let text = Self.toml(weights: [1]).replacingOccurrences(of: "127.0.0.1:9001", with: named ? "localhost:9001" : "127.0.0.1:9001")
            dir.write(text)
            let runtime = BalancerRuntime(config: try ConfigLoader.load(path: dir.file).config)
            #expect(runtime.config.namesHosts == named)
            let (logger, lines) = CapturingLogHandler.logger()
            let service = ReloadService(path: dir.file, runtime: runtime, logger: logger, startedWith: text)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                try await Task.sleep(for: .milliseconds(400))
                kill(getpid(), SIGHUP)
                let expected = named ? "configuration reloaded" : "configuration unchanged; nothing to reload"
                #expect(try await waitFor { lines.all.contains { $0.message == expected } }, "\(named): \(lines.all.map(\.message))")
                group.cancelAll()
            }
        }
    }
}
