import Balancer
import Testing

/// Sends a line on an open connection and returns the reply's server name, or nil when the
/// connection was closed.
func ask(_ client: TestSocket) -> String? {
    guard (try? client.send("?")) != nil else { return nil }
    var reply: [UInt8] = []
    while reply.last != UInt8(ascii: "?") {
        guard let chunk = try? client.receive(exactly: 1), !chunk.isEmpty else { return nil }
        reply += chunk
    }
    return String(decoding: reply.dropLast(2), as: UTF8.self)
}

extension ProxyTests {
    @Suite struct Reload {
        @Test("weight 0 drains a server: its open connections go on, new ones go elsewhere; when its drain ends they close")
        func weightZeroThenDrainExpiry() async throws {
            let a = try TestServer.naming("a"), b = try TestServer.naming("b")
            defer { a.stop(); b.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: a.endpoint), .init(name: "b", address: b.endpoint)])
            let address = try await proxy.start()
            var open: [TestSocket] = []
            for _ in 0..<10 { open.append(try TestSocket.connect(to: address, timeout: 5)) }
            let firstOwners = open.map { ask($0) }
            let onB = zip(open, firstOwners).filter { $0.1 == "b" }.map(\.0)
            let onA = zip(open, firstOwners).filter { $0.1 == "a" }.map(\.0)
            #expect(onB.count >= 2 && onA.count >= 2, "\(firstOwners)")

            // Reload: b gets weight 0.
            proxy.publish([.init(name: "a", address: a.endpoint), .init(name: "b", address: b.endpoint, weight: 0)])
            for _ in 0..<20 { #expect(try whoAnswers(address) == "a") }
            for c in onB { #expect(ask(c) == "b", "a draining server keeps its connections") }
            for c in onA { #expect(ask(c) == "a") }

            // The drain timeout passed: the runtime republishes b with keepsFlows = false.
            proxy.publish([.init(name: "a", address: a.endpoint), .init(name: "b", address: b.endpoint, weight: 0, keepsFlows: false)])
            for c in onB { #expect(["eof", "reset"].contains(c.waitForClose()), "b's connections are closed") }
            for c in onA { #expect(ask(c) == "a", "a's connections are untouched") }
            #expect(await eventually { proxy.counters(server: "b").snapshot().currentConnections == 0 })
            #expect(proxy.counters(server: "a").snapshot().currentConnections == Int64(onA.count))
            try await proxy.stop()
        }

        @Test("a server marked down keeps its connections; with on_down = close (keepsFlows false while down) they are reset, logged as its server being down")
        func serverDownClosesConnections() async throws {
            let a = try TestServer.naming("a"), b = try TestServer.naming("b")
            defer { a.stop(); b.stop() }
            let log = LogLines()
            let proxy = ProxyHarness(servers: [.init(name: "a", address: a.endpoint), .init(name: "b", address: b.endpoint)],
                                     frontend: { $0.logConnections = true }, logger: log.logger())
            let address = try await proxy.start()
            var open: [TestSocket] = []
            for _ in 0..<8 { open.append(try TestSocket.connect(to: address, timeout: 5)) }
            let owners = open.map { ask($0) }
            let onB = zip(open, owners).filter { $0.1 == "b" }.map(\.0)
            let onA = zip(open, owners).filter { $0.1 == "a" }.map(\.0)
            #expect(onB.count >= 2 && onA.count >= 2, "\(owners)")

            // b down, on_down = keep: the runtime keeps its flows.
            proxy.publish([.init(name: "a", address: a.endpoint), .init(name: "b", address: b.endpoint, state: .down)])
            for _ in 0..<10 { #expect(try whoAnswers(address) == "a") }
            for c in onB { #expect(ask(c) == "b", "a down server keeps its connections by default") }

            // on_down = close: the runtime republishes b down with keepsFlows = false.
            proxy.publish([.init(name: "a", address: a.endpoint),
                           .init(name: "b", address: b.endpoint, state: .down, keepsFlows: false, closedWhileDown: true)])
            for c in onB { #expect(["eof", "reset"].contains(c.waitForClose()), "b's connections are closed") }
            for c in onA { #expect(ask(c) == "a", "a's connections are untouched") }
            #expect(await eventually { proxy.counters(server: "b").snapshot().currentConnections == 0 })
            #expect(await eventually { log.all.contains { $0.contains("closed") && $0.contains("connection(s) of servers marked down (on_down = close)") } },
                    "\(log.all)")
            let ends = log.all.filter { $0.hasPrefix("connection ") && $0.contains("its server is down (on_down = close)") }
            #expect(ends.count == onB.count, "one log_connections line per closed connection: \(ends)")
            #expect(!log.all.contains { $0.contains("drain ended") }, "not called a drain: \(log.all)")
            try await proxy.stop()
        }

        @Test("a server removed from the pool loses its connections; a server added takes new ones at once")
        func removeAndAdd() async throws {
            let a = try TestServer.naming("a"), b = try TestServer.naming("b"), c = try TestServer.naming("c")
            defer { a.stop(); b.stop(); c.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: a.endpoint), .init(name: "b", address: b.endpoint)])
            let address = try await proxy.start()
            var open: [TestSocket] = []
            for _ in 0..<8 { open.append(try TestSocket.connect(to: address, timeout: 5)) }
            let owners = open.map { ask($0) }
            #expect(owners.contains("a") && owners.contains("b"))

            // Reload: a is gone, c is new (a sorts first, so every index shifts).
            proxy.publish([.init(name: "b", address: b.endpoint), .init(name: "c", address: c.endpoint)])
            var fresh: [String: Int] = [:]
            for _ in 0..<20 { fresh[try whoAnswers(address) ?? "none", default: 0] += 1 }
            #expect(fresh["a"] == nil)
            #expect(fresh["c", default: 0] >= 8, "\(fresh)")
            for (client, owner) in zip(open, owners) {
                if owner == "a" {
                    #expect(["eof", "reset"].contains(client.waitForClose()))
                } else {
                    #expect(ask(client) == "b", "b's connections survive the index shift")
                }
            }
            #expect(await eventually { proxy.counters(server: "a").snapshot().currentConnections == 0 })
            try await proxy.stop()
        }

        /// A reload that moves a server (same name, new address) while connects to its old
        /// address hang: those clients are not failed at connect_timeout but tried at the new
        /// address, and the old address's failure is not charged to the server.
        @Test("connects in flight to a server a reload moves are retried at its new address")
        func serverMovedWhileConnecting() async throws {
            let silent = try FullListener()
            defer { silent.close() }
            let b = try TestServer.naming("b")
            defer { b.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: silent.endpoint)],
                                     pool: { $0.connectTimeout = .seconds(3) })
            let address = try await proxy.start()
            var clients: [TestSocket] = []
            for _ in 0..<6 { clients.append(try TestSocket.connect(to: address, timeout: 5)) }
            try await Task.sleep(for: .milliseconds(300))
            #expect(b.accepted == 0)
            proxy.publish([.init(name: "a", address: b.endpoint)])
            for client in clients {
                client.setTimeout(2.5)
                #expect(ask(client) == "b", "answered from the new address before connect_timeout")
            }
            #expect(proxy.counters(server: "a").snapshot().connectFailures == 0)
            #expect(proxy.counters().noBackend.load(ordering: .relaxed) == 0)
            for client in clients { client.close() }
            try await proxy.stop()
        }
    }
}
