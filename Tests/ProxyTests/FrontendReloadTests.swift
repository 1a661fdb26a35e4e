#if canImport(Glibc)
import Glibc
#endif
import Balancer
import CLinux
import Logging
@testable import Proxy
import Testing

extension ProxyTests {
    /// Frontends added, moved and removed by a reload, the way `convey` reloads: the proxy
    /// binds what the file needs (`prepare`), then the runtime publishes it.
    @Suite struct FrontendReload {
        /// A frontend on its own loopback address (port 0: an ephemeral port).
        static func frontend(_ name: String, _ lastOctet: UInt32) -> FrontendConfig {
            FrontendConfig(name: name, listen: Endpoint(address: .v4(0x7F00_0000 | lastOctet), port: 0), pool: "pool")
        }

        /// A proxy with two loops over `runtime`'s snapshots, running until the task is cancelled.
        static func run(over runtime: BalancerRuntime) -> (ProxyService, Task<Void, any Error>) {
            var tuning = ProxyTuning()
            tuning.pinThreads = false
            let proxy = ProxyService(snapshots: runtime.snapshots, settings: ProxySettings(workers: 2),
                                     logger: Logger(label: "proxy-test"), tuning: tuning)
            return (proxy, Task { try await proxy.run() })
        }

        /// Whether a connection to `address` is refused (nothing listens there).
        static func refused(_ address: Endpoint) -> Bool {
            do {
                let c = try TestSocket.connect(to: address, timeout: 2)
                c.close()
                return false
            } catch TestError.syscall(_, let code) {
                return code == ECONNREFUSED
            } catch {
                return false
            }
        }

        @Test("a reload adds, moves and removes frontends live: new addresses answer in every loop, left ones refuse new clients while their open connections go on until drain_timeout")
        func frontendsChangeLive() async throws {
            let a = try TestServer.naming("a")
            defer { a.stop() }
            var config = ConveyConfig(frontends: [Self.frontend("web", 1)],
                                      pools: [PoolConfig(name: "pool", drainTimeout: .seconds(2),
                                                         servers: [ServerConfig(name: "a", address: a.endpoint)])])
            let runtime = BalancerRuntime(config: config)
            let (proxy, task) = Self.run(over: runtime)
            defer { task.cancel() }
            func reload(_ new: ConveyConfig) throws {
                try proxy.prepare(frontends: new.frontends)
                runtime.apply(new)
                config = new
            }
            #expect(await eventually { proxy.status().listening["web"] != nil })
            let web1 = try #require(proxy.status().listening["web"])
            let held = try TestSocket.connect(to: web1)
            #expect(ask(held) == "a")

            // Added: both loops take up its listener (they share one socket and take its
            // clients in turn, so each loop's accepted count moves).
            var added = config
            added.frontends.append(Self.frontend("api", 2))
            try reload(added)
            let api = try #require(proxy.status().listening["api"])
            #expect(await eventually { (try? whoAnswers(api)) == "a" })
            let acceptedBefore = proxy.status().loops.map(\.acceptedTotal)
            var answers: [String?] = []
            for _ in 0..<20 { answers.append(try whoAnswers(api)) }
            #expect(answers.allSatisfy { $0 == "a" }, "every connection to the new frontend is served: \(answers)")
            #expect(await eventually {
                _ = try? whoAnswers(api)
                return zip(proxy.status().loops.map(\.acceptedTotal), acceptedBefore).allSatisfy { $0 > $1 }
            }, "both loops accept on the new listener: \(proxy.status().loops.map(\.acceptedTotal)) from \(acceptedBefore)")
            let heldOnAPI = try TestSocket.connect(to: api)
            #expect(ask(heldOnAPI) == "a")

