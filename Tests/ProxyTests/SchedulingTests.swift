import Balancer
@testable import Proxy
import SystemPackage
import Testing

/// Opens a connection, sends one line, and returns the name of the server that answered.
func whoAnswers(_ address: Endpoint) throws -> String? {
    let client = try TestSocket.connect(to: address)
    defer { client.close() }
    try client.send("?")
    var reply: [UInt8] = []
    while reply.last != UInt8(ascii: "?") {
        let chunk = try client.receive(exactly: 1)
        if chunk.isEmpty { return nil }
        reply += chunk
    }
    return String(decoding: reply.dropLast(2), as: UTF8.self)
}

extension ProxyTests {
    @Suite struct Scheduling {
        @Test("weights 1:2:3 give each server its share of 600 connections")
        func weightsAreHonoured() async throws {
            let servers = try ["a", "b", "c"].map { try TestServer.naming($0) }
            defer { servers.forEach { $0.stop() } }
            let proxy = ProxyHarness(servers: zip(servers, [1, 2, 3]).map { .init(name: $0.name, address: $0.endpoint, weight: $1) })
            let address = try await proxy.start()
            var order: [String] = []
            for _ in 0..<600 { order.append(try whoAnswers(address) ?? "none") }
            // The 2 loops share one smooth WRR cycle and cursor: whichever loop the kernel hands
            // each client to, the order is nginx's, cycle after cycle.
            let cycle = ["c", "b", "a", "c", "b", "c"]
            #expect(order == Array((0..<100).map { _ in cycle }.joined()), "\(order.prefix(24))")
            let seen = Dictionary(order.map { ($0, 1) }, uniquingKeysWith: +)
            #expect(seen == ["a": 100, "b": 200, "c": 300])
            #expect(proxy.counters(server: "c").snapshot().totalConnections == Int64(seen["c", default: 0]))
            try await proxy.stop()
        }

        @Test("a server that refuses is skipped: every client reaches the next server")
        func retryWhenRefused() async throws {
            let dead = try TestServer.echo()
            dead.stop()  // its port now refuses connections
            let live = try TestServer.naming("live")
            defer { live.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "dead", address: dead.endpoint), .init(name: "live", address: live.endpoint)])
            let address = try await proxy.start()
            for _ in 0..<40 { #expect(try whoAnswers(address) == "live") }
            #expect(proxy.counters(server: "dead").snapshot().connectFailures >= 1)
            #expect(proxy.counters(server: "dead").snapshot().totalConnections == 0)
            #expect(proxy.counters(server: "live").snapshot().totalConnections == 40)
            #expect(proxy.counters().noBackend.load(ordering: .relaxed) == 0)
            try await proxy.stop()
        }

