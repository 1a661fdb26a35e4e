import Foundation
import Glibc
import LabSupport
import Synchronization

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
