#if canImport(Glibc)
import Glibc
#endif
import Balancer
import SystemPackage

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
        let address: UnixSocketAddress
        do throws(Errno) {
            address = try UnixSocketAddress(notifySocket: socketPath)
        } catch {
            throw Failure(description: "NOTIFY_SOCKET \(socketPath): \(error)")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let message = Array(lines.joined(separator: "\n").utf8)
        let sent = address.withSockaddr { a, length in
            message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), a, length) }
        }
        guard sent == message.count else {
            throw Failure(description: "sending to NOTIFY_SOCKET \(socketPath): \(String(cString: strerror(errno)))")
        }
    }
}

