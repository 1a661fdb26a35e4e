#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Foundation

/// A blocking TCP socket for test clients and test servers, with receive/send timeouts so a
/// broken proxy fails a test instead of hanging it.
final class TestSocket: @unchecked Sendable {
    let fd: Int32
    private var closed = false

    init(fd: Int32) { self.fd = fd }

    /// Connects to `endpoint` (blocking), with `timeout` on every later read and write.
    static func connect(to endpoint: Endpoint, timeout: Double = 10) throws -> TestSocket {
        let fd = socket(endpoint.address.isIPv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestError.syscall("socket", errno) }
        let socket = TestSocket(fd: fd)
        socket.setTimeout(timeout)
        let rc = endpoint.withSockAddr { Glibc.connect(fd, $0, $1) }
        guard rc == 0 else { throw TestError.syscall("connect \(endpoint)", errno) }
        return socket
    }

    deinit { close() }

    func setTimeout(_ seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The local address (the client's source address as the proxy sees it).
    var localEndpoint: Endpoint {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Endpoint(sockaddr: storage)!
    }

    /// The peer's address (a server's view of who connected: the proxy's own end).
    var peerEndpoint: Endpoint {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        return Endpoint(sockaddr: storage)!
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestError.syscall("send", errno)
            }
            offset += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Reads exactly `count` bytes (fewer only if the peer ends the stream first).
    func receive(exactly count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress! + got, count - got, 0) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestError.syscall("recv", errno)
            }
            got += n
        }
        return Array(out.prefix(got))
    }

    /// Reads until end of stream, feeding each chunk to `body`; returns the byte count.
    @discardableResult
    func receiveUntilEnd(_ body: (UnsafeRawBufferPointer) -> Void = { _ in }) throws -> Int {
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        var total = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress!, $0.count, 0) }
            if n == 0 { return total }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestError.syscall("recv", errno)
            }
            buffer.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            total += n
        }
    }

    /// What a read sees once the proxy has closed or reset this connection: "eof", "reset",
    /// "timeout" or "data".
    func waitForClose() -> String {
        var byte: UInt8 = 0
        let n = Glibc.recv(fd, &byte, 1, 0)
        if n == 0 { return "eof" }
        if n > 0 { return "data" }
        if errno == ECONNRESET { return "reset" }
        if errno == EAGAIN || errno == EWOULDBLOCK { return "timeout" }
        return "error \(errno)"
    }

    func shutdownWrite() { _ = shutdown(fd, Int32(SHUT_WR)) }

    /// Closes with a reset (`SO_LINGER {1, 0}`).
    func reset() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close()
    }

    func close() {
        if !closed { closed = true; _ = Glibc.close(fd) }
    }
}

enum TestError: Error, CustomStringConvertible {
    case syscall(String, Int32)
    case timeout(String)

    var description: String {
        switch self {
        case .syscall(let what, let e): return "\(what): \(String(cString: strerror(e)))"
        case .timeout(let what): return "timed out waiting for \(what)"
        }
    }
}

/// Starts `body` on a new thread and returns a handle to wait for it.
final class TestThread: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () -> Void) {
        let done = self.done
        Thread.detachNewThread {
            body()
            done.signal()
        }
    }

    /// Waits for the thread to finish, true when it did within `timeout` seconds.
    @discardableResult
    func join(timeout: Double = 60) -> Bool { done.wait(timeout: .now() + timeout) == .success }
}

/// Polls `condition` every 10 ms up to `timeout` seconds.
func eventually(timeout: Double = 5, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be reproduced.
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        let words = raw.count / 8
        let p = raw.baseAddress!
        for i in 0..<words {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            p.storeBytes(of: state, toByteOffset: i * 8, as: UInt64.self)
        }
        for i in (words * 8)..<raw.count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            p.storeBytes(of: UInt8(truncatingIfNeeded: state), toByteOffset: i, as: UInt8.self)
        }
    }
    return out
}

/// Number of open descriptors of this process (`/proc/self/fd`).
func openDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}
