#if canImport(Glibc)
import Glibc
#endif

/// Samples taken by running another program: a shell script that sets up a lab, a C load
/// generator, iperf3. The program prints its figure on stdout as a `key=<number>` line (the
/// last one counts); its stderr passes through to ours, so its progress and diagnostics stay
/// visible. Every run is bounded by `timeout(1)`.
enum External {
    /// Runs `arguments` (the first looked up in PATH) with at most `timeout` seconds, and
    /// returns what it printed on stdout. Throws `BenchError.commandFailed` on a non-zero
    /// exit (124 when the time ran out).
    static func run(_ arguments: [String], timeout: Int) throws -> String {
        precondition(!arguments.isEmpty, "External.run needs a program")
        let argv = ["timeout", "--kill-after=5", String(timeout)] + arguments
        var pipe: [Int32] = [-1, -1]
        guard Glibc.pipe(&pipe) == 0 else {
            throw BenchError.commandFailed(command: describe(arguments), status: -1, output: "pipe: " + String(cString: strerror(errno)))
        }
        // Our ends must not leak into the child (or into later children): close-on-exec.
        _ = fcntl(pipe[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipe[1], F_SETFD, FD_CLOEXEC)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipe[1], STDOUT_FILENO)
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var pid = pid_t()
        let spawned = posix_spawnp(&pid, "timeout", &actions, nil, cArguments, environ)
        close(pipe[1])
        guard spawned == 0 else {
            close(pipe[0])
            throw BenchError.commandFailed(command: describe(arguments), status: -1,
                                           output: "posix_spawnp: " + String(cString: strerror(spawned)))
        }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(pipe[0], $0.baseAddress, $0.count) }
            if n > 0 { output += chunk[0..<n] } else if n < 0 && errno == EINTR { continue } else { break }
        }
        close(pipe[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = String(decoding: output, as: UTF8.self)
        // WIFEXITED / WEXITSTATUS, which Glibc does not import as functions.
        let exited = status & 0x7f == 0
        let code = exited ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        guard code == 0 else {
            throw BenchError.commandFailed(command: describe(arguments), status: code, output: trimmed(text))
        }
        return text
    }

    /// Runs `arguments` and returns the number of its last `key=<number>` line on stdout.
    static func sample(_ arguments: [String], key: String = "value", timeout: Int) throws -> Double {
        let output = try run(arguments, timeout: timeout)
        guard let value = figure(key, in: output) else {
            throw BenchError.noFigure(command: describe(arguments), key: key, output: trimmed(output))
        }
        return value
    }

    /// Runs `arguments` for its effect, reporting (not throwing) a failure: for `tearDown`.
    static func runIgnoringFailure(_ arguments: [String], timeout: Int) {
        do { _ = try run(arguments, timeout: timeout) } catch { Harness.progress("  cleanup: \(error)") }
    }

    /// The number of the last line `key=<number>` in `output`, nil when there is none.
    static func figure(_ key: String, in output: String) -> Double? {
        var found: Double?
        for line in output.split(separator: "\n") {
            let text = line.drop { $0 == " " }
            guard text.hasPrefix(key + "=") else { continue }
            if let value = Double(text.dropFirst(key.count + 1).prefix { !$0.isWhitespace }) { found = value }
        }
        return found
    }

    static func describe(_ arguments: [String]) -> String {
        arguments.map { $0.contains(" ") ? "'" + $0 + "'" : $0 }.joined(separator: " ")
    }

    static func trimmed(_ text: String) -> String {
        let lines = text.split(separator: "\n")
        return lines.suffix(5).joined(separator: " | ")
    }

    /// Throws `skipped` when not root, or `failed` when `CI=true` (a CI run must not skip).
    static func requireRoot(_ benchmark: String) throws {
        guard geteuid() != 0 else { return }
        let reason = "needs root (network namespaces, XDP); run `sudo make bench`"
        if let ci = getenv("CI"), String(cString: ci) == "true" {
            throw BenchError.failed(benchmark: benchmark, reason: reason + " (CI=true: not skipping)")
        }
        throw BenchError.skipped(reason: reason)
    }
}