        @Test("when every server refuses before its checks notice, the backups standing by are tried: the client is served")
        func retryReachesStandbyBackups() async throws {
            let dead = try TestServer.echo()
            dead.stop()
            let spare = try TestServer.naming("spare")
            defer { spare.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "dead", address: dead.endpoint),
                                               .init(name: "spare", address: spare.endpoint, state: .standby)])
            let address = try await proxy.start()
            for _ in 0..<10 { #expect(try whoAnswers(address) == "spare") }
            #expect(proxy.counters(server: "spare").snapshot().totalConnections == 10)
            #expect(proxy.counters().noBackend.load(ordering: .relaxed) == 0)
            try await proxy.stop()
        }

        @Test("only errors about the server count toward error_limit, not this host running out of descriptors, memory or ports")
        func errorsThatDescribeTheServer() {
            for e in [Errno.connectionRefused, .noRouteToHost, .networkUnreachable, .timedOut] {
                #expect(EventLoop.describesServer(e), "\(e)")
            }
            for e in [Errno.tooManyOpenFiles, .tooManyOpenFilesInSystem, .noMemory, .noBufferSpace, .addressNotAvailable] {
                #expect(!EventLoop.describesServer(e), "\(e)")
            }
        }

        @Test("when every server refuses, the client is closed at once and counted")
        func allRefuse() async throws {
            let dead1 = try TestServer.echo(), dead2 = try TestServer.echo()
            dead1.stop(); dead2.stop()
            let proxy = ProxyHarness(servers: [.init(name: "x", address: dead1.endpoint), .init(name: "y", address: dead2.endpoint)])
            let address = try await proxy.start()
            let client = try TestSocket.connect(to: address, timeout: 5)
            #expect(client.waitForClose() == "eof")
            #expect(await eventually { proxy.counters().noBackend.load(ordering: .relaxed) == 1 })
            #expect(proxy.counters(server: "x").snapshot().connectFailures == 1)
            #expect(proxy.counters(server: "y").snapshot().connectFailures == 1)
            #expect(await eventually { proxy.counters().currentConnections.load(ordering: .relaxed) == 0 })
            try await proxy.stop()
        }

        @Test("with no server up, a client is closed at once and counted")
        func noServerUp() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, state: .down)])
            let address = try await proxy.start()
            let client = try TestSocket.connect(to: address, timeout: 5)
            #expect(client.waitForClose() == "eof")
            #expect(await eventually { proxy.counters().noBackend.load(ordering: .relaxed) == 1 })
            #expect(server.accepted == 0)
            try await proxy.stop()
        }

        /// As HAProxy's `maxconn`: a client over the limit is not accepted and dropped but waits
        /// in the kernel's accept queue, and is served once a connection closes.
        @Test("max_connections: a client over the limit waits in the queue and is served when a connection closes",
              arguments: [1, 2])
        func maxConnections(workers: Int) async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.maxConnections = 2 },
                                     workers: workers)
            let address = try await proxy.start()
            let first = try TestSocket.connect(to: address), second = try TestSocket.connect(to: address)
            try first.send("1"); try second.send("2")
            #expect(try first.receive(exactly: 1) == Array("1".utf8))
            #expect(try second.receive(exactly: 1) == Array("2".utf8))
            let third = try TestSocket.connect(to: address, timeout: 5)
            try third.send("3")
            #expect(await eventually { proxy.counters().overLimit.load(ordering: .relaxed) == 1 })
            // Waiting: not served, not closed.
            try await Task.sleep(for: .milliseconds(300))
            #expect(server.accepted == 2)
            #expect(proxy.counters().currentConnections.load(ordering: .relaxed) == 2)
            first.close()
            #expect(try third.receive(exactly: 1) == Array("3".utf8))
            #expect(server.accepted == 3)
            #expect(proxy.counters().currentConnections.load(ordering: .relaxed) <= 2)
            #expect(proxy.counters().overLimit.load(ordering: .relaxed) == 1)
            second.close(); third.close()
            #expect(await eventually { proxy.counters().currentConnections.load(ordering: .relaxed) == 0 })
            let fourth = try TestSocket.connect(to: address)
            try fourth.send("4")
            #expect(try fourth.receive(exactly: 1) == Array("4".utf8))
            try await proxy.stop()
        }

        /// Two loops whose queues both hold clients accept at the same moment; together they
        /// still take no more than the limit.
        @Test("max_connections holds exactly when two event loops accept at once")
        func maxConnectionsExactAcrossLoops() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let limit = 5
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                     frontend: { $0.maxConnections = limit }, workers: 2)
            let address = try await proxy.start()
            for round in 0..<3 {
                let before = server.accepted
                var clients: [TestSocket] = []
                for _ in 0..<40 { clients.append(try TestSocket.connect(to: address, timeout: 5)) }
                for (i, client) in clients.enumerated() { try client.send([UInt8(i)]) }
                #expect(await eventually { server.accepted - before >= limit })
                try await Task.sleep(for: .milliseconds(300))
                #expect(server.accepted - before == limit, "round \(round)")
                #expect(proxy.counters().currentConnections.load(ordering: .relaxed) == Int64(limit))
                for client in clients { client.close() }
                // Every waiting client is served once the ones ahead of it close (they were
                // closed too, so each is accepted, connected and ended).
                #expect(await eventually(timeout: 20) {
                    server.accepted - before == clients.count
                        && proxy.counters().currentConnections.load(ordering: .relaxed) == 0
                })
            }
            try await proxy.stop()
        }
    }
}
