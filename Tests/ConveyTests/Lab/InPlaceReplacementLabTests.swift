import Foundation
import Glibc
import LabSupport
import Synchronization
import Testing

/// The datagrams a service manager would get on `$NOTIFY_SOCKET` (`sd_notify`), collected
/// by a thread until `close()`.
final class NotifyListener: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let received = Mutex<[String]>([])
    private let stopping = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)

    init() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("convey-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw LabClient.Failure(description: "notify socket: \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        self.path = path
        self.fd = fd
        // Holds the listener until `close()` ends the thread.
        let reader = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            defer { self.stopped.store(true, ordering: .releasing) }
            while !self.stopping.load(ordering: .relaxed) {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n > 0 { self.received.withLock { $0.append(String(decoding: buffer[0..<n], as: UTF8.self)) } }
                if n < 0 && errno != EAGAIN && errno != EINTR { return }
                if n == 0 { return }
            }
        }
        reader.start()
    }

    /// Every message so far, in order.
    var messages: [String] { received.withLock { $0 } }

    /// Stops the reader (within its 200 ms receive timeout), then closes the socket.
    func close() {
        stopping.store(true, ordering: .relaxed)
        _ = waitUntil(seconds: 2) { stopped.load(ordering: .acquiring) }
        Glibc.close(fd)
        unlink(path)
    }
}

extension EndToEndLabTests {
    @Test("proxy mode with a notification socket (systemd's protocol): READY=1 once it listens; SIGUSR2 starts the binary again with --takeover as the old one's sibling, which takes the listening sockets over, announces MAINPID=itself and only then stops the old one (exit 0); a steady client load sees no failure; a replacement that cannot start is said, and the old one serves on")
    func proxyReplacedInPlace() throws {
        guard try labAvailable("proxyReplacedInPlace") else { return }
        let notify = try NotifyListener()
        defer { notify.close() }
        let config = Self.proxyLabConfig(fall: 3) + "[proxy]\nworkers = 2\n"
        try ProxyLab.with(config: config, wrapper: ["env", "NOTIFY_SOCKET=\(notify.path)"]) { lab, old, path in
            #expect(waitUntil(seconds: 10) { notify.messages.contains { $0.hasPrefix("READY=1\nSTATUS=proxy mode: 1 frontend(s) listening") } },
                    "\(notify.messages) \(old.output)")
            #expect(waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }) != nil })

            // A replacement that fails (the file became invalid meanwhile): said, and the old one serves on.
            try "[frontends.web\n".write(toFile: path, atomically: true, encoding: .utf8)
            kill(old.pid, SIGUSR2)
            #expect(waitUntil(seconds: 10) { old.output.contains("exited before taking the listening sockets over") },
                    "\(old.output)")
            #expect(old.isRunning)
            try config.write(toFile: path, atomically: true, encoding: .utf8)
            #expect(try lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }.name == "b1")

            let (tally, load) = Self.clientLoad(lab)
            defer {
                tally.stop.store(true, ordering: .relaxed)
                while !load.isFinished { usleep(10_000) }
            }
            #expect(waitUntil(seconds: 5) { tally.served.load(ordering: .relaxed) >= 50 })
            kill(old.pid, SIGUSR2)
            var replacement: pid_t?
            #expect(waitUntil(seconds: 10) {
                replacement = notify.messages.lazy.compactMap { m -> pid_t? in
                    guard m.contains("READY=1"), let line = m.split(separator: "\n").first(where: { $0.hasPrefix("MAINPID=") }) else { return nil }
                    return pid_t(line.dropFirst("MAINPID=".count))
                }.first
                return replacement != nil
            }, "\(notify.messages) \(old.output)")
            let new = try #require(replacement)
            #expect(new != old.pid)
            // Its parent is the old one's (the service manager's child, reaped by it), not the old one.
            let parent = (try? String(contentsOfFile: "/proc/\(new)/stat", encoding: .utf8))?.split(separator: " ").dropFirst(3).first
            #expect(parent.flatMap { pid_t($0) } != old.pid, "parent \(String(describing: parent))")
            #expect(waitUntil(seconds: 15) { old.exitStatus != nil }, "the old convey is told to stop: \(old.output)")
            #expect(old.exitStatus == 0, "\(old.output)")
            #expect(old.output.contains("handed the listening sockets to the replacement (pid \(new))"), "\(old.output)")
            #expect(old.output.contains("took over frontend web's 2 listening socket(s) at 10.77.0.2:8000"), "the replacement's log: \(old.output)")
            #expect(old.output.contains("takeover: telling the convey this one replaces (pid \(old.pid)) to stop (SIGTERM)"), "\(old.output)")
            #expect(!notify.messages.contains { $0.contains("STOPPING=1") }, "no convey tells the unit it stops: \(notify.messages)")
            let atExit = tally.served.load(ordering: .relaxed)
            #expect(waitUntil(seconds: 5) { tally.served.load(ordering: .relaxed) >= atExit + 100 }, "served by the replacement")
            tally.stop.store(true, ordering: .relaxed)
            while !load.isFinished { usleep(10_000) }
            let failures = tally.failures.withLock { $0 }
            #expect(failures.isEmpty, "\(failures.count) of \(tally.served.load(ordering: .relaxed) + failures.count) clients failed: \(Set(failures))")

            // The replacement is the one running now: SIGTERM stops it, and it says so.
            kill(new, SIGTERM)
            #expect(waitUntil(seconds: 15) {
                let state = (try? String(contentsOfFile: "/proc/\(new)/stat", encoding: .utf8))?.split(separator: " ").dropFirst(2).first
                return state == nil || state == "Z"
            }, "the replacement stops on SIGTERM")
        }
    }
}
