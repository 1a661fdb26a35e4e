import Balancer
import Glibc
@testable import Proxy
import SystemPackage
import Testing

extension ProxyTests {
    /// `log_connections`: one line per connection when it ends, saying how.
    @Suite struct ConnectionLog {
        static func lines(_ log: LogLines, about client: Endpoint) -> [String] {
            log.all.filter { $0.hasPrefix("connection \(client) -> ") }
        }

        @Test("logs each connection's client, server, the proxy's own end, duration, bytes and how it ended")
        func logsEnds() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let refused = try TestServer.echo()
            let refusedAddress = refused.endpoint
            refused.stop()
            let log = LogLines()
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                     pool: { $0.idleTimeout = .milliseconds(500) },
                                     frontend: { $0.logConnections = true }, logger: log.logger())
            let address = try await proxy.start()

            // Both sides close: "closed", with the bytes each way.
            let normal = try TestSocket.connect(to: address, timeout: 5)
            try normal.send("hello")
            #expect(try normal.receive(exactly: 5) == Array("hello".utf8))
            let normalClient = normal.localEndpoint
            normal.shutdownWrite()
            #expect(normal.waitForClose() == "eof")
            normal.close()
            #expect(await eventually { !Self.lines(log, about: normalClient).isEmpty })
            let line = try #require(Self.lines(log, about: normalClient).first)
            #expect(line.hasPrefix("connection \(normalClient) -> pool/a \(server.endpoint) via 127.0.0.1:"), "\(line)")
            #expect(line.contains(": closed; ") && line.hasSuffix(" s, 5 bytes up, 5 down"), "\(line)")

            // The client resets: a client error.
            let resetting = try TestSocket.connect(to: address, timeout: 5)
            try resetting.send("x")
            #expect(try resetting.receive(exactly: 1) == Array("x".utf8))
            let resettingClient = resetting.localEndpoint
            resetting.reset()
            #expect(await eventually { !Self.lines(log, about: resettingClient).isEmpty })
            let reset = Self.lines(log, about: resettingClient).first ?? ""
            #expect(reset.contains(": client error: "), "\(reset)")

            // Silent past idle_timeout.
            let silent = try TestSocket.connect(to: address, timeout: 5)
            let silentClient = silent.localEndpoint
            defer { silent.close() }
            #expect(await eventually { !Self.lines(log, about: silentClient).isEmpty })
            #expect(Self.lines(log, about: silentClient).first?.contains(": idle_timeout; ") == true,
                    "\(Self.lines(log, about: silentClient))")

            // Its only server refuses: no server, after one failed connect.
            proxy.publish([.init(name: "gone", address: refusedAddress)])
            try await Task.sleep(for: .milliseconds(200))
            let turned = try TestSocket.connect(to: address, timeout: 5)
            let turnedClient = turned.localEndpoint
            #expect(turned.waitForClose() != "timeout")
            turned.close()
            #expect(await eventually { !Self.lines(log, about: turnedClient).isEmpty })
            let turnedLine = Self.lines(log, about: turnedClient).first ?? ""
            #expect(turnedLine.hasPrefix("connection \(turnedClient) -> web: no server (1 connect(s) failed, the last to \(refusedAddress): Connection refused); ")
                    && turnedLine.hasSuffix(" s, 0 bytes up, 0 down"), "\(turnedLine)")
            try await proxy.stop()
        }

        @Test("no server names the last failed connect: where it went and its error, or that connect_timeout passed")
        func noServerSaysWhy() {
            let server = Endpoint(address: .v4(0x0A00_0003), port: 80)
            #expect(ConnectionEnd.noServer(failedConnects: 2, last: ConnectFailure(server: server, error: .connectionRefused)).description
                    == "no server (2 connect(s) failed, the last to 10.0.0.3:80: Connection refused)")
            #expect(ConnectionEnd.noServer(failedConnects: 1, last: ConnectFailure(server: server, error: nil)).description
                    == "no server (1 connect(s) failed, the last to 10.0.0.3:80: connect_timeout passed)")
            #expect(ConnectionEnd.noServer(failedConnects: 0).description == "no server")
        }

        @Test("a server that resets is a server error; a connection cut because its server left names that server")
        func serverSideEnds() async throws {
            // Answers the first byte, then resets.
            let resetting = try TestServer(name: "resetting") { socket, _ in
                var byte: UInt8 = 0
                if recv(socket.fd, &byte, 1, 0) == 1 { try? socket.send([byte]) }
                usleep(50_000)
                socket.reset()
            }
            defer { resetting.stop() }
            let steady = try TestServer.echo()
            defer { steady.stop() }
            let log = LogLines()
            let proxy = ProxyHarness(servers: [.init(name: "r", address: resetting.endpoint)],
                                     pool: { $0.drainTimeout = .zero },
                                     frontend: { $0.logConnections = true }, workers: 1, logger: log.logger())
            let address = try await proxy.start()
            let c = try TestSocket.connect(to: address, timeout: 5)
            let client = c.localEndpoint
            try c.send("x")
            #expect(try c.receive(exactly: 1) == Array("x".utf8))
            #expect(await eventually { !Self.lines(log, about: client).isEmpty })
            let line = Self.lines(log, about: client).first ?? ""
            #expect(line.contains(" -> pool/r \(resetting.endpoint) via ") && line.contains(": server error: "), "\(line)")
            c.close()

            // Moved to "s"; then "s" leaves the pool (drain_timeout 0): cut, logged as pool/s.
            proxy.publish([.init(name: "s", address: steady.endpoint)])
            try await Task.sleep(for: .milliseconds(200))
            let held = try TestSocket.connect(to: address, timeout: 5)
            defer { held.close() }
            let heldClient = held.localEndpoint
            try held.send("y")
            #expect(try held.receive(exactly: 1) == Array("y".utf8))
            proxy.publish([.init(name: "t", address: steady.endpoint)])
            #expect(await eventually { !Self.lines(log, about: heldClient).isEmpty })
            let cut = Self.lines(log, about: heldClient).first ?? ""
            #expect(cut.hasPrefix("connection \(heldClient) -> pool/s \(steady.endpoint) via ")
                    && cut.contains(": its server or frontend left (drain ended); "), "\(cut)")
            try await proxy.stop()
        }

        @Test("logs nothing per connection without log_connections")
        func quietByDefault() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let log = LogLines()
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], logger: log.logger())
            let address = try await proxy.start()
            let c = try TestSocket.connect(to: address, timeout: 5)
            try c.send("hi")
            #expect(try c.receive(exactly: 2) == Array("hi".utf8))
            c.close()
            #expect(await eventually { proxy.service.status().openConnections == 0 })
            #expect(!log.all.contains { $0.hasPrefix("connection ") }, "\(log.all)")
            try await proxy.stop()
        }
    }
}
