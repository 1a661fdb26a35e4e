#if canImport(Glibc)
import Glibc
#endif
import Balancer
import CLinux
import Foundation
import Logging
@testable import Proxy
import ServiceLifecycle
import Synchronization
import Testing

extension ProxyTests {
    /// `--takeover`: the running proxy hands its listening sockets to the one replacing it, so
    /// that no listening socket closes during the change (see `ListenerHandover`).
    @Suite struct TakeoverHandover {
        /// A port free on 127.0.0.1 (a handover matches configured addresses; port 0 is never handed).
        static func freeAddress() throws -> Endpoint {
            let probe = try Listener.bind(frontend: "probe", address: Endpoint(address: .v4(0x7F00_0001), port: 0))
            SocketCalls.close(probe.fd)
            return probe.address
        }

        /// TCP sockets listening on `port` in this network namespace (each one line of /proc/net/tcp).
        static func listeningSockets(port: UInt16) -> Int {
            guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return -1 }
            let local = String(format: ":%04X", port)
            return table.split(separator: "\n").dropFirst().filter { line in
                let fields = line.split(separator: " ")
                return fields.count > 3 && fields[1].hasSuffix(local) && fields[3] == "0A"
            }.count
        }

        static func uniqueName() -> String { "convey-test-handover-\(UInt64.random(in: 0...UInt64.max))" }

        /// Back-to-back echo clients until stopped (bounded: 20 s, 20 000 connections).
        final class ClientLoad: Sendable {
            let served = Atomic<Int>(0)
            let failures = Mutex<[String]>([])
            private let stopping = Atomic<Bool>(false)
            private let threads: Mutex<[TestThread]> = Mutex([])

            init(to address: Endpoint, clients: Int = 2) {
                let started = Date()
                let made = (0..<clients).map { _ in
                    TestThread { [self] in
                        while !stopping.load(ordering: .relaxed), Date().timeIntervalSince(started) < 20,
                              served.load(ordering: .relaxed) < 20_000 {
                            do {
                                let client = try TestSocket.connect(to: address, timeout: 5)
                                try client.send("ping")
                                guard try client.receive(exactly: 4) == Array("ping".utf8) else { throw TestError.timeout("echo") }
                                served.wrappingAdd(1, ordering: .relaxed)
                            } catch {
                                failures.withLock { $0.append("\(error)") }
                            }
                        }
                    }
                }
                threads.withLock { $0 = made }
            }

            /// Stops the clients and waits for them (once: a thread is joined only once).
            func stop() {
                guard !stopping.exchange(true, ordering: .relaxed) else { return }
                for t in threads.withLock({ $0 }) { t.join() }
            }
        }

