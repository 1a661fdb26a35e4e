import Balancer
import Testing

extension ProxyTests {
    @Suite struct Concurrency {
        @Test("1,000 connections open at once each get their own echo, then all close cleanly")
        func thousandConcurrentConnections() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)])
            let address = try await proxy.start()

            var clients: [TestSocket] = []
            for _ in 0..<1000 { clients.append(try TestSocket.connect(to: address)) }
            #expect(await eventually(timeout: 10) { proxy.service.status().openConnections == 1000 })
            #expect(proxy.counters().currentConnections.load(ordering: .relaxed) == 1000)

            for (i, c) in clients.enumerated() { try c.send("hello \(i)\n") }
            for (i, c) in clients.enumerated() {
                let expected = Array("hello \(i)\n".utf8)
                #expect(try c.receive(exactly: expected.count) == expected)
            }
            #expect(server.accepted == 1000)
            // /flows lists every one of them, over both loops; a limit truncates per loop.
            let listing = try await ConnectionListing.list(proxy)
            #expect(listing.matched == 1000 && listing.listed == 1000 && !listing.truncated)
            #expect(Set(listing.rows.compactMap { $0["client"] as? String }).count == 1000)
            #expect(listing.rows.allSatisfy { $0["state"] as? String == "established" && $0["server"] as? String == "pool/a" })
            let limited = try await ConnectionListing.list(proxy, FlowQuery(limit: 10))
            #expect(limited.matched == 1000 && limited.listed <= 20 && limited.listed >= 10 && limited.truncated)
            for c in clients { c.close() }
            #expect(await eventually(timeout: 10) { proxy.service.status().openConnections == 0 })
            let front = proxy.counters().snapshot()
            #expect(front.totalConnections == 1000)
            #expect(front.currentConnections == 0)
            #expect(proxy.counters(server: "a").snapshot().currentConnections == 0)
            #expect(proxy.service.status().pipesInUse == 0)
            try await proxy.stop()
        }
    }
}