            // Moved: the new address answers, the old one refuses, the open connection goes on.
            var moved = config
            moved.frontends[moved.frontends.firstIndex { $0.name == "web" }!] = Self.frontend("web", 3)
            try reload(moved)
            let web3 = try #require(proxy.status().listening["web"])
            #expect(web3.address != web1.address)
            #expect(await eventually { Self.refused(web1) }, "the old address takes no new clients")
            for _ in 0..<10 { #expect(try whoAnswers(web3) == "a") }
            #expect(ask(held) == "a", "a connection made at the old address goes on while it drains")

            // Removed: refused at once, its open connection goes on.
            var removed = config
            removed.frontends.removeAll { $0.name == "api" }
            try reload(removed)
            #expect(await eventually { Self.refused(api) })
            #expect(proxy.status().listening["api"] == nil)
            #expect(ask(heldOnAPI) == "a", "a removed frontend's open connection goes on while it drains")

            // A listen address another socket holds: the reload is refused, nothing changes.
            var busy = config
            busy.frontends.append(FrontendConfig(name: "busy", listen: a.endpoint, pool: "pool"))
            busy.frontends.append(FrontendConfig(name: "nowhere", listen: Endpoint(address: .v4(0xC000_0201), port: 80), pool: "pool"))
            #expect(throws: ProxyBindFailures(failures: [
                .bindFailed(frontend: "busy", address: a.endpoint, errno: .addressInUse),
                .bindFailed(frontend: "nowhere", address: Endpoint(address: .v4(0xC000_0201), port: 80), errno: .addressNotAvailable),
            ]), "every address that cannot be bound is named") {
                try proxy.prepare(frontends: busy.frontends)
            }
            #expect(Set(proxy.status().listening.keys) == ["web"])
            #expect(try whoAnswers(web3) == "a")

            // The drains end: the connections left at the old address and on the removed
            // frontend are closed; the moved frontend serves on.
            try await Task.sleep(for: .milliseconds(2100))
            runtime.expireDrains()
            #expect(["eof", "reset"].contains(held.waitForClose()))
            #expect(["eof", "reset"].contains(heldOnAPI.waitForClose()))
            #expect(try whoAnswers(web3) == "a")
            #expect(await eventually { runtime.view().frontendCounters["web"]?.snapshot().currentConnections == 0 })
            task.cancel()
            try await task.value
        }
    
        /// A port free on 127.0.0.1 now (bound and released).
        static func freePort() throws -> UInt16 {
            let probe = try Listener.bind(frontend: "probe", address: Endpoint(address: .v4(0x7F00_0001), port: 0))
            SocketCalls.close(probe.fd)
            return probe.address.port
        }

        @Test("reloads in quick succession: a frontend moved away and straight back gets its address again (each reload waits for the loops to let go of it)")
        func moveAwayAndBackAtOnce() async throws {
            let a = try TestServer.naming("a")
            defer { a.stop() }
            let home = Endpoint(address: .v4(0x7F00_0001), port: try Self.freePort())
            let away = Endpoint(address: .v4(0x7F00_0001), port: try Self.freePort())
            func config(_ listen: Endpoint) -> ConveyConfig {
                ConveyConfig(frontends: [FrontendConfig(name: "web", listen: listen, pool: "pool")],
                             pools: [PoolConfig(name: "pool", servers: [ServerConfig(name: "a", address: a.endpoint)])])
            }
            let runtime = BalancerRuntime(config: config(home))
            let (proxy, task) = Self.run(over: runtime)
            defer { task.cancel() }
            #expect(await eventually { (try? whoAnswers(home)) == "a" })
            for round in 0..<3 {
                // No pause between the two: the loops have not looked at the first yet.
                try proxy.prepare(frontends: config(away).frontends)
                runtime.apply(config(away))
                try proxy.prepare(frontends: config(home).frontends)
                runtime.apply(config(home))
                proxy.wakeLoops()
                #expect(await eventually { Self.refused(away) }, "round \(round)")
                for _ in 0..<6 { #expect(try whoAnswers(home) == "a", "round \(round)") }
            }
            task.cancel()
            try await task.value
        }

        @Test("a loop that takes no more listeners (draining, stopped) closes one handed to it at once")
        func refusedListenerIsClosed() throws {
            let control = LoopControl(index: 0, wakeFD: cl_eventfd_nonblock())
            let key = ListenerKey(frontend: "web", address: Endpoint(address: .v4(0x7F00_0001), port: 0))
            let first = try Listener.bind(frontend: "web", address: key.address)
            control.hand(first, for: key)
            #expect(fcntl(first.fd, F_GETFD) >= 0, "held for the loop")
            control.refuseHandedListeners()
            #expect(fcntl(first.fd, F_GETFD) == -1, "closed when the loop stops taking listeners")
            let second = try Listener.bind(frontend: "web", address: key.address)
            control.hand(second, for: key)
            #expect(fcntl(second.fd, F_GETFD) == -1, "a listener handed afterwards is closed at once")
            #expect(control.takeHanded(key) == nil)
        }
    }
}
