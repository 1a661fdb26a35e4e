import Balancer
import Foundation
@testable import Proxy
import Synchronization
import Testing

extension ProxyTests {
    /// `/flows` in proxy mode: each event loop copies its connections on request.
    @Suite struct ConnectionListing {
        /// The rows of a listing, and its summary fields.
        struct Listing {
            var matched: Int
            var listed: Int
            var truncated: Bool
            var rows: [[String: Any]]
        }

        static func list(_ proxy: ProxyHarness, _ query: FlowQuery = FlowQuery()) async throws -> Listing {
            let json = try await proxy.service.listConnections(query).serialized(pretty: false)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
            return Listing(matched: object["matched"] as? Int ?? -1, listed: object["listed"] as? Int ?? -1,
                           truncated: object["truncated"] as? Bool ?? false,
                           rows: object["flows"] as? [[String: Any]] ?? [])
        }

        /// Where a server's connections came from.
        final class PeerLog: Sendable {
            let peers = Mutex<[Endpoint]>([])
            var all: [Endpoint] { peers.withLock { $0 } }
        }

        /// Polls an async condition every 20 ms for up to `timeout` seconds.
        static func eventuallyAsync(timeout: Double = 5, _ condition: () async -> Bool) async -> Bool {
            let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
            while ContinuousClock.now < deadline {
                if await condition() { return true }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return await condition()
        }

        /// An echo server that remembers where each of its connections came from.
        static func recordingEcho(_ log: PeerLog) throws -> TestServer {
            try TestServer(name: "recording") { socket, _ in
                log.peers.withLock { $0.append(socket.peerEndpoint) }
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    let n = buffer.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress!, $0.count, 0) }
                    if n <= 0 { break }
                    try? socket.send(Array(buffer[0..<n]))
                }
                socket.close()
            }
        }

        @Test("lists each connection with its client, server, backend, the proxy's own end, state and bytes")
        func listsConnections() async throws {
            let peersA = PeerLog()
            let peersB = PeerLog()
            let a = try Self.recordingEcho(peersA)
            let b = try Self.recordingEcho(peersB)
            defer { a.stop(); b.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: a.endpoint), .init(name: "b", address: b.endpoint)])
            let address = try await proxy.start()
            var clients: [TestSocket] = []
            for i in 0..<4 {
                let c = try TestSocket.connect(to: address, timeout: 5)
                let request = Array(repeating: UInt8(ascii: "a") + UInt8(i), count: 100 + i)
                try c.send(request)
                #expect(try c.receive(exactly: request.count) == request)
                clients.append(c)
            }
            defer { for c in clients { c.close() } }

            let all = try await Self.list(proxy)
            #expect(all.matched == 4 && all.listed == 4 && !all.truncated)
            let proxySide = (peersA.all + peersB.all).map(\.description)
            for (i, c) in clients.enumerated() {
                let client = c.localEndpoint.description
                let found = all.rows.first(where: { $0["client"] as? String == client })
                let row = try #require(found, "no row for \(client)")
                #expect(row["frontend"] as? String == "web")
                #expect(row["state"] as? String == "established")
                #expect(row["bytes_tx"] as? Int == 100 + i && row["bytes_rx"] as? Int == 100 + i, "\(row)")
                let server = try #require(row["server"] as? String)
                let backend = server == "pool/a" ? a.endpoint : b.endpoint
                #expect(server == "pool/a" || server == "pool/b")
                #expect(row["backend"] as? String == backend.description)
                // The proxy's end toward the server is what the server saw connect.
                let local = try #require(row["local"] as? String)
                #expect(proxySide.contains(local), "\(local) not among \(proxySide)")
                #expect((row["age_seconds"] as? Double ?? -1) >= 0 && (row["idle_seconds"] as? Double ?? -1) >= 0)
                #expect((row["expires_in_seconds"] as? Double ?? 0) > 200, "idle_timeout 300 s: \(row)")
                #expect(row["failed_attempts"] as? Int == 0)
            }

            // Filters.
            let onA = try await Self.list(proxy, FlowQuery(server: ServerID(pool: "pool", name: "a")))
            #expect(onA.matched == 2 && onA.rows.allSatisfy { $0["server"] as? String == "pool/a" }, "\(onA.rows)")
            let one = clients[2].localEndpoint
            #expect(try await Self.list(proxy, FlowQuery(client: one.address)).matched == 4)
            #expect(try await Self.list(proxy, FlowQuery(client: .v4(0x0A09_0909))).matched == 0)
            #expect(try await Self.list(proxy, FlowQuery(frontend: "web")).matched == 4)
            // By the proxy's end toward the server, as the server's log names its client: the
            // row of the client behind it.
            for (i, c) in clients.enumerated() {
                let row = try #require(all.rows.first { $0["client"] as? String == c.localEndpoint.description })
                let local = try Endpoint(parsing: try #require(row["local"] as? String))
                let byEnd = try await Self.list(proxy, FlowQuery(local: .init(address: local.address, port: local.port)))
                #expect(byEnd.matched == 1 && byEnd.rows.first?["client"] as? String == c.localEndpoint.description,
                        "client \(i): \(byEnd.rows)")
                #expect(try await Self.list(proxy, FlowQuery(local: .init(port: local.port))).matched == 1)
                #expect(try await Self.list(proxy, FlowQuery(local: .init(address: .v4(0x0A09_0909), port: local.port))).matched == 0)
            }
            let limited = try await Self.list(proxy, FlowQuery(limit: 0))
            #expect(limited.matched == 4 && limited.listed == 0 && limited.truncated)
            await #expect(throws: FlowQueryError.self) { _ = try await proxy.service.listConnections(FlowQuery(frontend: "nope")) }
            await #expect(throws: FlowQueryError.self) {
                _ = try await proxy.service.listConnections(FlowQuery(server: ServerID(pool: "pool", name: "zz")))
            }

            // A closed connection leaves the listing.
            clients[0].close()
            #expect(await Self.eventuallyAsync { (try? await Self.list(proxy).matched) == 3 })
            try await proxy.stop()
            // A stopped proxy answers no listing.
            await #expect(throws: FlowQueryError.self) { _ = try await proxy.service.listConnections(FlowQuery()) }
        }

        @Test("shows a connection still connecting, and one whose client has ended its side")
        func showsConnectingAndHalfClosed() async throws {
            let silent = try FullListener()
            defer { silent.close() }
            let release = Atomic<Bool>(false)
            // Reads to the end of the client's stream, then answers once released.
            let late = try TestServer(name: "late") { socket, _ in
                var byte: UInt8 = 0
                while recv(socket.fd, &byte, 1, 0) > 0 {}
                while !release.load(ordering: .relaxed) { usleep(10_000) }
                try? socket.send("bye")
                socket.close()
            }
            defer { late.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "late", address: late.endpoint)], workers: 1)
            let address = try await proxy.start()
            let c = try TestSocket.connect(to: address, timeout: 5)
            defer { c.close() }
            try c.send("x")
            c.shutdownWrite()
            #expect(await Self.eventuallyAsync { (try? await Self.list(proxy).rows.first?["state"] as? String) == "client_closed" })
            #expect(try await Self.list(proxy).rows.first?["bytes_tx"] as? Int == 1)
            release.store(true, ordering: .relaxed)
            #expect(try c.receive(exactly: 3) == Array("bye".utf8))
            #expect(await Self.eventuallyAsync { (try? await Self.list(proxy).matched) == 0 })

            // Now a server that never answers the SYN: the connection waits in `connecting`.
            proxy.publish([.init(name: "silent", address: silent.endpoint)])
            try await Task.sleep(for: .milliseconds(200))
            let waiting = try TestSocket.connect(to: address, timeout: 5)
            defer { waiting.close() }
            #expect(await Self.eventuallyAsync { (try? await Self.list(proxy).rows.first?["state"] as? String) == "connecting" })
            let row = try #require(try await Self.list(proxy).rows.first)
            #expect(row["server"] as? String == "pool/silent" && row["backend"] as? String == silent.endpoint.description)
            #expect((row["expires_in_seconds"] as? Double ?? 99) <= 2, "connect_timeout 2 s: \(row)")
            try await proxy.stop()
        }
    }
}

