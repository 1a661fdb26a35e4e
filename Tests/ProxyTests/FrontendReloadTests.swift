#if canImport(Glibc)
import Glibc
#endif
import Balancer
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
            var tuning = ProxyTuning()
            tuning.pinThreads = false
            let proxy = ProxyService(snapshots: runtime.snapshots, settings: ProxySettings(workers: 2),
                                     logger: Logger(label: "proxy-test"), tuning: tuning)
            let task = Task { try await proxy.run() }
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

            // Added: both loops take up its listener (a listener no loop accepts on would
            // leave some of these connections unanswered: SO_REUSEPORT spreads them).
            var added = config
            added.frontends.append(Self.frontend("api", 2))
            try reload(added)
            let api = try #require(proxy.status().listening["api"])
            #expect(await eventually { (try? whoAnswers(api)) == "a" })
            var answers: [String?] = []
            for _ in 0..<20 { answers.append(try whoAnswers(api)) }
            #expect(answers.allSatisfy { $0 == "a" }, "every connection to the new frontend is served: \(answers)")
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
            #expect(throws: ProxyError.bindFailed(frontend: "busy", address: a.endpoint, errno: .addressInUse)) {
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
    }
}
