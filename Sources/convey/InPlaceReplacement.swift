import CLinux
import Foundation
import Glibc
import Logging
import Synchronization

/// Replaces a proxy-mode convey with a new one, in place, on SIGUSR2 (nginx's binary upgrade,
/// HAProxy's master re-exec): it starts the binary at its path now (an upgraded package's) as
/// `convey ... --takeover`, which takes the listening sockets over; once it has them, this
/// one stops as on SIGTERM, its open connections finishing here. Under systemd the new one
/// announces itself as the unit's main process (`MAINPID=`), so the unit stays active with no
/// transient unit and no refused client.
final class InPlaceReplacement: Sendable {
    /// The binary to start: this one's path, resolved at start (a package upgrade replaces
    /// the file there, while `/proc/self/exe` keeps naming the old, deleted one).
    let executable: String
    /// Its arguments: this convey's, with `--takeover`.
    let arguments: [String]
    private let logger: Logger

    private struct State {
        /// The replacement started and not yet known to have failed.
        var child: pid_t?
        /// It took the listeners over: this convey is stopping for it.
        var replaced = false
    }

    private let state = Mutex(State())

    init(logger: Logger, arguments: [String] = CommandLine.arguments) {
        self.logger = logger
        executable = Self.ownPath() ?? arguments.first ?? "convey"
        var rest = Array(arguments.dropFirst())
        if !rest.contains("--takeover") { rest.append("--takeover") }
        self.arguments = rest
    }

    /// True once a replacement has the listeners (this convey must then not speak for the
    /// unit any more: `STOPPING=1` would stop the new one's unit).
    var isReplaced: Bool { state.withLock { $0.replaced } }

    /// This process's executable path while it still names the file (a deleted one reads
    /// "PATH (deleted)": the path is kept, where the new file now is).
    static func ownPath() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path.hasSuffix(" (deleted)") ? String(path.dropLast(" (deleted)".count)) : path
    }

    /// SIGUSR2: starts the replacement, unless one is already starting.
    func start() {
        let starting = state.withLock { s -> pid_t? in s.replaced ? -1 : s.child }
        if let starting {
            logger.warning(starting < 0 ? "SIGUSR2: this convey is already being replaced"
                           : "SIGUSR2: the replacement started before (pid \(starting)) has not taken over yet; not starting another")
            return
        }
        let pid: pid_t
        do {
            pid = try Self.spawn(executable, arguments)
        } catch {
            logger.error("SIGUSR2: cannot start \(executable) to replace this convey: \(error); this one keeps serving")
            return
        }
        state.withLock { $0.child = pid }
        logger.notice("SIGUSR2: started \(executable) (pid \(pid)) to replace this convey: it takes the listening sockets over, then this one stops, its open connections finishing here")
        // Reaped here: a replacement that fails before taking over is said, and this one
        // goes on; one that took over outlives this process.
        Thread.detachNewThread { [self] in
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            let failed = state.withLock { s -> Bool in
                guard s.child == pid, !s.replaced else { return false }
                s.child = nil
                return true
            }
            guard failed else { return }
            let how = status & 0x7f == 0 ? "exited with status \((status >> 8) & 0xff)" : "was killed by signal \(status & 0x7f)"
            logger.error("the replacement (pid \(pid)) \(how) before taking the listening sockets over (its log says why): this convey keeps serving")
        }
    }

    /// The handover server gave the listeners to `pid`: when it is the replacement, this
    /// convey stops as on SIGTERM (open connections finish here). True when it was.
    @discardableResult
    func handedOver(to pid: pid_t) -> Bool {
        let ours = state.withLock { s -> Bool in
            guard s.child == pid, !s.replaced else { return false }
            s.replaced = true
            return true
        }
        guard ours else { return false }
        logger.notice("replaced in place by pid \(pid): stopping")
        kill(getpid(), SIGTERM)
        return true
    }

    struct SpawnFailure: Error, CustomStringConvertible {
        var description: String
    }

    /// Starts `path` with `arguments` and this environment, with default signal handling and
    /// no blocked signal (a trapped or blocked signal would stay so across exec), and no
    /// descriptor of this process but 0–2.
    private static func spawn(_ path: String, _ arguments: [String]) throws(SpawnFailure) -> pid_t {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid = pid_t()
        let rc = cl_spawn_clean(&pid, path, argv)
        guard rc == 0 else { throw SpawnFailure(description: String(cString: strerror(rc))) }
        return pid
    }
}
