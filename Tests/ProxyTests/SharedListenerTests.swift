#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Foundation
@testable import Proxy
import Synchronization
import Testing

extension ProxyTests {
    /// One listening socket per frontend, shared by the event loops (see `Listener`).
    @Suite struct SharedListener {
        static let loopback = Endpoint(address: .v4(0x7F00_0001), port: 0)

        /// Descriptors of this process that refer to the socket `identity` (by its inode in
        /// /proc/self/fd), whatever their numbers: a closed descriptor's number may be reused.
        static func descriptors(of identity: SocketIdentity?) -> Int {
            guard let identity, let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return -1 }
            return entries.filter { entry in
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + entry)) == "socket:[\(identity.inode)]"
            }.count
        }

        @Test("a frontend's listeners are descriptors of one socket, one per loop: one listening socket on the port")
        func oneSocketPerFrontend() throws {
            let group = try Listener.bindGroup(ListenerKey(frontend: "web", address: Self.loopback), count: 3, notSentLowWater: 0)
            defer { for l in group { SocketCalls.close(l.fd) } }
            #expect(group.count == 3)
            #expect(Set(group.map(\.fd)).count == 3, "each loop closes its own descriptor")
            #expect(Set(group.compactMap { SocketCalls.identity($0.fd) }).count == 1, "one socket")
            #expect(Set(group.map(\.address)).count == 1 && group[0].address.port != 0)
            #expect(TakeoverHandover.listeningSockets(port: group[0].address.port) == 1)
        }

        @Test("sockets handed by a convey that gave each loop its own (SO_REUSEPORT) are all served, shared out among this convey's loops; copies of one count once; those beyond the loops are closed")
        func adoptsOneSocketPerLoopFromAnOlderConvey() throws {
            let first = try Listener.bind(frontend: "web", address: Self.loopback)
            let key = ListenerKey(frontend: "web", address: first.address)
            let second = try Listener.bind(frontend: "web", address: first.address)
            let copyOfFirst = try SocketCalls.duplicate(first.fd)
            let firstSocket = SocketCalls.identity(first.fd), secondSocket = SocketCalls.identity(second.fd)
            #expect(firstSocket != nil && firstSocket != secondSocket, "two sockets in one SO_REUSEPORT group")
            #expect(Self.descriptors(of: firstSocket) == 2)

            let three = try Listener.adoptGroup(key, sockets: [first.fd, copyOfFirst, second.fd], count: 3, owner: getuid(),
                                                networkNamespace: 0, notSentLowWater: 0)
            #expect(three.taken == 2 && three.leftToClose == 0 && three.invalid == 0)
            #expect(three.listeners.count == 3)
            #expect(Set(three.listeners.compactMap { SocketCalls.identity($0.fd) }).count == 2, "both sockets served")
            #expect(Self.descriptors(of: firstSocket) == 2, "the copy handed is closed; the third loop has its own")
            #expect(Self.descriptors(of: secondSocket) == 1)
            #expect(TakeoverHandover.listeningSockets(port: key.address.port) == 2, "nothing bound beside them")
            for l in three.listeners { SocketCalls.close(l.fd) }
            #expect(TakeoverHandover.listeningSockets(port: key.address.port) == 0)

            let a = try Listener.bind(frontend: "web", address: key.address)
            let b = try Listener.bind(frontend: "web", address: key.address)
            let bSocket = SocketCalls.identity(b.fd)
            #expect(Self.descriptors(of: bSocket) == 1)
            let one = try Listener.adoptGroup(key, sockets: [a.fd, b.fd], count: 1, owner: getuid(), networkNamespace: 0,
                                              notSentLowWater: 0)
            #expect(one.taken == 1 && one.leftToClose == 1 && one.listeners.map(\.fd) == [a.fd])
            #expect(Self.descriptors(of: bSocket) == 0, "the socket beyond this convey's loops is closed here")
            for l in one.listeners { SocketCalls.close(l.fd) }
        }

        @Test("max_connections = 3 over two loops sharing the socket: 30 clients arriving at once are all served, never more than 3 at a time, and the loops take the socket's wake-ups again afterwards")
        func burstAtTheLimit() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.maxConnections = 3 },
                                     workers: 2)
            let address = try await proxy.start()
            let served = Atomic<Int>(0)
            let failures = Mutex<[String]>([])
            let clients = (0..<30).map { i in
                TestThread {
                    do {
                        let client = try TestSocket.connect(to: address, timeout: 20)
                        client.setTimeout(20)
                        try client.send("\(i % 10)")
                        guard try client.receive(exactly: 1) == Array("\(i % 10)".utf8) else { throw TestError.timeout("wrong echo") }
                        usleep(20_000)
                        client.close()
                        served.add(1, ordering: .relaxed)
                    } catch {
                        failures.withLock { $0.append("client \(i): \(error)") }
                    }
                }
            }
            var peak: Int64 = 0
            let deadline = Date().addingTimeInterval(30)
            while served.load(ordering: .relaxed) + failures.withLock({ $0.count }) < 30 && Date() < deadline {
                peak = max(peak, proxy.counters().currentConnections.load(ordering: .relaxed))
                usleep(1_000)
            }
            for c in clients { #expect(c.join(timeout: 30)) }
            #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
            #expect(served.load(ordering: .relaxed) == 30)
            #expect(peak <= 3, "at most max_connections open at once (peak \(peak))")
            #expect(proxy.counters().overLimit.load(ordering: .relaxed) >= 1, "clients waited at the limit")
            #expect(await eventually { proxy.counters().currentConnections.load(ordering: .relaxed) == 0 })
            // Both loops take part in the wake-ups again (a loop that withdrew at the limit
            // rejoins at its next sweep): clients one after another reach each of them.
            let before = proxy.service.status().loops.map(\.acceptedTotal)
            #expect(await eventually {
                guard let client = try? TestSocket.connect(to: address) else { return false }
                defer { client.close() }
                guard (try? client.send("z")) != nil, (try? client.receive(exactly: 1)) == Array("z".utf8) else { return false }
                return zip(proxy.service.status().loops.map(\.acceptedTotal), before).allSatisfy { $0 > $1 }
            }, "each loop accepted again: \(before) -> \(proxy.service.status().loops.map(\.acceptedTotal))")
            try await proxy.stop()
        }

        @Test("clients arriving one after another while the loops are idle are taken by the loops in turn")
        func idleLoopsTakeClientsInTurn() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], workers: 2)
            let address = try await proxy.start()
            var clients: [TestSocket] = []
            defer { for c in clients { c.close() } }
            for i in 1...10 {
                clients.append(try TestSocket.connect(to: address))
                #expect(await eventually { proxy.service.status().loops.reduce(0) { $0 + $1.acceptedTotal } == i })
            }
            #expect(await eventually { proxy.service.status().openConnections == 10 })
            let perLoop = proxy.service.status().loops.map(\.openConnections)
            // In turn: 5 and 5. A loop that was awake at an arrival (its periodic sweep, or a
            // scheduler delay on a loaded machine) may take a client out of turn, so the bound
            // is loose; what it rules out is one loop taking (nearly) every client, which is
            // what an exclusive wake-up of the same waiter each time would do.
            #expect(perLoop.count == 2 && perLoop.allSatisfy { $0 >= 3 }, "open connections per loop: \(perLoop)")
            for c in clients { c.close() }
            clients = []
            #expect(await eventually { proxy.service.status().openConnections == 0 })
            try await proxy.stop()
        }
    }
}
