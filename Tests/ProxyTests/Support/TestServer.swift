#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Foundation
import Synchronization

/// A backend on loopback: a blocking listener whose every accepted connection runs `handler`
/// on a thread of its own. Counts the connections it accepted and can close them all (a server
/// going away) or stop listening (a server that refuses).
final class TestServer: Sendable {
    let endpoint: Endpoint
    let name: String
    private let listenFD: Int32
    private let connections = Mutex<[TestSocket]>([])
    private let acceptedCount = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)

    /// Connections accepted so far.
    var accepted: Int { acceptedCount.load(ordering: .relaxed) }

    init(name: String = "server", handler: @escaping @Sendable (TestSocket, TestServer) -> Void) throws {
        self.name = name
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestError.syscall("socket", errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let any = Endpoint(address: .v4(0x7F00_0001), port: 0)
        guard any.withSockAddr({ bind(fd, $0, $1) }) == 0, listen(fd, 4096) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw TestError.syscall("bind/listen", e)
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        endpoint = Endpoint(sockaddr: storage)!
        listenFD = fd
        Thread.detachNewThread { [self] in
            while !stopped.load(ordering: .relaxed) {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return
                }
                if stopped.load(ordering: .relaxed) { Glibc.close(client); return }
                acceptedCount.wrappingAdd(1, ordering: .relaxed)
                let socket = TestSocket(fd: client)
                socket.setTimeout(20)
                connections.withLock { $0.append(socket) }
                Thread.detachNewThread { handler(socket, self) }
            }
        }
    }

    deinit { stop() }

    /// Stops listening (later connects are refused) and closes every connection it holds.
    func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        shutdown(listenFD, Int32(SHUT_RDWR))
        Glibc.close(listenFD)
        let open = connections.withLock { list in
            defer { list.removeAll() }
            return list
        }
        for c in open { shutdown(c.fd, Int32(SHUT_RDWR)) }
    }

    // MARK: - Handlers

    /// Echoes everything back; on end of stream, ends its own side too.
    static func echo(name: String = "echo") throws -> TestServer {
        try TestServer(name: name) { socket, _ in
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress!, $0.count, 0) }
                if n <= 0 { break }
                if (try? socket.send(Array(buffer[0..<n]))) == nil { break }
            }
            socket.shutdownWrite()
        }
    }

    /// Echoes with its name in front of each reply, so a client can tell which server it reached.
    static func naming(_ name: String) throws -> TestServer {
        try TestServer(name: name) { socket, server in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress!, $0.count, 0) }
                if n <= 0 { break }
                if (try? socket.send(Array("\(server.name):".utf8) + buffer[0..<n])) == nil { break }
            }
            socket.shutdownWrite()
        }
    }
}
