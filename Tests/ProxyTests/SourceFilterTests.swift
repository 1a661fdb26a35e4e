import Balancer
import Testing

extension ProxyTests {
    /// `allow` / `deny` in proxy mode: checked as each client is accepted.
    @Suite struct SourceLists {
        @Test("a client the lists refuse is reset at once and counted in denied (and logged); a reload that lifts the list admits it")
        func refusedClient() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let log = LogLines()
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                     frontend: {
                                         $0.sources = SourceFilter(allow: [SourceFilter.Prefix("10.0.0.0/8")!])
                                         $0.logConnections = true
                                     }, logger: log.logger())
            let servers = [ProxyHarness.Server(name: "a", address: server.endpoint)]
            let address = try await proxy.start()
            let refused = try TestSocket.connect(to: address, timeout: 5)
            let client = refused.localEndpoint
            try? refused.send("x")
            #expect(["reset", "eof"].contains(refused.waitForClose()))
            refused.close()
            #expect(await eventually { proxy.counters().denied.load(ordering: .relaxed) == 1 })
            #expect(server.accepted == 0)
            #expect(proxy.counters().currentConnections.load(ordering: .relaxed) == 0)
            #expect(await eventually { log.all.contains("connection \(client) -> web: denied (allow/deny); 0.000 s, 0 bytes up, 0 down") },
                    "\(log.all)")

            // Deny lists only, and not this address: admitted.
            proxy.reconfigure { $0.sources = SourceFilter(deny: [SourceFilter.Prefix("127.0.0.2")!]) }
            proxy.publish(servers)
            try await Task.sleep(for: .milliseconds(200))
            let admitted = try TestSocket.connect(to: address, timeout: 5)
            try admitted.send("hi")
            #expect(try admitted.receive(exactly: 2) == Array("hi".utf8))
            admitted.close()

            // Denied by address.
            proxy.reconfigure { $0.sources = SourceFilter(deny: [SourceFilter.Prefix("127.0.0.0/8")!]) }
            proxy.publish(servers)
            try await Task.sleep(for: .milliseconds(200))
            let again = try TestSocket.connect(to: address, timeout: 5)
            try? again.send("x")
            #expect(["reset", "eof"].contains(again.waitForClose()))
            again.close()
            #expect(await eventually { proxy.counters().denied.load(ordering: .relaxed) == 2 })
            #expect(server.accepted == 1)
            try await proxy.stop()
        }
    }
}
