import Balancer
import Foundation
import Testing

/// One IPv4 TCP socket of this host as `/proc/net/tcp` lists it.
struct KernelSocket {
    var localPort: UInt16
    var remotePort: UInt16
    /// `01`: established.
    var state: String
    /// `02`: the keepalive timer runs; `00`: no timer.
    var timer: String

    /// Every IPv4 TCP socket of this network namespace.
    static func all() throws -> [KernelSocket] {
        // Read to the end with read(2): procfs reports a size of 0, and the table grows with
        // every socket a test run left in TIME_WAIT.
        let fd = open("/proc/net/tcp", O_RDONLY)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            bytes += chunk[..<n]
        }
        let text = String(decoding: bytes, as: UTF8.self)
        return text.split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 5, let local = fields[1].split(separator: ":").last, let remote = fields[2].split(separator: ":").last,
                  let localPort = UInt16(local, radix: 16), let remotePort = UInt16(remote, radix: 16),
                  let timer = fields[5].split(separator: ":").first else { return nil }
            return KernelSocket(localPort: localPort, remotePort: remotePort, state: String(fields[3]), timer: String(timer))
        }
    }
}

extension ProxyTests {
    @Suite struct Keepalive {
        /// The proxy's two sockets of the one connection open to `server`: the one it accepted
        /// (local port: the frontend's) and the one it connected (remote port: the server's).
        static func proxySockets(frontend: UInt16, server: UInt16) throws -> (client: KernelSocket?, server: KernelSocket?) {
            let established = try KernelSocket.all().filter { $0.state == "01" }
            return (established.first { $0.localPort == frontend }, established.first { $0.remotePort == server })
        }

        @Test("tcp_keepalive: the proxy's socket to the client (set on the listener, inherited) and to the server run the kernel's keepalive timer; without it neither does")
        func keepaliveTimers() async throws {
            for seconds in [0, 5] {
                let server = try TestServer.echo()
                defer { server.stop() }
                let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.tcpKeepalive = seconds })
                let address = try await proxy.start()
                let client = try TestSocket.connect(to: address, timeout: 5)
                defer { client.close() }
                try client.send("hi")
                #expect(try client.receive(exactly: 2) == Array("hi".utf8))
                var sockets: (client: KernelSocket?, server: KernelSocket?) = (nil, nil)
                #expect(await eventually {
                    sockets = (try? Self.proxySockets(frontend: address.port, server: server.endpoint.port)) ?? (nil, nil)
                    return sockets.client != nil && sockets.server != nil
                })
                let expected = seconds > 0 ? "02" : "00"
                #expect(sockets.client?.timer == expected, "tcp_keepalive = \(seconds): \(String(describing: sockets.client))")
                #expect(sockets.server?.timer == expected, "tcp_keepalive = \(seconds): \(String(describing: sockets.server))")
                try await proxy.stop()
            }
        }

        @Test("a reload that sets tcp_keepalive applies to the connections that come after it")
        func reloadSetsKeepalive() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], workers: 1)
            let address = try await proxy.start()
            proxy.reconfigure { $0.tcpKeepalive = 7 }
            proxy.publish([.init(name: "a", address: server.endpoint)])
            // The loop adopts the snapshot within a sweep; then a new client's sockets keep alive.
            var timers: (String?, String?) = (nil, nil)
            #expect(await eventually {
                guard let client = try? TestSocket.connect(to: address, timeout: 5) else { return false }
                defer { client.close() }
                guard (try? client.send("x")) != nil, (try? client.receive(exactly: 1)) == Array("x".utf8),
                      let sockets = try? Self.proxySockets(frontend: address.port, server: server.endpoint.port) else { return false }
                timers = (sockets.client?.timer, sockets.server?.timer)
                return timers == ("02", "02")
            }, "\(timers)")
            try await proxy.stop()
        }
    }
}
