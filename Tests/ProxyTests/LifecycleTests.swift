#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Logging
@testable import Proxy
import ServiceLifecycle
import Testing

extension ProxyTests {
    @Suite struct Lifecycle {
        @Test("a client that resets mid-transfer leaves no descriptor or pipe behind")
        func resetLeavesNoLeak() async throws {
            let server = try TestServer(name: "firehose") { socket, _ in
                let chunk = randomBytes(256 * 1024, seed: 7)
                while (try? socket.send(chunk)) != nil {}
                socket.close()
            }
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], workers: 1)
            let address = try await proxy.start()
            // Warm up so the loop has its pooled pipes, then take the baseline.
            for _ in 0..<2 {
                let c = try TestSocket.connect(to: address)
                _ = try c.receive(exactly: 1000)
                c.reset()
            }
            #expect(await eventually { proxy.service.status().openConnections == 0 })
            let baselineFDs = openDescriptorCount()
            let baselinePooled = proxy.service.status().pipesPooled

            for round in 0..<50 {
                let c = try TestSocket.connect(to: address)
                try c.send(randomBytes(10_000 + round, seed: UInt64(round)))
                _ = try c.receive(exactly: 100_000)
                c.reset()
            }
            #expect(await eventually(timeout: 10) { proxy.service.status().openConnections == 0 })
            #expect(await eventually { proxy.counters(server: "a").snapshot().currentConnections == 0 })
            let status = proxy.service.status()
            #expect(status.pipesInUse == 0)
            // Every descriptor the proxy still holds beyond the baseline is a pooled, empty pipe
            // (two descriptors each); the server's own sockets close once it sees the reset.
            let pooledGrowth = status.pipesPooled - baselinePooled
            #expect(await eventually(timeout: 10) { openDescriptorCount() == baselineFDs + 2 * pooledGrowth },
                    "fds now \(openDescriptorCount()), baseline \(baselineFDs), pooled pipes +\(pooledGrowth)")
            #expect(proxy.counters().totalConnections.load(ordering: .relaxed) == 52)
            try await proxy.stop()
            #expect(await eventually { openDescriptorCount() <= baselineFDs - 2 * baselinePooled })
        }

        @Test("SIGTERM-style graceful shutdown: stop accepting, let open connections finish, then return")
        func gracefulShutdownWaitsForConnections() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], pool: { $0.drainTimeout = .seconds(30) })
            let group = ServiceGroup(configuration: .init(services: [.init(service: proxy.service)], logger: Logger(label: "test")))
            let running = Task { try await group.run() }
            #expect(await eventually { proxy.service.status().listening["web"] != nil })
            let address = proxy.service.status().listening["web"]!
            let open = try TestSocket.connect(to: address)
            try open.send("before")
            #expect(try open.receive(exactly: 6) == Array("before".utf8))

            await group.triggerGracefulShutdown()
            #expect(await eventually { proxy.service.status().loops.allSatisfy(\.draining) })
            #expect(throws: (any Error).self, "no longer accepting") { _ = try TestSocket.connect(to: address, timeout: 2) }
            try open.send("during")
            #expect(try open.receive(exactly: 6) == Array("during".utf8), "an open connection goes on while draining")
            open.shutdownWrite()
            #expect(open.waitForClose() == "eof")
            try await running.value  // returns once the last connection ended
        }

        @Test("graceful shutdown closes what outlives drain_timeout, then returns")
        func gracefulShutdownDrainTimeout() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], pool: { $0.drainTimeout = .milliseconds(500) })
            let group = ServiceGroup(configuration: .init(services: [.init(service: proxy.service)], logger: Logger(label: "test")))
            let running = Task { try await group.run() }
            #expect(await eventually { proxy.service.status().listening["web"] != nil })
            let open = try TestSocket.connect(to: proxy.service.status().listening["web"]!, timeout: 10)
            try open.send("x")
            #expect(try open.receive(exactly: 1) == Array("x".utf8))
            await group.triggerGracefulShutdown()
            #expect(["eof", "reset"].contains(open.waitForClose()), "closed when the drain timeout passed")
            try await running.value
        }

        @Test("a frontend whose address is taken fails to start with an error naming it")
        func bindFailureNamesFrontend() async throws {
            let taken = try TestServer.echo()
            defer { taken.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: taken.endpoint)],
                                     frontend: { $0.listen = taken.endpoint })
            await #expect(throws: ProxyError.bindFailed(frontend: "web", address: taken.endpoint, errno: .addressInUse)) {
                try await proxy.service.run()
            }
            let message = ProxyError.bindFailed(frontend: "web", address: taken.endpoint, errno: .addressInUse).description
            #expect(message.contains("frontend 'web'") && message.contains("\(taken.endpoint)"))
        }

        @Test("an address another convey's SO_REUSEPORT listeners hold is refused, not shared")
        func reusePortListenerIsNotShared() async throws {
            let first = try Listener.bind(frontend: "web", address: Endpoint(address: .v4(0x7F00_0001), port: 0))
            defer { SocketCalls.close(first.fd) }
            // A plain SO_REUSEPORT bind by the same user would succeed and share the traffic.
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                     frontend: { $0.listen = first.address })
            await #expect(throws: ProxyError.bindFailed(frontend: "web", address: first.address, errno: .addressInUse)) {
                try await proxy.service.run()
            }
        }

        @Test("accepted sockets inherit TCP_NODELAY and TCP_NOTSENT_LOWAT from the listener")
        func acceptedSocketsInheritOptions() throws {
            let listener = try Listener.bind(frontend: "web", address: Endpoint(address: .v4(0x7F00_0001), port: 0),
                                             notSentLowWater: 256 * 1024)
            defer { SocketCalls.close(listener.fd) }
            let client = try TestSocket.connect(to: listener.address)
            defer { client.close() }
            var peer = sockaddr_storage()
            var accepted: Int32? = nil
            for _ in 0..<100 where accepted == nil {
                accepted = try SocketCalls.accept(listener.fd, peer: &peer)
                if accepted == nil { usleep(10_000) }
            }
            let fd = try #require(accepted)
            defer { SocketCalls.close(fd) }
            func option(_ name: Int32) -> Int32 {
                var value: Int32 = -1
                var length = socklen_t(MemoryLayout<Int32>.size)
                _ = getsockopt(fd, Int32(IPPROTO_TCP), name, &value, &length)
                return value
            }
            #expect(option(TCP_NODELAY) == 1)
            #expect(option(TCP_NOTSENT_LOWAT) == 256 * 1024)
        }
    }
}
