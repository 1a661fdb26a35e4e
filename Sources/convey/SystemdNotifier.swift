#if canImport(Glibc)
import Glibc
#endif

/// systemd's readiness protocol (`sd_notify(3)`): one datagram of `KEY=value` lines to the
/// socket `$NOTIFY_SOCKET` names, for a unit with `Type=notify`. Written by hand: it is one
/// `sendto`, and libsystemd would be a C dependency for it. Without `$NOTIFY_SOCKET` (not run
/// by systemd) every call does nothing.
struct SystemdNotifier: Sendable {
    /// The socket's path (a leading `@` names an abstract socket), or nil.
    let socketPath: String?

    init(environment socketPath: String? = getenv("NOTIFY_SOCKET").map { String(cString: $0) }) {
        self.socketPath = socketPath.flatMap { $0.isEmpty ? nil : $0 }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Sends `lines` (as `READY=1`, `STATUS=...`) in one datagram.
    func notify(_ lines: [String]) throws(Failure) {
        guard let socketPath else { return }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketPath.utf8)
        if path.first == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { throw Failure(description: "NOTIFY_SOCKET is longer than a socket path (\(capacity - 1) bytes)") }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (path.first == 0 ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let message = Array(lines.joined(separator: "\n").utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { a in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), a, length) }
            }
        }
        guard sent == message.count else {
            throw Failure(description: "sending to NOTIFY_SOCKET \(socketPath): \(String(cString: strerror(errno)))")
        }
    }
}

