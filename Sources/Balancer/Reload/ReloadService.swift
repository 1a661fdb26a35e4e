#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// Reloads the configuration when its file changes (inotify on its directory) or on SIGHUP.
///
/// A new file is validated first: a broken one is logged with every problem and the running
/// configuration stays. A valid one is applied to the runtime (new servers and weights take new
/// connections at once; removed ones drain) and handed to `onApplied` (health checks follow it).
/// Bursts of events (an editor's write + rename) are coalesced, and a file whose bytes did not
/// change is not reloaded on a file event (SIGHUP always reloads). The file is read on NIO's
/// blocking thread pool: looking servers' host names up can block.
public struct ReloadService: Service {
    private let path: String
    private let runtime: BalancerRuntime
    private let logger: Logger
    private let onApplied: @Sendable (ConveyConfig) -> Void
    private let check: @Sendable (LoadedConfig) -> [ConfigProblem]
    private let overrides: @Sendable (inout ConveyConfig) -> Void
    private let prepare: @Sendable (LoadedConfig) -> [ConfigProblem]
    private let warnings: @Sendable (LoadedConfig) -> [ConfigProblem]
    private let startedWith: String?

    /// - Parameters:
    ///   - overrides: the command line's settings, which outrank the file's (`--iface`):
    ///     applied to every candidate before it is checked, as they were at start, so a file
    ///     that leaves them to the command line reloads like the one convey started with.
    ///   - check: mode-specific validation run on every candidate (e.g. NAT port safety); any
    ///     problem rejects the file like a syntax error would.
    ///   - warnings: mode-specific remarks on an accepted file (settings the mode ignores),
    ///     logged with the file's own warnings.
    ///   - prepare: run on a candidate that passed every check, just before it is applied: the
    ///     data plane readies what the file needs and only it can try (proxy mode binds the
    ///     listeners of new frontends and addresses). A problem rejects the file; the hook
    ///     then leaves nothing behind.
    ///   - startedWith: the text the running configuration was loaded from. A file that no
    ///     longer holds it once the watcher runs (changed while convey was starting) is
    ///     reloaded then, and a SIGHUP while it still holds it parses nothing (unless the
    ///     running configuration names hosts, which a SIGHUP looks up again).
    public init(path: String, runtime: BalancerRuntime, logger: Logger, startedWith: String? = nil,
                overrides: @escaping @Sendable (inout ConveyConfig) -> Void = { _ in },
                check: @escaping @Sendable (LoadedConfig) -> [ConfigProblem] = { _ in [] },
                warnings: @escaping @Sendable (LoadedConfig) -> [ConfigProblem] = { _ in [] },
                prepare: @escaping @Sendable (LoadedConfig) -> [ConfigProblem] = { _ in [] },
                onApplied: @escaping @Sendable (ConveyConfig) -> Void = { _ in }) {
        self.path = path
        self.runtime = runtime
        self.logger = logger
        self.overrides = overrides
        self.check = check
        self.prepare = prepare
        self.warnings = warnings
        self.onApplied = onApplied
        self.startedWith = startedWith
    }

    public func run() async throws {
        let (events, continuation) = AsyncStream.makeStream(of: Trigger.self, bufferingPolicy: .bufferingNewest(4))
        let directory = Self.directory(of: path)
        let watcher: DirectoryWatcher?
        do {
            let path = self.path
            watcher = try DirectoryWatcher(directory: directory) { changes in
                if Self.touchesConfig(changes, path: path) { continuation.yield(.fileEvent) }
            }
        } catch {
            logger.warning("cannot watch config directory; reload on SIGHUP only",
                           metadata: ["directory": "\(directory)", "error": "\(error)"])
            watcher = nil
        }
        defer { watcher?.stop() }
        let signals = await UnixSignalsSequence(trapping: .sighup)
        let signalTask = Task {
            for await _ in signals { continuation.yield(.signal) }
        }
        defer { signalTask.cancel() }

        let current = (try? Self.read(path)) ?? ""
        var lastSource = startedWith ?? current
        // The text of the last file applied (nil: the one convey started with, not known),
        // so a SIGHUP with nothing new costs no parse.
        var appliedSource: String? = startedWith
        // Changed between the start's read and the watcher's first look: nothing else
        // would notice.
        if let startedWith, current != startedWith { continuation.yield(.fileEvent) }
        await withGracefulShutdownHandler {
            for await trigger in events.cancelOnGracefulShutdown() {
                // Let the editor finish its write-then-rename before reading.
                try? await Task.sleep(for: .milliseconds(100))
                let source: String
                do {
                    source = try Self.read(path)
                } catch let invalid as InvalidUTF8 {
                    logger.error("config rejected, running configuration kept: \(invalid.problem(file: path))")
                    continue
                } catch {
                    logger.warning("config file unreadable (\(error)); keeping the running configuration",
                                   metadata: ["file": "\(path)"])
                    continue
                }
                // File events repeat for one save. SIGHUP is an explicit request: it reloads
                // whatever the file holds unless that is exactly what runs (a file rejected
                // before is tried again: a bind may succeed now).
                guard source != lastSource || trigger == .signal else { continue }
                lastSource = source
                // Unless it names hosts: a SIGHUP looks them up again.
                if trigger == .signal && source == appliedSource && !runtime.config.namesHosts {
                    logger.notice("configuration unchanged; nothing to reload", metadata: ["file": "\(path)"])
                    continue
                }
                if await reload(source: source) { appliedSource = source }
            }
        } onGracefulShutdown: {
            continuation.finish()
        }
    }

