import Balancer
import CLinux
import Foundation
import Glibc
import Logging
import Synchronization

/// Replaces a convey with a new one, in place, on SIGUSR2 (nginx's binary upgrade, HAProxy's
/// master re-exec): it starts the binary at its path now (an upgraded package's) as
/// `convey ... --takeover`. In proxy mode the new one takes the listening sockets over and,
/// once it listens (and, under systemd, has announced itself as the unit's main process with
/// `MAINPID=`), tells this one to stop with SIGTERM; its open connections finish here. In the
/// AF_XDP modes it takes the interface over (sockets, frames and flows: `XDPTakeover`) and
/// this one stops by itself once it has handed them over.
///
/// The new process is started as this one's sibling (its parent is this one's: the service
/// manager, which then reaps it and sees its exit as the main process's), named to it by
/// `CONVEY_REPLACES=<this pid>` in its environment.
final class InPlaceReplacement: Sendable {
    /// The variable that tells a takeover which convey started it (the one to stop).
    static let replacesVariable = "CONVEY_REPLACES"

    /// The binary to start: an absolute `argv[0]` (systemd passes `ExecStart=`'s path; a
    /// symbolic link there is followed again, to the new release), else this process's
    /// executable as it was at start.
    let executable: String
    /// Its arguments: this convey's, with `--takeover`.
    let arguments: [String]
    private let logger: Logger
    /// Told when a replacement exits while this convey runs (it serves on).
    private let replacementGone: @Sendable (pid_t) -> Void

    private struct State {
        /// The replacement started and still running, and whether it has the listeners.
        var child: pid_t?
        var handedOver = false
    }

    private let state = Mutex(State())
    /// What the replacement takes over, for messages: the listening sockets (proxy mode) or
    /// the interface (the AF_XDP modes).
    private let what: String
    /// The AF_XDP modes: the old convey stops by itself once it has handed over.
    private let stopsItself: Bool

    init(logger: Logger, mode: ConveyMode = .proxy, arguments: [String] = CommandLine.arguments,
         replacementGone: @escaping @Sendable (pid_t) -> Void = { _ in }) {
        self.logger = logger
        what = mode == .proxy ? "the listening sockets" : "the interface (sockets, frames, flows)"
        stopsItself = mode != .proxy
        self.replacementGone = replacementGone
        if let first = arguments.first, first.hasPrefix("/") {
            executable = first
        } else {
            executable = Self.ownPath() ?? arguments.first ?? "convey"
        }
        var rest = Array(arguments.dropFirst())
        if !rest.contains("--takeover") { rest.append("--takeover") }
        self.arguments = rest
    }

    /// This process's executable path ("PATH (deleted)" once replaced on disk: the path is
    /// kept, where the new file now is).
    static func ownPath() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path.hasSuffix(" (deleted)") ? String(path.dropLast(" (deleted)".count)) : path
    }

    /// The convey this one was started to replace (`CONVEY_REPLACES`), if any.
    static func replaced() -> pid_t? {
        getenv(replacesVariable).flatMap { pid_t(String(cString: $0)) }.flatMap { $0 > 1 ? $0 : nil }
    }

    /// SIGUSR2: starts the replacement, unless one is already starting.
    func start() {
        // The new process is made the sibling of this one (CLONE_PARENT), which the first
        // process of a PID namespace cannot do.
        guard getpid() != 1 else {
            logger.error("SIGUSR2: convey runs as the first process of its PID namespace (a container's init), whose siblings nothing would reap: it cannot be replaced in place; start the new one with --takeover beside it (a service manager such as systemd, or tini, as PID 1 makes SIGUSR2 work)")
            return
        }
        let outcome = state.withLock { s -> Result<(pid_t, Int32), SpawnFailure>? in
            guard s.child == nil else { return nil }
            // Spawned under the lock: the handover it asks for cannot be told before `child` is set.
            let result = Result(catching: { () throws(SpawnFailure) in try Self.spawn(executable, arguments) })
            if case .success(let (pid, _)) = result { s.child = pid; s.handedOver = false }
            return result
        }
        switch outcome {
        case nil:
            let pid = state.withLock { $0.child } ?? 0
            logger.warning("SIGUSR2: the replacement started before (pid \(pid)) is still starting or running; not starting another")
        case .failure(let error):
            logger.error("SIGUSR2: cannot start \(executable) to replace this convey: \(error); this one keeps serving")
        case .success(let (pid, pidfd)):
            logger.notice(stopsItself
                ? "SIGUSR2: started \(executable) (pid \(pid)) to replace this convey: it takes \(what) over, and this one stops then"
                : "SIGUSR2: started \(executable) (pid \(pid)) to replace this convey: it takes \(what) over, then tells this one to stop; open connections finish here")
            watch(pid, pidfd)
        }
    }

    /// The handover server gave the listeners to `pid`: said when it is the replacement.
    func handedOver(to pid: pid_t) {
        let ours = state.withLock { s -> Bool in
            guard s.child == pid else { return false }
            s.handedOver = true
            return true
        }
        if ours {
            logger.notice(stopsItself ? "handed \(what) to the replacement (pid \(pid))"
                          : "handed \(what) to the replacement (pid \(pid)); it tells this one to stop once it listens")
        }
    }

    /// Waits for the replacement's exit on a thread of its own: one that exits while this
    /// convey still runs (it would have been told to stop otherwise) is said, and this one
    /// serves on.
    private func watch(_ pid: pid_t, _ pidfd: Int32) {
        Thread.detachNewThread { [self] in
            var entry = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            while poll(&entry, 1, -1) < 0 && errno == EINTR {}
            close(pidfd)
            let handed = state.withLock { s -> Bool? in
                guard s.child == pid else { return nil }
                s.child = nil
                return s.handedOver
            }
            guard let handed else { return }
            replacementGone(pid)
            if handed && stopsItself {
                logger.error("the replacement (pid \(pid)) exited after taking \(what) over (its log says why)")
                return
            }
            logger.error(handed
                ? "the replacement (pid \(pid)) exited after taking \(what) over, before it told this one to stop (its log says why): this convey keeps serving on them"
                : "the replacement (pid \(pid)) exited before taking \(what) over (its log says why): this convey keeps serving")
        }
    }

    struct SpawnFailure: Error, CustomStringConvertible {
        var description: String
    }

    /// Starts `path` with `arguments` and this environment plus `CONVEY_REPLACES` (see
    /// `cl_spawn_sibling`); returns its pid and a pidfd for it.
    private static func spawn(_ path: String, _ arguments: [String]) throws(SpawnFailure) -> (pid_t, Int32) {
        var environment: [String] = []
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            if !text.hasPrefix(replacesVariable + "=") { environment.append(text) }
            index += 1
        }
        environment.append("\(replacesVariable)=\(getpid())")
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer { for a in argv + envp { free(a) } }
        var pidfd: Int32 = -1
        var execErrno: Int32 = 0
        let pid = cl_spawn_sibling(path, argv, envp, &pidfd, &execErrno)
        guard pid > 0 else { throw SpawnFailure(description: String(cString: strerror(errno))) }
        guard execErrno == 0 else {
            close(pidfd)
            throw SpawnFailure(description: String(cString: strerror(execErrno)))
        }
        return (pid, pidfd)
    }
}
