import CXDP
import Foundation
import Glibc

/// A namespace lab built with `lab/lab.sh` for one test: hosts `client`, `lb`, `b1`...`bN`
/// (see the script's header for addresses). Use `Lab.with(backends:_:)`, which always tears the
/// lab down, also when the body throws, and checks that no namespace of it remains.
public final class Lab: Sendable {
    /// The namespace prefix, unique per process and lab (`cv<pid>x<n>`).
    public let prefix: String
    public let backends: Int

    /// `lab/lab.sh` in this package.
    public static let script: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }   // Tests/LabSupport/Lab.swift → package
        return url.appendingPathComponent("lab/lab.sh").path
    }()

    /// The package's root directory.
    public static var packageRoot: String { URL(fileURLWithPath: script).deletingLastPathComponent().deletingLastPathComponent().path }

    private static let counter = LabCounter()

    /// Why a lab operation failed.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    private init(backends: Int) throws {
        prefix = "cv\(getpid())x\(Self.counter.next())"
        self.backends = backends
        let result = try Self.runScript(["up", prefix, String(backends)], timeout: 60)
        guard result.status == 0 else {
            _ = try? Self.runScript(["down", prefix], timeout: 60)
            throw Failure("lab.sh up \(prefix) failed (\(result.status)): \(result.stderr)")
        }
    }

    /// Builds a lab, runs `body`, and always removes the lab. Throws if namespaces remain.
    public static func with<T>(backends: Int = 1, _ body: (Lab) throws -> T) throws -> T {
        let lab = try Lab(backends: backends)
        let value: T
        do {
            value = try body(lab)
        } catch {
            lab.down()
            throw error
        }
        lab.down()
        let left = lab.remainingNamespaces()
        guard left.isEmpty else { throw Failure("lab.sh down \(lab.prefix) left namespaces: \(left)") }
        return value
    }

    /// Removes the lab (idempotent).
    public func down() {
        _ = try? Self.runScript(["down", prefix], timeout: 60)
    }

    /// Namespaces whose name starts with this lab's prefix.
    public func remainingNamespaces() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns")) ?? []
        return names.filter { $0.hasPrefix(prefix + "-") }.sorted()
    }

    /// The namespace name of `host` ("client", "lb", "b1", "br").
    public func namespace(_ host: String) -> String { "\(prefix)-\(host)" }

    // MARK: Commands

    /// The outcome of a command.
    public struct CommandResult: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs `arguments` in `host`, bounded by `timeout` seconds (coreutils `timeout`, KILL 2 s later).
    @discardableResult
    public func run(_ host: String, _ arguments: [String], timeout: Int = 20) throws -> CommandResult {
        try Self.runScript(["exec", prefix, host, "timeout", "-k", "2", String(timeout)] + arguments, timeout: timeout + 10)
    }

    /// Runs a command that must succeed and returns its standard output.
    public func check(_ host: String, _ arguments: [String], timeout: Int = 20) throws -> String {
        let r = try run(host, arguments, timeout: timeout)
        guard r.status == 0 else {
            throw Failure("`\(arguments.joined(separator: " "))` in \(host) exited \(r.status): \(r.stderr)\(r.stdout)")
        }
        return r.stdout
    }

    /// Starts `arguments` in `host` in the background (bounded by `timeout` seconds); its output
    /// goes to a file. Kill it with `BackgroundProcess.kill()`. With `timeout: nil` the command
    /// runs as the spawned process itself (no `timeout` wrapper, so a signal reaches it
    /// directly); it must then bound its own run time.
    public func spawn(_ host: String, _ arguments: [String], timeout: Int? = 60) throws -> BackgroundProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.script)
        let bound = timeout.map { ["timeout", "-k", "2", String($0)] } ?? []
        process.arguments = ["exec", prefix, host] + bound + arguments
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(host)-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try Self.launch(process)
        return BackgroundProcess(process: process, log: log, handle: handle)
    }

    /// Starts `process` from a thread with no blocked signals. A child inherits the signal mask
    /// of the thread that spawns it, and test code runs on dispatch worker threads that block
    /// most signals: started from there, a helper would ignore the SIGTERM meant to stop it.
    static func launch(_ process: Process) throws {
        let box = ResultBox<Void>()
        let thread = Thread {
            defer { box.signal() }
            var empty = sigset_t()
            sigemptyset(&empty)
            pthread_sigmask(SIG_SETMASK, &empty, nil)
            box.result = Result { try process.run() }
        }
        thread.start()
        box.wait()
        try box.result!.get()
    }

    /// Runs `lab.sh` with `arguments` and collects its output and status.
    ///
    /// Spawned with `posix_spawn` and reaped with `waitpid` rather than Foundation's `Process`:
    /// `Process.waitUntilExit` was seen to miss the exit of a short-lived child here and wait
    /// forever. The child starts with every signal unblocked and at its default action.
    static func runScript(_ arguments: [String], timeout: Int) throws -> CommandResult {
        let argv = ["/usr/bin/timeout", "-k", "2", String(timeout), script] + arguments
        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else {
            throw Failure("pipe: \(String(cString: strerror(errno)))")
        }
        // Close-on-exec, so no other child spawned meanwhile keeps a write end open.
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cArguments { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attributes, &cArguments, environ)
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(outPipe[0])
            close(errPipe[0])
            throw Failure("posix_spawn \(argv[0]): \(String(cString: strerror(rc)))")
        }
        let errData = LockedData()
        let errDone = DispatchSemaphore(value: 0)
        let errFD = errPipe[0]
        Thread {
            errData.set(Self.readAll(errFD))
            errDone.signal()
        }.start()
        let outData = Self.readAll(outPipe[0])
        errDone.wait()
        close(outPipe[0])
        close(errPipe[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return CommandResult(status: exit, stdout: String(decoding: outData, as: UTF8.self),
                             stderr: String(decoding: errData.get(), as: UTF8.self))
    }

    /// Reads `fd` to its end.
    static func readAll(_ fd: Int32) -> Data {
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 { data.append(contentsOf: buffer[0..<n]); continue }
            if n < 0 && errno == EINTR { continue }
            return data
        }
    }

    // MARK: Threads in a namespace

    /// Runs `body` on a new thread that has joined `host`'s network namespace (`setns`), so
    /// sockets, interface lookups and libxdp calls made in it happen there. Threads that
    /// `body` starts inherit the namespace.
    public func inNamespace<T>(_ host: String, _ body: @escaping () throws -> T) throws -> T {
        let path = "/var/run/netns/\(namespace(host))"
        let box = ResultBox<T>()
        nonisolated(unsafe) let body = body
        let thread = Thread {
            defer { box.signal() }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                box.result = .failure(Failure("open \(path): \(String(cString: strerror(errno)))"))
                return
            }
            defer { close(fd) }
            let rc = cxdp_setns_net(fd)
            guard rc == 0 else {
                box.result = .failure(Failure("setns(\(path)): \(String(cString: strerror(-rc)))"))
                return
            }
            box.result = Result { try body() }
        }
        thread.start()
        box.wait()
        return try box.result!.get()
    }
}

