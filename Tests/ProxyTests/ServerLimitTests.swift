import Balancer
import Foundation
import Glibc
@testable import Proxy
import Synchronization
import Testing

extension ProxyTests {
    /// A server's `max_connections`: its connections stay under the limit over every loop, and
    /// clients over it wait, accepted, for a place (`queue_timeout`), as HAProxy's server
    /// `maxconn` and queue do.
    @Suite(.serialized) struct ServerLimit {
        /// An echo server that counts its open connections and the most it had at once.
        final class Occupancy: Sendable {
            let open = Atomic<Int>(0)
            let peak = Atomic<Int>(0)

            func server() throws -> TestServer {
                try TestServer(name: "counting") { socket, _ in
                    let now = self.open.wrappingAdd(1, ordering: .relaxed).newValue
                    var seen = self.peak.load(ordering: .relaxed)
                    while now > seen {
                        let (done, original) = self.peak.compareExchange(expected: seen, desired: now, ordering: .relaxed)
                        if done { break }
                        seen = original
                    }
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    while true {
                        let n = buffer.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress!, $0.count, 0) }
                        if n <= 0 { break }
                        try? socket.send(Array(buffer[0..<n]))
                    }
                    self.open.wrappingSubtract(1, ordering: .relaxed)
                    socket.close()
                }
            }
        }

        static func queued(_ proxy: ProxyHarness) -> Int64 { proxy.counters().queued.load(ordering: .relaxed) }

        /// A client of `address` that sent `byte` and had it echoed: it holds a server place.
        static func served(at address: Endpoint, _ byte: String) throws -> TestSocket {
            let client = try TestSocket.connect(to: address, timeout: 5)
            try client.send(byte)
            #expect(try client.receive(exactly: byte.utf8.count) == Array(byte.utf8))
            return client
        }

        @Test("a client over a server's max_connections waits, accepted, and is served when a connection closes",
              arguments: [1, 2])
        func waitsForAPlace(workers: Int) async throws {
            let occupancy = Occupancy()
            let server = try occupancy.server()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, maxConnections: 2)],
                                     pool: { $0.queueTimeout = .seconds(30) }, workers: workers)
            let address = try await proxy.start()
            let first = try TestSocket.connect(to: address, timeout: 5), second = try TestSocket.connect(to: address, timeout: 5)
            try first.send("1"); try second.send("2")
            #expect(try first.receive(exactly: 1) == Array("1".utf8))
            #expect(try second.receive(exactly: 1) == Array("2".utf8))
            // The third is accepted (its bytes are taken) but waits: the server never sees it.
            let third = try TestSocket.connect(to: address, timeout: 5)
            try third.send("3")
            #expect(await eventually { Self.queued(proxy) == 1 })
            let listing = try await ConnectionListing.list(proxy)
            let waiting = listing.rows.filter { $0["state"] as? String == "queued" }
            #expect(waiting.count == 1 && waiting.first?["server"] is NSNull && waiting.first?["backend"] is NSNull,
                    "\(listing.rows)")
            try await Task.sleep(for: .milliseconds(300))
            #expect(server.accepted == 2)
            #expect(proxy.counters(server: "a").placesTaken.load(ordering: .relaxed) == 2)
            first.close()
            #expect(try third.receive(exactly: 1) == Array("3".utf8))
            #expect(Self.queued(proxy) == 0)
            #expect(occupancy.peak.load(ordering: .relaxed) <= 2)
            #expect(proxy.counters().queueTimeouts.load(ordering: .relaxed) == 0)
            #expect(proxy.counters().noBackend.load(ordering: .relaxed) == 0)
            second.close(); third.close()
            #expect(await eventually { proxy.counters(server: "a").placesTaken.load(ordering: .relaxed) == 0 })
            try await proxy.stop()
        }

        /// Two loops connecting at once never hold more than the limit together, and every
        /// waiting client is served in the end, whichever loop holds it. (Which loop takes a
        /// client is the kernel's choice, so this does not prove a place freed in one loop
        /// serves a client of the other: the 100 ms sweep would serve it too.)
        @Test("the limit holds across two event loops, and every waiting client is served as places free")
        func exactAcrossLoops() async throws {
            let occupancy = Occupancy()
            let server = try occupancy.server()
            defer { server.stop() }
            let limit = 3
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, maxConnections: limit)],
                                     pool: { $0.queueTimeout = .seconds(30) }, workers: 2)
            let address = try await proxy.start()
            var clients: [TestSocket] = []
            for _ in 0..<24 { clients.append(try TestSocket.connect(to: address, timeout: 10)) }
            for (i, client) in clients.enumerated() { try client.send([UInt8(i)]) }
            #expect(await eventually { server.accepted == limit && Self.queued(proxy) == Int64(clients.count - limit) })
            // Each client is answered in turn as the ones served before it close.
            var served = 0
            var pending = clients
            let deadline = ContinuousClock.now + .seconds(30)
            while !pending.isEmpty && ContinuousClock.now < deadline {
                var next: [TestSocket] = []
                for client in pending {
                    client.setTimeout(0.05)
                    var byte: UInt8 = 0
                    if Glibc.recv(client.fd, &byte, 1, 0) == 1 {
                        served += 1
                        client.close()
                    } else {
                        next.append(client)
                    }
                }
                pending = next
            }
            #expect(served == clients.count)
            #expect(occupancy.peak.load(ordering: .relaxed) <= limit)
            #expect(server.accepted == clients.count)
            #expect(await eventually { Self.queued(proxy) == 0 && proxy.counters().currentConnections.load(ordering: .relaxed) == 0 })
            #expect(proxy.counters(server: "a").placesTaken.load(ordering: .relaxed) == 0)
            for client in pending { client.close() }
            try await proxy.stop()
        }

        @Test("a client still waiting after queue_timeout is closed, counted and logged")
        func queueTimeout() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let log = LogLines()
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, maxConnections: 1)],
                                     pool: { $0.queueTimeout = .milliseconds(300) }, frontend: { $0.logConnections = true },
                                     workers: 1, logger: log.logger())
            let address = try await proxy.start()
            let holder = try Self.served(at: address, "h")
            let waiter = try TestSocket.connect(to: address, timeout: 5)
            let waiterAddress = waiter.localEndpoint
            try waiter.send("w")
            let started = ContinuousClock.now
            // Closed with its bytes unread: the kernel resets it, which tells the client that
            // nothing was served.
            #expect(waiter.waitForClose() == "reset")
            #expect(ContinuousClock.now - started >= .milliseconds(250))
            #expect(await eventually { proxy.counters().queueTimeouts.load(ordering: .relaxed) == 1 && Self.queued(proxy) == 0 })
            #expect(await eventually { !ConnectionLog.lines(log, about: waiterAddress).isEmpty })
            let line = ConnectionLog.lines(log, about: waiterAddress).first ?? ""
            #expect(line.hasPrefix("connection \(waiterAddress) -> web: queue_timeout"), "\(line)")
            #expect(server.accepted == 1)
            waiter.close()
            // The one connection holding the place is untouched.
            try holder.send("again")
            #expect(try holder.receive(exactly: 5) == Array("again".utf8))
            holder.close()
            try await proxy.stop()
        }

        @Test("past max_queue waiting clients a new one is closed at once, counted and logged; the waiting ones keep their turn",
              arguments: [1, 2])
        func queueFull(workers: Int) async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let log = LogLines()
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, maxConnections: 1)],
                                     pool: { $0.queueTimeout = .seconds(30); $0.maxQueue = 2 },
                                     frontend: { $0.logConnections = true }, workers: workers, logger: log.logger())
            let address = try await proxy.start()
            let holder = try Self.served(at: address, "h")
            let first = try TestSocket.connect(to: address, timeout: 5)
            try first.send("1")
            #expect(await eventually { Self.queued(proxy) == 1 })
            let second = try TestSocket.connect(to: address, timeout: 5)
            try second.send("2")
            #expect(await eventually { Self.queued(proxy) == 2 })
            // The third finds two waiting: closed at once (a reset when its byte had arrived), not held.
            let third = try TestSocket.connect(to: address, timeout: 5)
            let thirdAddress = third.localEndpoint
            try? third.send("3")
            #expect(["eof", "reset"].contains(third.waitForClose()))
            #expect(await eventually { proxy.counters().queueFull.load(ordering: .relaxed) == 1 })
            #expect(Self.queued(proxy) == 2)
            #expect(await eventually { !ConnectionLog.lines(log, about: thirdAddress).isEmpty })
            let line = ConnectionLog.lines(log, about: thirdAddress).first ?? ""
            #expect(line.hasPrefix("connection \(thirdAddress) -> web: max_queue"), "\(line)")
            // The waiting ones are served in turn as places free (with two loops, the one whose
            // loop freed the place may go first: which loop took which client is the kernel's choice).
            holder.close()
            var waiting = [(first, UInt8(ascii: "1")), (second, UInt8(ascii: "2"))]
            let deadline = ContinuousClock.now + .seconds(20)
            while !waiting.isEmpty && ContinuousClock.now < deadline {
                for (k, (client, byte)) in waiting.enumerated() {
                    client.setTimeout(0.05)
                    var got: UInt8 = 0
                    if Glibc.recv(client.fd, &got, 1, 0) == 1 {
                        #expect(got == byte)
                        client.close()
                        waiting.remove(at: k)
                        break
                    }
                }
            }
            #expect(waiting.isEmpty, "every waiting client was served")
            #expect(await eventually { Self.queued(proxy) == 0 })
            #expect(proxy.counters().queueTimeouts.load(ordering: .relaxed) == 0)
            #expect(server.accepted == 3)
            for (client, _) in waiting { client.close() }
            third.close()
            try await proxy.stop()
        }

        @Test("log_connections says how long a client served after waiting waited")
        func logsTheWait() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let log = LogLines()
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, maxConnections: 1)],
                                     pool: { $0.queueTimeout = .seconds(30) }, frontend: { $0.logConnections = true },
                                     workers: 1, logger: log.logger())
            let address = try await proxy.start()
            let holder = try Self.served(at: address, "h")
            let waiter = try TestSocket.connect(to: address, timeout: 5)
            let waiterAddress = waiter.localEndpoint
            try waiter.send("w")
            #expect(await eventually { Self.queued(proxy) == 1 })
            try await Task.sleep(for: .milliseconds(300))
            holder.close()
            #expect(try waiter.receive(exactly: 1) == Array("w".utf8))
            // Open a while after it was served: the line gives the wait, not the whole life.
            try await Task.sleep(for: .milliseconds(500))
            waiter.close()
            #expect(await eventually { !ConnectionLog.lines(log, about: waiterAddress).isEmpty })
            let line = ConnectionLog.lines(log, about: waiterAddress).first ?? ""
            let waited = line.range(of: ", waited ").map { line[$0.upperBound...].prefix { $0 != " " } }.flatMap { Double($0) }
            let lasted = line.range(of: ": closed; ").map { line[$0.upperBound...].prefix { $0 != " " } }.flatMap { Double($0) }
            #expect(line.hasSuffix(" s for a place"), "\(line)")
            #expect((waited ?? 0) >= 0.25 && (waited ?? 9) <= (lasted ?? 0) - 0.4, "\(line)")
            try await proxy.stop()
        }

        @Test("a server at its limit is passed over for one with a place: nobody waits")
        func spillsToAServerWithAPlace() async throws {
            let a = try TestServer.naming("a"), b = try TestServer.naming("b")
            defer { a.stop(); b.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: a.endpoint, maxConnections: 1),
                                               .init(name: "b", address: b.endpoint)], workers: 1)
            let address = try await proxy.start()
            var clients: [TestSocket] = []
            for _ in 0..<6 {
                let c = try TestSocket.connect(to: address, timeout: 5)
                try c.send("?")
                #expect(try c.receive(exactly: 1).count == 1)
                clients.append(c)
            }
            #expect(a.accepted == 1 && b.accepted == 5)
            #expect(Self.queued(proxy) == 0)
            #expect(proxy.counters(server: "a").connectFailures.load(ordering: .relaxed) == 0)
            for c in clients { c.close() }
            try await proxy.stop()
        }

        @Test("a backup standing by does not take the clients of a server at its limit")
        func backupsStandBy() async throws {
            let a = try TestServer.naming("a"), backup = try TestServer.naming("z")
            defer { a.stop(); backup.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: a.endpoint, maxConnections: 1),
                                               .init(name: "z", address: backup.endpoint, state: .standby)],
                                     pool: { $0.queueTimeout = .seconds(30) }, workers: 1)
            let address = try await proxy.start()
            let first = try TestSocket.connect(to: address, timeout: 5)
            try first.send("?")
            #expect(try first.receive(exactly: 1) == Array("a".utf8))
            let second = try TestSocket.connect(to: address, timeout: 5)
            try second.send("?")
            #expect(await eventually { Self.queued(proxy) == 1 })
            try await Task.sleep(for: .milliseconds(200))
            #expect(backup.accepted == 0)
            first.close()
            #expect(try second.receive(exactly: 1) == Array("a".utf8))
            second.close()
            try await proxy.stop()
        }

        @Test("a client that resets while waiting leaves the queue; it never reaches the server")
        func resetWhileWaiting() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, maxConnections: 1)],
                                     pool: { $0.queueTimeout = .seconds(30) }, workers: 1)
            let address = try await proxy.start()
            let holder = try Self.served(at: address, "h")
            let leaving = try TestSocket.connect(to: address, timeout: 5)
            try leaving.send("l")
            #expect(await eventually { Self.queued(proxy) == 1 })
            leaving.reset()
            #expect(await eventually { Self.queued(proxy) == 0 && proxy.counters().currentConnections.load(ordering: .relaxed) == 1 })
            holder.close()
            let next = try Self.served(at: address, "n")
            #expect(server.accepted == 2)
            next.close()
            try await proxy.stop()
        }

        @Test("a reload that lifts the limit serves the waiting clients at once")
        func reloadLiftsTheLimit() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, maxConnections: 1)],
                                     pool: { $0.queueTimeout = .seconds(30) }, workers: 2)
            let address = try await proxy.start()
            let holder = try Self.served(at: address, "h")
            var waiting: [TestSocket] = []
            for i in 0..<4 {
                let c = try TestSocket.connect(to: address, timeout: 5)
                try c.send([UInt8(48 + i)])
                waiting.append(c)
            }
            #expect(await eventually { Self.queued(proxy) == 4 })
            proxy.publish([.init(name: "a", address: server.endpoint, maxConnections: 0)])
            for (i, c) in waiting.enumerated() { #expect(try c.receive(exactly: 1) == [UInt8(48 + i)]) }
            #expect(Self.queued(proxy) == 0)
            for c in waiting { c.close() }
            holder.close()
            try await proxy.stop()
        }

        @Test("waiting clients are closed as having no server when every server leaves selection")
        func noServerLeft() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, maxConnections: 1)],
                                     pool: { $0.queueTimeout = .seconds(30) }, workers: 1)
            let address = try await proxy.start()
            let holder = try Self.served(at: address, "h")
            let waiter = try TestSocket.connect(to: address, timeout: 5)
            try waiter.send("w")
            #expect(await eventually { Self.queued(proxy) == 1 })
            proxy.publish([.init(name: "a", address: server.endpoint, state: .down, maxConnections: 1)])
            #expect(waiter.waitForClose() == "reset")
            #expect(await eventually { Self.queued(proxy) == 0 && proxy.counters().noBackend.load(ordering: .relaxed) == 1 })
            waiter.close(); holder.close()
            try await proxy.stop()
        }
    
        static func places(_ proxy: ProxyHarness, _ server: String = "a") -> Int64 {
            proxy.counters(server: server).placesTaken.load(ordering: .relaxed)
        }

        @Test("waiting clients are served oldest first")
        func oldestFirst() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, maxConnections: 1)],
                                     pool: { $0.queueTimeout = .seconds(30) }, workers: 1)
            let address = try await proxy.start()
            let holder = try Self.served(at: address, "h")
            var waiting: [TestSocket] = []
            for i in 0..<3 {
                let c = try TestSocket.connect(to: address, timeout: 5)
                try c.send([UInt8(65 + i)])
                waiting.append(c)
                #expect(await eventually { Self.queued(proxy) == Int64(i + 1) })
            }
            var previous = holder
            for (i, c) in waiting.enumerated() {
                previous.close()
                #expect(try c.receive(exactly: 1) == [UInt8(65 + i)])
                #expect(Self.queued(proxy) == Int64(waiting.count - i - 1))
                previous = c
            }
            previous.close()
            #expect(await eventually { Self.places(proxy) == 0 })
            try await proxy.stop()
        }

        @Test("a limit a reload sets counts the connections the server already holds")
        func limitSetByReload() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                     pool: { $0.queueTimeout = .seconds(30) }, workers: 1)
            let address = try await proxy.start()
            var open: [TestSocket] = []
            for _ in 0..<3 {
                let c = try Self.served(at: address, "o")
                open.append(c)
            }
            #expect(Self.places(proxy) == 3)
            proxy.publish([.init(name: "a", address: server.endpoint, maxConnections: 2)])
            try await Task.sleep(for: .milliseconds(100))
            let late = try TestSocket.connect(to: address, timeout: 5)
            try late.send("l")
            #expect(await eventually { Self.queued(proxy) == 1 })
            open[0].close()
            try await Task.sleep(for: .milliseconds(300))
            #expect(Self.queued(proxy) == 1, "2 of a limit of 2 still open")
            open[1].close()
            #expect(try late.receive(exactly: 1) == Array("l".utf8))
            open[2].close(); late.close()
            #expect(await eventually { Self.places(proxy) == 0 })
            try await proxy.stop()
        }

        @Test("a reload that moves a server while a connect to it is in flight keeps one place")
        func addressChangeMidConnect() async throws {
            let silent = try FullListener()
            defer { silent.close() }
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: silent.endpoint, maxConnections: 1)],
                                     pool: { $0.connectTimeout = .seconds(10); $0.queueTimeout = .seconds(30) }, workers: 1)
            let address = try await proxy.start()
            let client = try TestSocket.connect(to: address, timeout: 5)
            try client.send("m")
            #expect(await eventually { Self.places(proxy) == 1 })
            proxy.publish([.init(name: "a", address: server.endpoint, maxConnections: 1)])
            #expect(try client.receive(exactly: 1) == Array("m".utf8))
            #expect(Self.places(proxy) == 1)
            client.close()
            #expect(await eventually { Self.places(proxy) == 0 })
            try await proxy.stop()
        }

        @Test("a client that resets while its connect is in flight is closed at once, its place given back")
        func resetWhileConnecting() async throws {
            let silent = try FullListener()
            defer { silent.close() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: silent.endpoint, maxConnections: 1)],
                                     pool: { $0.connectTimeout = .seconds(10) }, workers: 1)
            let address = try await proxy.start()
            let client = try TestSocket.connect(to: address, timeout: 5)
            #expect(await eventually { Self.places(proxy) == 1 })
            client.reset()
            #expect(await eventually(timeout: 3) {
                Self.places(proxy) == 0 && proxy.counters().currentConnections.load(ordering: .relaxed) == 0
            })
            try await proxy.stop()
        }

        @Test("a stop with clients waiting closes them and gives every place back")
        func stopWithWaiting() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint, maxConnections: 1)],
                                     pool: { $0.queueTimeout = .seconds(30) }, workers: 2)
            let address = try await proxy.start()
            let holder = try Self.served(at: address, "h")
            let waiter = try TestSocket.connect(to: address, timeout: 5)
            try waiter.send("w")
            #expect(await eventually { Self.queued(proxy) == 1 })
            try await proxy.stop()
            #expect(["reset", "eof"].contains(waiter.waitForClose()))
            #expect(Self.queued(proxy) == 0 && Self.places(proxy) == 0)
            #expect(proxy.counters().currentConnections.load(ordering: .relaxed) == 0)
            waiter.close(); holder.close()
        }
    }
}