    private enum Trigger { case fileEvent, signal }

    /// Validates and applies `source`; returns whether it was applied. The file is read on a
    /// thread of NIO's blocking pool: looking host names up can wait out the resolver's
    /// timeouts, which must not hold one of the few threads Swift concurrency shares with the
    /// health checks and the stats server.
    func reload(source: String) async -> Bool {
        let path = self.path
        let resolver = HostNameResolver.system.preferring(runtime.config)
        let loaded: Result<LoadedConfig, ConfigError>
        do {
            loaded = try await NIOThreadPool.singleton.runIfActive {
                Result { () throws(ConfigError) in try ConfigLoader.load(source: source, file: path, resolver: resolver) }
            }
        } catch {
            logger.error("config not reloaded: the thread pool is stopping (\(error))")
            return false
        }
        return apply(loaded)
    }

    /// Applies a loaded file, or logs why it was rejected; returns whether it was applied.
    private func apply(_ result: Result<LoadedConfig, ConfigError>) -> Bool {
        let loaded: LoadedConfig
        switch result {
        case .success(let value):
            loaded = value
        case .failure(let error):
            for problem in error.problems {
                logger.error("config rejected, running configuration kept: \(problem)")
            }
            return false
        }
        var candidate = loaded
        overrides(&candidate.config)
        var problems = check(candidate)
        if problems.isEmpty { problems = prepare(candidate) }
        guard problems.isEmpty else {
            for problem in problems { logger.error("config rejected, running configuration kept: \(problem)") }
            return false
        }
        for warning in loaded.warnings + warnings(candidate) { logger.warning("\(warning)") }
        let report = runtime.apply(candidate.config)
        for change in report.applied { logger.notice("reload: \(change)") }
        for change in report.needsRestart { logger.warning("reload: \(change)") }
        logger.notice("configuration reloaded", metadata: ["file": "\(path)", "changes": "\(report.applied.count)"])
        onApplied(runtime.config)
        return true
    }

    /// Whether a batch of changes in the config file's directory can have given the file new
    /// bytes: a change to the file's own entry, or (for a symlinked file, as Kubernetes mounts
    /// a ConfigMap: `convey.toml -> ..data/convey.toml`) to its link target's first component.
    /// Other files in the directory are ignored, so a file being written in place is never read
    /// half-written because its neighbour changed; so is the creation of a regular file, which
    /// is read once its writer closes it. An overflowed event queue (no name) counts.
    static func touchesConfig(_ changes: [DirectoryChange], path: String) -> Bool {
        let directory = directory(of: path)
        var names: Set<String> = [String(path.split(separator: "/").last ?? "")]
        // Follow a chain of links within the directory (a -> ./b -> ..data/c): each step's
        // first component, skipping ".", names an entry whose change can change the bytes.
        var link = path
        for _ in 0..<8 {
            guard let target = symlinkTarget(link), !target.hasPrefix("/") else { break }
            let parts = target.split(separator: "/").filter { $0 != "." }
            guard let first = parts.first, first != ".." else { break }
            names.insert(String(first))
            guard parts.count == 1 else { break }
            link = directory + "/" + first
        }
        return changes.contains { change in
            guard change.name.isEmpty || names.contains(change.name) else { return false }
            guard change.created && !change.written else { return true }
            // A new symlink is whole when created; a new regular file is read when closed.
            return symlinkTarget(directory + "/" + change.name) != nil
        }
    }

    /// The target of the symlink at `path`, or nil when it is not one.
    static func symlinkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = String(path[..<slash])
        return dir.isEmpty ? "/" : dir
    }

    static func read(_ path: String) throws -> String {
        try ConfigLoader.readFile(path)
    }
}