        @Test("the new proxy serves the old one's own listening sockets: none is added on the port, none closes when the old one stops, and a client load through the change is served throughout")
        func takesTheSockets() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let address = try Self.freeAddress()
            let name = Self.uniqueName()
            let oldLog = LogLines(), newLog = LogLines()
            let old = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                   logger: oldLog.logger(), handoverName: name)
            let group = ServiceGroup(configuration: .init(services: [.init(service: old.service)], logger: Logger(label: "test")))
            let running = Task { try await group.run() }
            #expect(await eventually { old.service.status().listening["web"] != nil })
            #expect(Self.listeningSockets(port: address.port) == 1, "one socket, shared by the loops")

            let load = ClientLoad(to: address)
            defer { load.stop() }
            #expect(await eventually { load.served.load(ordering: .relaxed) >= 50 })

            let new = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                   logger: newLog.logger(), takeover: true, handoverName: name)
            try await new.start()
            #expect(newLog.all.contains { $0.contains("took over frontend web's 1 listening socket(s) at \(address)") && $0.contains("shared by this convey's 2 loop(s)") },
                    "\(newLog.all)")
            #expect(!newLog.all.contains { $0.contains("tcp_migrate_req") }, "nothing bound beside: the sysctl does not matter")
            #expect(oldLog.all.contains { $0.contains("handed 1 listening socket(s) (\(address))") }, "one per socket, not per loop: \(oldLog.all)")
            #expect(Self.listeningSockets(port: address.port) == 1, "the same socket, open in both proxies")

            let beforeStop = load.served.load(ordering: .relaxed)
            await group.triggerGracefulShutdown()
            try await running.value
            #expect(Self.listeningSockets(port: address.port) == 1, "the listening socket did not close with the old proxy")
            #expect(await eventually { load.served.load(ordering: .relaxed) >= beforeStop + 200 }, "served after the old one stopped")
            load.stop()
            let failures = load.failures.withLock { $0 }
            #expect(failures.isEmpty, "\(failures.count) of \(load.served.load(ordering: .relaxed) + failures.count) clients failed: \(Set(failures))")
            #expect(new.counters().totalConnections.load(ordering: .relaxed) > 0, "the new proxy served clients")
            // The new one answers takeovers in turn, on the channel that came with the listeners.
            #expect(await eventually { newLog.all.contains { $0.contains("answering takeovers at @\(name) (the channel came with the listeners)") } },
                    "\(newLog.all)")
            try await new.stop()
            #expect(Self.listeningSockets(port: address.port) == 0)
        }

        @Test("a new proxy with more or fewer loops shares the one socket handed among them: nothing is bound beside it, nothing closes when the replaced one stops")
        func loopCountsDiffer() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let address = try Self.freeAddress()
            let name = Self.uniqueName()
            let secondLog = LogLines(), thirdLog = LogLines()
            let first = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                     workers: 2, handoverName: name)
            try await first.start()
            let second = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                      workers: 3, logger: secondLog.logger(), takeover: true, handoverName: name)
            try await second.start()
            #expect(secondLog.all.contains { $0.contains("took over frontend web's 1 listening socket(s)") && $0.contains("shared by this convey's 3 loop(s)") },
                    "\(secondLog.all)")
            #expect(Self.listeningSockets(port: address.port) == 1)
            #expect(await eventually { secondLog.all.contains { $0.contains("answering takeovers at @\(name) (the channel came with the listeners)") } },
                    "the name passed with the listeners, never free: \(secondLog.all)")
            try await first.stop()
            #expect(Self.listeningSockets(port: address.port) == 1, "the socket lives on in the second")

            let third = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                     workers: 1, logger: thirdLog.logger(), takeover: true, handoverName: name)
            try await third.start()
            #expect(thirdLog.all.contains { $0.contains("took over frontend web's 1 listening socket(s)") && $0.contains("shared by this convey's 1 loop(s)") },
                    "\(thirdLog.all)")
            #expect(!thirdLog.all.contains { $0.contains("close when it stops") }, "\(thirdLog.all)")
            #expect(!thirdLog.all.contains { $0.contains("tcp_migrate_req") }, "nothing closes with the second: the sysctl does not matter")
            try await second.stop()
            #expect(Self.listeningSockets(port: address.port) == 1)
            let client = try TestSocket.connect(to: address, timeout: 5)
            try client.send("after")
            #expect(try client.receive(exactly: 5) == Array("after".utf8), "the third one serves on the socket it took")
            try await third.stop()
        }

        @Test("the servers the operator drained in the running proxy are handed on with the listeners, to be drained in the new one")
        func drainsAreHandedOn() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let address = try Self.freeAddress()
            let name = Self.uniqueName()
            let drained = [ServerID(pool: "pool", name: "a"), ServerID(pool: "other pool", name: "b c")]
            let successor = Mutex<Int32?>(nil)
            let old = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                   handoverName: name, operatorDrains: OperatorDrains(current: { drained }, adopt: { _, _ in },
                                                                                      handedOver: { pid in successor.withLock { $0 = pid } }))
            try await old.start()
            let adopted = Mutex<([ServerID], Int32)?>(nil)
            let new = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                   takeover: true, handoverName: name,
                                   operatorDrains: OperatorDrains(current: { [] }, adopt: { ids, pid in adopted.withLock { $0 = (ids, pid) } }))
            try await new.start()
            let got = adopted.withLock { $0 }
            #expect(got?.0 == drained, "\(String(describing: got))")
            #expect(got?.1 == getpid(), "the pid of the convey that answered")
            // The old one learns who took its drains once its answer is sent.
            for _ in 0..<200 where successor.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(10)) }
            #expect(successor.withLock { $0 } == getpid())
            try await old.stop()
            try await new.stop()
        }

        @Test("while the replaced proxy is at its frontend's max_connections, the new one serves the clients that arrive, and after the old one stops too (none is left in the shared socket's queue)")
        func oldOneAtItsLimit() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let address = try Self.freeAddress()
            let name = Self.uniqueName()
            let old = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                   frontend: { $0.listen = address; $0.maxConnections = 1 }, handoverName: name)
            try await old.start()
            let held = try TestSocket.connect(to: address, timeout: 5)
            try held.send("held")
            #expect(try held.receive(exactly: 4) == Array("held".utf8))
            let new = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                   frontend: { $0.listen = address; $0.maxConnections = 1 }, takeover: true, handoverName: name)
            try await new.start()
            // The old one is full: each of these is the new one's (one at a time: its limit is 1).
            for i in 0..<5 {
                let client = try TestSocket.connect(to: address, timeout: 5)
                client.setTimeout(5)
                try client.send("c\(i)")
                #expect(try client.receive(exactly: 2) == Array("c\(i)".utf8), "client \(i) served while the old proxy is full")
                client.close()
                #expect(await eventually { new.counters().currentConnections.load(ordering: .relaxed) == 0 })
            }
            #expect(new.counters().totalConnections.load(ordering: .relaxed) == 5)
            #expect(old.counters().totalConnections.load(ordering: .relaxed) == 1)
            held.close()
            try await old.stop()
            let after = try TestSocket.connect(to: address, timeout: 5)
            after.setTimeout(5)
            try after.send("after")
            #expect(try after.receive(exactly: 5) == Array("after".utf8))
            after.close()
            try await new.stop()
        }

        @Test("the replaced proxy hands its final counters over when it stops, after its last connection: the new one's totals are then both proxies' (open connections stay its own); a successor that does not ask gets none")
        func countersCarryOn() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let address = try Self.freeAddress()
            let name = Self.uniqueName()
            // At most one connection each: the held one is the old proxy's, the rest the new one's.
            let old = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                   frontend: { $0.listen = address; $0.maxConnections = 1 }, handoverName: name, carriesCounters: true)
            try await old.start()
            let held = try TestSocket.connect(to: address, timeout: 5)
            try held.send("held")
            #expect(try held.receive(exactly: 4) == Array("held".utf8))
            let new = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                   frontend: { $0.listen = address; $0.maxConnections = 1 }, takeover: true, handoverName: name,
                                   carriesCounters: true)
            try await new.start()
            for i in 0..<5 {
                let client = try TestSocket.connect(to: address, timeout: 5)
                client.setTimeout(5)
                try client.send("c\(i)")
                #expect(try client.receive(exactly: 2) == Array("c\(i)".utf8))
                client.close()
                #expect(await eventually { new.counters().currentConnections.load(ordering: .relaxed) == 0 })
            }
            // The held connection goes on in the old proxy after the handover: counted there.
            try held.send("more")
            #expect(try held.receive(exactly: 4) == Array("more".utf8))
            #expect(new.counters().totalConnections.load(ordering: .relaxed) == 5, "nothing carried before the old one stops")
            held.close()
            #expect(await eventually { old.counters().currentConnections.load(ordering: .relaxed) == 0 })
            try await old.stop()
            #expect(await eventually { new.counters().totalConnections.load(ordering: .relaxed) == 6 }, "the old proxy's one connection added")
            #expect(new.counters().bytesTx.load(ordering: .relaxed) == 10 + 8, "its bytes too, also those after the handover")
            #expect(new.counters().bytesRx.load(ordering: .relaxed) == 10 + 8)
            #expect(new.counters().currentConnections.load(ordering: .relaxed) == 0)
            #expect(new.counters(server: "a").totalConnections.load(ordering: .relaxed) == 6)
            #expect(new.counters(server: "a").bytesTx.load(ordering: .relaxed) == 18)

            // The new one is replaced in turn by one that does not ask (an older convey): it
            // stops at once, and the successor's counts are its own.
            let third = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                     frontend: { $0.listen = address }, takeover: true, handoverName: name)
            try await third.start()
            try await new.stop()
            let client = try TestSocket.connect(to: address, timeout: 5)
            client.setTimeout(5)
            try client.send("x")
            #expect(try client.receive(exactly: 1) == Array("x".utf8))
            client.close()
            #expect(await eventually { third.counters().currentConnections.load(ordering: .relaxed) == 0 })
            #expect(third.counters().totalConnections.load(ordering: .relaxed) == 1)
            try await third.stop()
        }

        @Test("an older convey, which closes the exchange after done, promises no counters: the takeover goes on without them, at once; a successor that stops first does not hold up the replaced convey's stop")
        func countersNotPromised() async throws {
            let name = Self.uniqueName()
            let fake = try UnixMessageSocket.listening(on: name)
            let answered = TestThread {
                guard fake.waitForConnection(timeout: .seconds(5)), let connection = try? fake.accept(timeout: .seconds(5)) else { return }
                _ = try? connection.receive()
                try? connection.send(Array("done \(getpid())".utf8))
                // ... and closes, as conveys before the counters do.
            }
            let asked = ContinuousClock.now
            let handed = try ListenerHandover.receive(from: name, counters: true, timeout: .seconds(5))
            answered.join()
            #expect(handed.counterChannel == nil && handed.pid == getpid())
            #expect(ContinuousClock.now - asked < .seconds(2), "no wait for a promise that does not come")

            let server = try TestServer.echo()
            defer { server.stop() }
            let address = try Self.freeAddress()
            let handoverName = Self.uniqueName()
            let old = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                   handoverName: handoverName, carriesCounters: true)
            try await old.start()
            let new = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                   takeover: true, handoverName: handoverName, carriesCounters: true)
            try await new.start()
            try await new.stop()
            let stopping = ContinuousClock.now
            try await old.stop()
            #expect(ContinuousClock.now - stopping < .seconds(3), "the replaced proxy stops at once though its successor is gone")
        }

        @Test("with no convey answering, a takeover binds beside whatever listens there and says why, naming tcp_migrate_req")
        func nobodyAnswers() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let address = try Self.freeAddress()
            let newLog = LogLines()
            // A running proxy without a handover (an older convey, or another file).
            let old = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address })
            try await old.start()
            let name = Self.uniqueName()
            let new = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                   logger: newLog.logger(), takeover: true, handoverName: name)
            try await new.start()
            #expect(newLog.all.contains { $0.contains("no convey answers at @\(name): binding beside the listeners there instead") }, "\(newLog.all)")
            #expect(newLog.all.contains { $0.contains("tcp_migrate_req") }, "\(newLog.all)")
            #expect(Self.listeningSockets(port: address.port) == 2, "one socket each, in one SO_REUSEPORT group")
            try await old.stop()
            let client = try TestSocket.connect(to: address, timeout: 5)
            try client.send("x")
            #expect(try client.receive(exactly: 1) == Array("x".utf8))
            try await new.stop()
        }

        @Test("a handover peer that answers out of protocol fails the takeover's ask with what it said, leaving no descriptor open; a request out of protocol is refused")
        func outOfProtocol() async throws {
            let name = Self.uniqueName()
            let fake = try UnixMessageSocket.listening(on: name)
            let answered = TestThread {
                guard fake.waitForConnection(timeout: .seconds(5)), let connection = try? fake.accept(timeout: .seconds(5)) else { return }
                _ = try? connection.receive()
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                try? connection.send(Array("listeners 127.0.0.1:9".utf8), descriptors: [fd])
                _ = Glibc.close(fd)
                try? connection.send(Array("hello".utf8))
            }
            let before = openDescriptorCount()
            #expect {
                _ = try ListenerHandover.receive(from: name, timeout: .seconds(5))
            } throws: { error in
                "\(error)".contains("unexpected message 'hello'")
            }
            answered.join()
            #expect(openDescriptorCount() == before, "the descriptor received before the bad message is closed")

            // The running side: a request that is not the greeting gets a refusal.
            let proxyName = Self.uniqueName()
            let server = try TestServer.echo()
            defer { server.stop() }
            let address = try Self.freeAddress()
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.listen = address },
                                     handoverName: proxyName)
            try await proxy.start()
            let asker = try UnixMessageSocket.connected(to: proxyName, timeout: .seconds(5))
            try asker.send(Array("convey-handover 99".utf8))
            let reply = try asker.receive()
            #expect(String(decoding: reply.bytes, as: UTF8.self).hasPrefix("refused unknown request") && reply.descriptors.isEmpty)
            try await proxy.stop()
        }

        @Test("a handed socket is taken only if it is listening at the frontend's address, made by the user that handed it, in this network namespace")
        func adoptChecksTheSocket() throws {
            let listener = try Listener.bind(frontend: "web", address: Endpoint(address: .v4(0x7F00_0001), port: 0))
            defer { SocketCalls.close(listener.fd) }
            let me = geteuid()
            let here = cl_netns_cookie(listener.fd)
            #expect(Listener.adopt(listener.fd, at: listener.address, owner: me, networkNamespace: here, notSentLowWater: 0) != nil)
            #expect(Listener.adopt(listener.fd, at: listener.address, owner: me &+ 1, networkNamespace: here, notSentLowWater: 0) == nil,
                    "made by another user")
            var elsewhere = listener.address
            elsewhere.port = elsewhere.port == 65535 ? 1 : elsewhere.port + 1
            #expect(Listener.adopt(listener.fd, at: elsewhere, owner: me, networkNamespace: here, notSentLowWater: 0) == nil,
                    "listening at another address")
            if here != 0 {
                #expect(Listener.adopt(listener.fd, at: listener.address, owner: me, networkNamespace: here &+ 1, notSentLowWater: 0) == nil,
                        "in another network namespace")
            }
            let unconnected = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { _ = Glibc.close(unconnected) }
            #expect(Listener.adopt(unconnected, at: listener.address, owner: me, networkNamespace: here, notSentLowWater: 0) == nil,
                    "not listening")
        }

        @Test("a loop's answer its caller gave up on is discarded (descriptors in it are not left open); one answered as the loop stops is collected or discarded, never lost")
        func uncollectedAnswersAreDiscarded() {
            let discarded = Atomic<Int>(0)
            let channel = LoopChannel<Void, Int>(discard: { _ in discarded.wrappingAdd(1, ordering: .relaxed) })
            let loop = TestThread {
                while channel.pending.load(ordering: .relaxed) == 0 { usleep(1000) }
                channel.serve {
                    usleep(200_000)  // answers after its caller has given up
                    return 7
                }
            }
            #expect(channel.askBlocking((), timeout: .milliseconds(50), wake: {}) == nil)
            loop.join()
            #expect(discarded.load(ordering: .relaxed) == 1)
            // Answered, then the loop stopped before the caller collected.
            let late = LoopChannel<Void, Int>(discard: { _ in discarded.wrappingAdd(1, ordering: .relaxed) })
            let stopping = TestThread {
                while late.pending.load(ordering: .relaxed) == 0 { usleep(1000) }
                late.serve { 8 }
                late.close()
            }
            let answer = late.askBlocking((), timeout: .seconds(5), wake: {})
            stopping.join()
            #expect(answer == 8 || discarded.load(ordering: .relaxed) == 2, "either collected or discarded, never lost")
        }
    }
}
