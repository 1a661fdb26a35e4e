#if canImport(Glibc)
import Glibc
#endif
import CLinux
import SystemPackage

/// A Unix-domain `SOCK_SEQPACKET` socket in the abstract namespace: the channel a takeover's
/// listener handover runs over. Each message arrives whole and may carry descriptors
/// (`SCM_RIGHTS`). Abstract names belong to the network namespace and leave no file behind.
///
/// Blocking, with receive and send timeouts: it is used on the handover's own thread and at
/// start, never on an event loop. Closed when released.
package final class UnixMessageSocket: Sendable {
    package let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit { _ = Glibc.close(fd) }

    /// Most descriptors one message carries.
    package static let maxDescriptors = Int(CL_MAX_FDS_PER_MESSAGE)

    /// A socket listening on the abstract `name`; `EADDRINUSE` while another process holds it.
    /// Non-blocking: after a takeover two processes share it, and the one that loses a
    /// connection to the other must not block in `accept` (see `accept`).
    package static func listening(on name: String, backlog: Int32 = 8) throws(Errno) -> UnixMessageSocket {
        let socket = try make()
        try setNonBlocking(socket.fd)
        try UnixSocketAddress(abstract: name).withSockaddr { address, length throws(Errno) in
            guard Glibc.bind(socket.fd, address, length) == 0 else { throw Errno(rawValue: errno) }
        }
        guard Glibc.listen(socket.fd, backlog) == 0 else { throw Errno(rawValue: errno) }
        return socket
    }

    /// A socket connected to the abstract `name` (`ECONNREFUSED` when nothing listens there),
    /// whose receives and sends give up after `timeout`.
    package static func connected(to name: String, timeout: Duration) throws(Errno) -> UnixMessageSocket {
        let socket = try make()
        socket.setTimeout(timeout)
        try UnixSocketAddress(abstract: name).withSockaddr { address, length throws(Errno) in
            while Glibc.connect(socket.fd, address, length) != 0 {
                if errno != EINTR { throw Errno(rawValue: errno) }
            }
        }
        return socket
    }

    /// A socket received from another process (`SCM_RIGHTS`), if it is a Unix
    /// `SOCK_SEQPACKET` socket listening on the abstract `name`; nil otherwise (the caller
    /// still owns `fd` then).
    package static func adopting(_ fd: Int32, listeningOn name: String) -> UnixMessageSocket? {
        guard socketOption(fd, SO_DOMAIN) == AF_UNIX,
              socketOption(fd, SO_TYPE) == Int32(SOCK_SEQPACKET.rawValue),
              socketOption(fd, SO_ACCEPTCONN) == 1 else { return nil }
        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let rc = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let offset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        guard rc == 0, Int(length) == offset + 1 + name.utf8.count else { return nil }
        let bound = withUnsafeBytes(of: &address.sun_path) { Array($0[0..<(1 + name.utf8.count)]) }
        guard bound == [0] + Array(name.utf8), (try? setNonBlocking(fd)) != nil else { return nil }
        return UnixMessageSocket(fd: fd)
    }

    /// The next connection, itself blocking with `timeout` on its receives and sends;
    /// `EAGAIN` when none is waiting (another process sharing the socket took it).
    package func accept(timeout: Duration) throws(Errno) -> UnixMessageSocket {
        while true {
            // The accepted socket is blocking (flags are not inherited; the shim's accept4
            // would make it non-blocking); convey never execs, so close-on-exec just after is enough.
            let fd = Glibc.accept(self.fd, nil, nil)
            if fd >= 0 {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                let socket = UnixMessageSocket(fd: fd)
                socket.setTimeout(timeout)
                return socket
            }
            if errno != EINTR { throw Errno(rawValue: errno) }
        }
    }

    /// Waits up to `timeout` for a connection to accept (or an error to report); false when
    /// none came.
    package func waitForConnection(timeout: Duration) -> Bool { waitForInput(timeout: timeout) }

    /// Waits up to `timeout` for a message to receive (or the peer's close); false when
    /// neither came.
    package func waitForMessage(timeout: Duration) -> Bool { waitForInput(timeout: timeout) }

    private func waitForInput(timeout: Duration) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        return Glibc.poll(&entry, 1, milliseconds) > 0
    }

    /// Whether the other end has closed the connection (checked without waiting).
    package var peerHasClosed: Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return Glibc.poll(&entry, 1, 0) > 0 && entry.revents & Int16(POLLHUP | POLLERR) != 0
    }

    /// Sends one message of `bytes` with `descriptors` (at most `maxDescriptors`) attached;
    /// the descriptors stay open here.
    package func send(_ bytes: [UInt8], descriptors: [Int32] = []) throws(Errno) {
        let n = bytes.withUnsafeBytes { buffer in
            descriptors.withUnsafeBufferPointer { fds in
                cl_send_with_fds(fd, buffer.baseAddress, buffer.count, fds.baseAddress, Int32(fds.count))
            }
        }
        guard n == bytes.count else { throw Errno(rawValue: n < 0 ? errno : EMSGSIZE) }
    }

    /// Receives one message (at most `maxBytes`) and the descriptors that came with it, which
    /// the caller owns (close-on-exec). An empty message without descriptors is the peer's close.
    package func receive(maxBytes: Int = 4096) throws(Errno) -> (bytes: [UInt8], descriptors: [Int32]) {
        var buffer = [UInt8](repeating: 0, count: maxBytes)
        var fds = [Int32](repeating: -1, count: Self.maxDescriptors)
        var count: Int32 = 0
        let n = buffer.withUnsafeMutableBytes { b in
            fds.withUnsafeMutableBufferPointer { f in
                cl_recv_with_fds(fd, b.baseAddress, b.count, f.baseAddress, Int32(f.count), &count)
            }
        }
        guard n >= 0 else { throw Errno(rawValue: errno) }
        return (Array(buffer[0..<n]), Array(fds[0..<Int(count)]))
    }

    /// The cookie of the network namespace the socket is in (0: the kernel cannot say).
    package var networkNamespaceCookie: UInt64 { cl_netns_cookie(fd) }

    /// The process at the other end: its pid and user (`SO_PEERCRED`).
    package func peer() throws(Errno) -> (pid: Int32, uid: UInt32) {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        guard cl_peer_credentials(fd, &pid, &uid) == 0 else { throw Errno(rawValue: errno) }
        return (pid, uid)
    }

    private static func setNonBlocking(_ fd: Int32) throws(Errno) {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { throw Errno(rawValue: errno) }
    }

    private static func socketOption(_ fd: Int32, _ option: Int32) -> Int32? {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, option, &value, &length) == 0 ? value : nil
    }

    private static func make() throws(Errno) -> UnixMessageSocket {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        return UnixMessageSocket(fd: fd)
    }

    private func setTimeout(_ timeout: Duration) {
        let (seconds, attoseconds) = timeout.components
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
}