/// A process started with `Lab.spawn`.
public final class BackgroundProcess: @unchecked Sendable {
    let process: Process
    /// Where its standard output and error go.
    public let log: URL
    let handle: FileHandle

    init(process: Process, log: URL, handle: FileHandle) {
        self.process = process
        self.log = log
        self.handle = handle
    }

    /// Its pid (of `lab.sh`'s exec, which execs into the command: `ip netns exec` then `timeout`).
    public var pid: Int32 { process.processIdentifier }

    public var isRunning: Bool { process.isRunning }

    /// Its exit status (valid once it has ended, e.g. after `kill`).
    public var terminationStatus: Int32 { process.terminationStatus }

    /// Sends `signal` to the process group member we started and waits for it to end.
    public func kill(_ signal: Int32 = SIGTERM) {
        if process.isRunning { Glibc.kill(process.processIdentifier, signal) }
        process.waitUntilExit()
        try? handle.close()
    }

    /// What it printed so far.
    public var output: String {
        (try? String(contentsOf: log, encoding: .utf8)) ?? ""
    }

    deinit {
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: log)
    }
}

/// True when the test process may build labs (root). In CI (`CI=true`) a missing privilege is
/// a failure, not a skip: call `Lab.requireRoot()` and let it throw.
extension Lab {
    public static var canRun: Bool { geteuid() == 0 }

    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Throws in CI when not root; elsewhere returns false (the caller skips, saying why).
    public static func requireRoot() throws -> Bool {
        if canRun { return true }
        if isCI { throw Failure("lab tests need root (network namespaces, XDP); CI=true forbids skipping") }
        return false
    }
}

final class LabCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}

final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data: Data?
    func set(_ d: Data) { lock.lock(); data = d; lock.unlock() }
    func get() -> Data { lock.lock(); defer { lock.unlock() }; return data ?? Data() }
}

final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
    private let done = DispatchSemaphore(value: 0)
    /// Waits until the thread has stored its result.
    func wait() { done.wait() }
    func signal() { done.signal() }
}
