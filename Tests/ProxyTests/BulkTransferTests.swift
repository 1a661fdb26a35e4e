#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Synchronization
import Testing

extension ProxyTests {
    @Suite struct BulkTransfer {
        static let size = 8 * 1024 * 1024 + 12345

        /// Both sides send a large random stream at once and half-close when done; each must
        /// receive exactly what the other sent, and the connection must end cleanly.
        func exchange(forceCopy: Bool) async throws {
            let fromClient = randomBytes(Self.size, seed: 0xC11E47)
            let fromServer = randomBytes(Self.size + 777, seed: 0x5E7E7)
            let serverGot = Mutex<[UInt8]?>(nil)
            let server = try TestServer(name: "bulk") { socket, _ in
                let sender = TestThread {
                    try? socket.send(fromServer)
                    socket.shutdownWrite()
                }
                var received: [UInt8] = []
                received.reserveCapacity(fromClient.count)
                _ = try? socket.receiveUntilEnd { received.append(contentsOf: $0) }
                sender.join()
                serverGot.withLock { $0 = received }
                socket.close()
            }
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], forceCopy: forceCopy)
            let address = try await proxy.start()

            let client = try TestSocket.connect(to: address, timeout: 30)
            let sender = TestThread {
                try? client.send(fromClient)
                client.shutdownWrite()
            }
            var clientGot: [UInt8] = []
            clientGot.reserveCapacity(fromServer.count)
            try client.receiveUntilEnd { clientGot.append(contentsOf: $0) }
            #expect(sender.join(timeout: 30))
            client.close()

            #expect(await eventually(timeout: 10) { serverGot.withLock { $0 != nil } })
            let got = serverGot.withLock { $0 } ?? []
            #expect(got.count == fromClient.count)
            #expect(got == fromClient, "the server must receive the client's bytes exactly")
            #expect(clientGot.count == fromServer.count)
            #expect(clientGot == fromServer, "the client must receive the server's bytes exactly")

            // Counters: tx is client→server, rx is server→client.
            #expect(await eventually { proxy.counters().currentConnections.load(ordering: .relaxed) == 0 })
            let front = proxy.counters().snapshot()
            #expect(front.bytesTx == Int64(fromClient.count))
            #expect(front.bytesRx == Int64(fromServer.count))
            #expect(front.totalConnections == 1)
            let back = proxy.counters(server: "a").snapshot()
            #expect(back.bytesTx == Int64(fromClient.count))
            #expect(back.bytesRx == Int64(fromServer.count))
            #expect(back.currentConnections == 0)
            let status = proxy.service.status()
            #expect(status.pipesInUse == 0)
            if forceCopy { #expect(status.loops.reduce(0) { $0 + $1.copyFallbacks } == 2) }
            try await proxy.stop()
        }

        @Test("8 MiB each way at once through splice arrive byte-exact, with half-close")
        func spliceExchange() async throws { try await exchange(forceCopy: false) }

        @Test("the read/write fallback moves the same 8 MiB each way byte-exact")
        func copyExchange() async throws { try await exchange(forceCopy: true) }

        @Test("a short request and reply go through the scratch buffer: no pipe is taken")
        func shortExchangeTakesNoPipe() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)])
            let address = try await proxy.start()
            let client = try TestSocket.connect(to: address)
            try client.send("hello, proxy")
            #expect(try client.receive(exactly: 12) == Array("hello, proxy".utf8))
            #expect(await eventually { proxy.service.status().openConnections == 1 })
            let status = proxy.service.status()
            #expect(status.pipesInUse == 0)
            #expect(status.loops.reduce(0) { $0 + $1.copyFallbacks } == 0)
            client.close()
            try await proxy.stop()
        }

        @Test("a stream of small writes to a backend that stops reading arrives byte-exact once it reads again")
        func smallWritesUnderBackpressure() async throws {
            let payload = randomBytes(6 * 1024 * 1024 + 321, seed: 0xBAC4)
            let serverGot = Mutex<[UInt8]?>(nil)
            let server = try TestServer(name: "slow") { socket, _ in
                usleep(500_000)  // let the proxy's writes to this socket back up first
                var received: [UInt8] = []
                _ = try? socket.receiveUntilEnd { received.append(contentsOf: $0) }
                serverGot.withLock { $0 = received }
                socket.close()
            }
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)])
            let address = try await proxy.start()
            let client = try TestSocket.connect(to: address, timeout: 30)
            var offset = 0
            while offset < payload.count {
                let end = min(offset + 1000, payload.count)
                try client.send(Array(payload[offset..<end]))
                offset = end
            }
            client.shutdownWrite()
            _ = try client.receiveUntilEnd()
            client.close()
            #expect(await eventually(timeout: 20) { serverGot.withLock { $0 != nil } })
            #expect(serverGot.withLock { $0 } == payload)
            #expect(await eventually { proxy.service.status().pipesInUse == 0 })
            try await proxy.stop()
        }

        @Test("a client that half-closes still gets the server's whole reply")
        func halfCloseThenReply() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)])
            let address = try await proxy.start()
            let client = try TestSocket.connect(to: address)
            let request = randomBytes(300_000, seed: 42)
            let sender = TestThread { try? client.send(request); client.shutdownWrite() }
            var reply: [UInt8] = []
            try client.receiveUntilEnd { reply.append(contentsOf: $0) }
            sender.join()
            #expect(reply == request)
            try await proxy.stop()
        }
    }
}
