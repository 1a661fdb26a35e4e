#if canImport(Glibc)
import Glibc
#endif
import Balancer
import CLinux
import SystemPackage

/// Typed wrappers over the socket syscalls the proxy loops use, on raw descriptors.
///
/// The loops keep descriptors as plain `Int32` inside their connection slab (no object per
/// socket, no ARC on the data path), so these are free functions over `Int32`. Each turns
/// `errno` into a thrown `Errno`; "would block" is not an error here but a `nil` result, because
/// on a non-blocking, edge-triggered socket it is the normal end of every read and write burst.
enum SocketCalls {
    /// `socket(2)` for TCP, non-blocking and close-on-exec, in `address`'s family.
    static func tcpSocket(for address: IPAddress) throws(Errno) -> Int32 {
        let family = address.isIPv4 ? AF_INET : AF_INET6
        let fd = cl_socket_nonblock(family, Int32(SOCK_STREAM.rawValue))
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        return fd
    }

    /// `setsockopt(2)` with an `int` value.
    static func setOption(_ fd: Int32, level: Int32, name: Int32, value: Int32) throws(Errno) {
        var v = value
        guard setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw Errno(rawValue: errno)
        }
    }

    /// `TCP_NODELAY`: forward small segments at once (a proxy must not add Nagle delays).
    static func setNoDelay(_ fd: Int32) {
        _ = try? setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
    }

    /// TCP keepalive (`tcp_keepalive`): after `idle` seconds of silence the kernel probes the
    /// peer every `idle / 3` seconds (at least 1), and a peer that misses 3 probes ends the
    /// connection with `ETIMEDOUT`; so a vanished peer is found within about twice `idle`.
    /// 0 turns it off (a listener a reload changed). Best effort, like `setNoDelay`. Set on a
    /// listener, it is inherited by the sockets it accepts.
    static func setKeepalive(_ fd: Int32, idle: Int) {
        _ = try? setOption(fd, level: SOL_SOCKET, name: SO_KEEPALIVE, value: idle > 0 ? 1 : 0)
        guard idle > 0 else { return }
        _ = try? setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_KEEPIDLE, value: Int32(idle))
        _ = try? setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_KEEPINTVL, value: Int32(max(1, idle / 3)))
        _ = try? setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_KEEPCNT, value: 3)
    }

    /// `TCP_NOTSENT_LOWAT`: the socket reports writable (and takes more) only while fewer than
    /// `bytes` are queued but not yet sent. Best effort, like `setNoDelay`: without it the proxy
    /// still works, with the kernel's unlimited default.
    static func setNotSentLowWater(_ fd: Int32, bytes: Int) {
        guard bytes > 0 else { return }
        _ = try? setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NOTSENT_LOWAT, value: Int32(clamping: bytes))
    }

    /// `bind(2)`.
    static func bind(_ fd: Int32, to endpoint: Endpoint) throws(Errno) {
        let rc = endpoint.withSockAddr { Glibc.bind(fd, $0, $1) }
        guard rc == 0 else { throw Errno(rawValue: errno) }
    }

    /// `listen(2)`.
    static func listen(_ fd: Int32, backlog: Int32) throws(Errno) {
        guard Glibc.listen(fd, backlog) == 0 else { throw Errno(rawValue: errno) }
    }

    /// `connect(2)` on a non-blocking socket: true when connected at once, false when in
    /// progress (`EINPROGRESS`; completion shows as writability without `EPOLLERR`).
    static func connect(_ fd: Int32, to endpoint: Endpoint) throws(Errno) -> Bool {
        while true {
            let rc = endpoint.withSockAddr { Glibc.connect(fd, $0, $1) }
            if rc == 0 { return true }
            let e = errno
            if e == EINTR { continue }
            if e == EINPROGRESS { return false }
            throw Errno(rawValue: e)
        }
    }

    /// `accept4(2)` with `SOCK_NONBLOCK | SOCK_CLOEXEC`: the new descriptor and the peer's
    /// address, or nil when the queue is empty.
    static func accept(_ fd: Int32, peer: inout sockaddr_storage) throws(Errno) -> Int32? {
        while true {
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let client = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { cl_accept4_nonblock(fd, $0, &length) }
            }
            if client >= 0 { return client }
            let e = errno
            if e == EINTR || e == ECONNABORTED { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw Errno(rawValue: e)
        }
    }

    /// `getsockopt(2)` of an `int` option at `SOL_SOCKET`; nil when the call fails.
    static func socketOption(_ fd: Int32, _ name: Int32) -> Int32? {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, name, &value, &length) == 0 ? value : nil
    }

    /// Whether a listening socket has a client in its accept queue (`poll` with no wait).
    static func hasQueuedClient(_ fd: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) == 1 && entry.revents & Int16(POLLIN) != 0
    }

    /// `fcntl(F_DUPFD_CLOEXEC)`: another descriptor for the same open socket.
    static func duplicate(_ fd: Int32) throws(Errno) -> Int32 {
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { throw Errno(rawValue: errno) }
        return copy
    }

    /// What a socket is, whatever descriptor refers to it (`fstat`'s device and inode): two
    /// descriptors with one identity are copies of one socket. nil when `fstat` fails.
    static func identity(_ fd: Int32) -> SocketIdentity? {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return SocketIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Sets `O_NONBLOCK`. It belongs to the open file description: every process holding the
    /// socket (after a takeover's handover) sees it.
    static func setNonBlocking(_ fd: Int32) throws(Errno) {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { throw Errno(rawValue: errno) }
    }

    /// `getsockopt(SO_ERROR)`: the error a non-blocking connect ended with, or nil.
    static func pendingError(_ fd: Int32) -> Errno? {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) == 0 else { return Errno(rawValue: errno) }
        return value == 0 ? nil : Errno(rawValue: value)
    }

    /// `getsockname(2)`: the local address a socket is bound to.
    static func localEndpoint(_ fd: Int32) -> Endpoint? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return rc == 0 ? Endpoint(sockaddr: storage) : nil
    }

    /// `shutdown(fd, SHUT_WR)`: sends FIN toward the peer once everything queued is sent.
    static func shutdownWrite(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// `close(2)` after `SO_LINGER {1, 0}`: the peer gets a reset instead of a clean FIN, which
    /// is how an error on one side of a proxied connection is passed on to the other.
    static func closeAbortively(_ fd: Int32) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        _ = Glibc.close(fd)
    }

    /// `close(2)`; `EINTR` is not retried (Linux has already released the descriptor).
    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// `write(2)` on a non-blocking descriptor: bytes written, or nil when it would block.
    @inline(__always)
    static func write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) throws(Errno) -> Int? {
        while true {
            let n = Glibc.write(fd, buffer, count)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw Errno(rawValue: e)
        }
    }

    /// `read(2)` on a non-blocking descriptor: bytes read (0 at end of stream), or nil when
    /// nothing is waiting.
    @inline(__always)
    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(Errno) -> Int? {
        while true {
            let n = Glibc.read(fd, buffer, count)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw Errno(rawValue: e)
        }
    }

    /// Copies up to `count` bytes the socket has received without taking them (`MSG_PEEK`):
    /// 0 at end of stream, nil when nothing is there yet.
    static func peek(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(Errno) -> Int? {
        while true {
            let n = Glibc.recv(fd, buffer, count, Int32(MSG_PEEK))
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw Errno(rawValue: e)
        }
    }
}
