import Balancer
import Testing

extension ProxyTests {
    @Suite struct Timeouts {
        @Test("idle_timeout closes a silent connection and spares a talkative one")
        func idleTimeout() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                     pool: { $0.idleTimeout = .milliseconds(600) })
            let address = try await proxy.start()
            let silent = try TestSocket.connect(to: address, timeout: 5)
            let talkative = try TestSocket.connect(to: address, timeout: 5)
            try silent.send("x")
            #expect(try silent.receive(exactly: 1) == Array("x".utf8))
            let started = ContinuousClock.now
            for _ in 0..<12 {
                try talkative.send("y")
                #expect(try talkative.receive(exactly: 1) == Array("y".utf8))
                try await Task.sleep(for: .milliseconds(150))
            }
            // 1.8 s have passed: the silent one was closed, the talkative one is still served.
            #expect(ContinuousClock.now - started >= .milliseconds(1200))
            #expect(silent.waitForClose() == "eof")
            try talkative.send("z")
            #expect(try talkative.receive(exactly: 1) == Array("z".utf8))
            #expect(proxy.counters().currentConnections.load(ordering: .relaxed) == 1)
            try await proxy.stop()
        }
    }
}