extension ProxyTests.ConnectionListing {
    /// The channel alone, with the test playing the loop.
    @Suite struct Channel {
        static func filter(limit: Int = 10) -> ConnectionFilter {
            ConnectionFilter(client: nil, frontend: nil, server: nil, limit: limit)
        }

        @Test("a loop that does not answer times the caller out (its request withdrawn); a stopped one answers nil at once")
        func unansweredAndClosed() async {
            let listing = Proxy.ConnectionListing()
            let woken = Atomic<Int>(0)
            let started = ContinuousClock.now
            let result = await listing.list(Self.filter(), timeout: .milliseconds(100)) { woken.wrappingAdd(1, ordering: .relaxed) }
            #expect(result == nil && woken.load(ordering: .relaxed) == 1)
            #expect(ContinuousClock.now - started >= .milliseconds(100))
            #expect(listing.pending.load(ordering: .relaxed) == 0, "the timed-out request left the queue")
            var served = 0
            listing.serve { _ in
                served += 1
                return ConnectionListingResult(rows: [], matched: 0)
            }
            #expect(served == 0)
            listing.close()
            let quick = ContinuousClock.now
            #expect(await listing.list(Self.filter(), timeout: .seconds(5)) {} == nil)
            #expect(ContinuousClock.now - quick < .seconds(1))
        }

        @Test("several callers at once each get their own answer")
        func severalCallers() async {
            let listing = Proxy.ConnectionListing()
            let stop = Atomic<Bool>(false)
            // The "loop": answers with the limit it was asked for, as matched.
            let loop = Thread {
                while !stop.load(ordering: .relaxed) {
                    if listing.pending.load(ordering: .relaxed) > 0 {
                        listing.serve { ConnectionListingResult(rows: [], matched: $0.limit) }
                    }
                    usleep(1000)
                }
            }
            loop.start()
            defer { stop.store(true, ordering: .relaxed) }
            let answers = await withTaskGroup(of: (Int, Int?).self) { group in
                for limit in 1...8 {
                    group.addTask { (limit, await listing.list(Self.filter(limit: limit)) {}?.matched) }
                }
                var all: [(Int, Int?)] = []
                for await a in group { all.append(a) }
                return all
            }
            #expect(answers.count == 8 && answers.allSatisfy { $0.0 == $0.1 }, "\(answers)")
        }
    }
}
