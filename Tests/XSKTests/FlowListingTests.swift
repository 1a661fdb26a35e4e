import Balancer
import Glibc
import Synchronization
import Testing
@testable import XSK

/// Serialized: each test blocks its thread playing the worker while a task of the cooperative
/// pool (one thread per core) asks; several at once on a 2-core machine left no thread to ask.
@Suite("/flows: a worker copies its tracked flows for the control plane between batches, without a lock", .serialized)
struct FlowListingTests {
    /// Three clients 10.77.16.1-3, ports 4001-4003, each with an established DSR flow.
    static func threeFlows(_ fixture: RoutesFixture, capacity: Int = 1024) -> (DSRForwarder, [Int]) {
        var dsr = DSRForwarderTests.forwarder(fixture, capacity: capacity)
        var backends: [Int] = []
        for i in 1...3 {
            let client = 0x0A4D_1000 + UInt32(i), port = UInt16(4000 + i)
            backends.append(DSRForwarderTests.send(clientFrame(client: client, port: port, flags: TCPHeader.syn), &dsr)!)
            _ = DSRForwarderTests.send(clientFrame(client: client, port: port, flags: TCPHeader.ack), &dsr)
        }
        return (dsr, backends)
    }

    /// Runs `ask` (which waits on the worker) while the "worker", this thread, runs batches.
    static func whileWorking<T: Sendable>(_ dsr: inout DSRForwarder, now: UInt64 = 3 * second,
                                          _ ask: @escaping @Sendable () async -> T?) -> T? {
        let answer = Mutex<T??>(nil)
        Task { let r = await ask(); answer.withLock { $0 = .some(r) } }
        for _ in 0..<5000 {
            dsr.beginBatch(now: now)
            if let done = answer.withLock({ $0 }) { return done }
            usleep(1000)
        }
        return nil
    }

    /// Runs `filter` through the worker's listing.
    static func list(_ filter: FlowFilter, _ dsr: inout DSRForwarder) -> FlowListingResult? {
        let listing = dsr.counters.listing
        return whileWorking(&dsr) { await listing.list(filter, timeout: .seconds(5)) }
    }

    /// The `/flows` JSON of `query` over the worker, named by `fixture`'s routes.
    static func report(_ query: FlowQuery, _ dsr: inout DSRForwarder, _ fixture: RoutesFixture) -> JSONValue? {
        let report = FlowListingReport(listings: [dsr.counters.listing], routes: fixture.publisher.current().routes,
                                       mode: .dsr, natAddresses: [])
        return whileWorking(&dsr) { try? await report.run(query) }
    }

    @Test("every flow, or one client's, or as many as the limit (with the count of all that matched)")
    func filtersAndLimit() throws {
        let fixture = RoutesFixture(balance: .maglev)
        var (dsr, backends) = Self.threeFlows(fixture)
        let all = try #require(Self.list(FlowFilter(), &dsr))
        #expect(all.matched == 3 && all.entries.count == 3)
        #expect(Set(all.entries.map(\.clientPort)) == [4001, 4002, 4003])
        #expect(all.entries.allSatisfy { $0.state == .established })

        let one = try #require(Self.list(FlowFilter(client: .v4(0x0A4D_1002)), &dsr))
        #expect(one.entries.map(\.clientPort) == [4002] && one.matched == 1)

        let limited = try #require(Self.list(FlowFilter(limit: 1), &dsr))
        #expect(limited.entries.count == 1 && limited.matched == 3)

        // The report names what the routes call each flow's frontend, server and backend.
        let text = try #require(Self.report(FlowQuery(client: IPAddress("10.77.16.2")!), &dsr, fixture)).serialized()
        let n = backends[1]
        #expect(text.contains("\"frontend\":\"web\",\"client\":\"10.77.16.2:4002\",\"server\":\"pool/s\(n)\",\"backend\":\"10.77.0.2\(n):8080\",\"state\":\"established\",\"idle_seconds\":2"), "\(text)")
        #expect(text.hasPrefix("{\"matched\":1,\"listed\":1,\"truncated\":false"), "\(text)")
    }

    @Test("a big table is walked a chunk per batch: the answer comes after enough batches, not in one")
    func chunked() throws {
        let fixture = RoutesFixture(balance: .maglev)
        var (dsr, _) = Self.threeFlows(fixture, capacity: 300_000)  // 1 Mi slots
        let listing = dsr.counters.listing
        let answer = Mutex<FlowListingResult??>(nil)
        Task { let r = await listing.list(FlowFilter(), timeout: .seconds(5)); answer.withLock { $0 = .some(r) } }
        while listing.requested.load(ordering: .acquiring) == 0 { usleep(1000) }
        var batches = 0
        #expect(dsr.hasWorkBetweenBatches, "an idle worker is told to come back soon")
        while listing.completed.load(ordering: .acquiring) == 0 {
            dsr.beginBatch(now: 3 * second)
            batches += 1
        }
        #expect(batches == (1 << 20) / FlowListing.slotsPerBatch)
        #expect(!dsr.hasWorkBetweenBatches)
        var result: FlowListingResult??
        for _ in 0..<5000 where result == nil {
            result = answer.withLock { $0 }
            usleep(1000)
        }
        #expect(result??.entries.count == 3)
    }

    @Test("a worker that never runs leaves the request unanswered after the timeout; the next one waits for it")
    func unanswered() async {
        let listing = FlowListing()
        let start = ContinuousClock.now
        #expect(await listing.list(FlowFilter(), timeout: .milliseconds(50)) == nil)
        #expect(await listing.list(FlowFilter(), timeout: .milliseconds(50)) == nil)
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(listing.requested.load(ordering: .relaxed) == 1, "the second did not overwrite the first, still in flight")
    }

    @Test("server= finds a server's flows under every frontend whose pool holds it")
    func serverUnderTwoFrontends() throws {
        var fixture = RoutesFixture(balance: .wrr, count: 1)
        fixture.config.frontends.append(FrontendConfig(name: "tls", listen: Endpoint(address: .v4(0x0A4D_0064), port: 443), pool: "pool"))
        fixture.runtime.apply(fixture.config)
        fixture.republish()
        var dsr = DSRForwarderTests.forwarder(fixture)
        for port: UInt16 in [80, 443] {
            for flags in [TCPHeader.syn, TCPHeader.ack] {
                #expect(DSRForwarderTests.send(TestFrames.ipv4TCP(src: 0x0A4D_1001, dst: 0x0A4D_0064, sport: 5000 + port, dport: port,
                                                                  flags: flags), &dsr) == 1)
            }
        }
        let text = try #require(Self.report(FlowQuery(server: ServerID(pool: "pool", name: "s1")), &dsr, fixture)).serialized()
        #expect(text.hasPrefix("{\"matched\":2,"), "\(text)")
        #expect(text.contains("\"frontend\":\"web\"") && text.contains("\"frontend\":\"tls\""))
    }

    @Test("a stopped worker's listing answers nil at once, and a /flows nobody answers is an error (503), not an empty list")
    func closedAndCancelled() async throws {
        let listing = FlowListing()
        listing.close()
        let start = ContinuousClock.now
        #expect(await listing.list(FlowFilter(), timeout: .seconds(3)) == nil)
        #expect(ContinuousClock.now - start < .seconds(1))

        let open = FlowListing()
        let waiting = Task { await open.list(FlowFilter(), timeout: .seconds(3)) }
        try await Task.sleep(for: .milliseconds(20))
        waiting.cancel()
        let cancelledAt = ContinuousClock.now
        #expect(await waiting.value == nil)
        #expect(ContinuousClock.now - cancelledAt < .seconds(1), "a cancelled caller stops waiting")

        let fixture = RoutesFixture(balance: .wrr)
        let report = FlowListingReport(listings: [listing], routes: fixture.publisher.current().routes, mode: .dsr, natAddresses: [])
        await #expect(throws: FlowQueryError.unanswered("no worker answered within 3 s (stopping, or still walking a table for an earlier request): ask again")) {
            try await report.run(FlowQuery())
        }
    }

    @Test("/flows query parameters: each is read, and a bad one is refused saying what is accepted")
    func query() throws {
        let q = try FlowQuery(parameters: [("client", "10.0.0.1"), ("frontend", "web"), ("server", "pool/b1"), ("limit", "5")])
        #expect(q == FlowQuery(client: IPAddress("10.0.0.1"), frontend: "web", server: ServerID(pool: "pool", name: "b1"), limit: 5))
        #expect(throws: FlowQueryError.bad("client: '10.0.0' is not an IPv4 or IPv6 address")) {
            try FlowQuery(parameters: [("client", "10.0.0")])
        }
        #expect(throws: FlowQueryError.self) { try FlowQuery(parameters: [("server", "b1")]) }
        #expect(throws: FlowQueryError.self) { try FlowQuery(parameters: [("limit", "-1")]) }
        #expect(throws: FlowQueryError.self) { try FlowQuery(parameters: [("clients", "10.0.0.1")]) }
        #expect(throws: FlowQueryError.bad("client is given twice: give it once")) {
            try FlowQuery(parameters: [("client", "10.0.0.1"), ("client", "10.0.0.2")])
        }
        // Past the most a worker lists, any count (however long) is served as that most.
        #expect(try FlowQuery(parameters: [("limit", "4097")]).limit == FlowQuery.maxLimit)
        #expect(try FlowQuery(parameters: [("limit", "9999999999999999999999999")]).limit == FlowQuery.maxLimit)
        #expect(throws: FlowQueryError.bad("limit: 'x' is not a count (0-4096; more lists 4096 per worker)")) {
            try FlowQuery(parameters: [("limit", "x")])
        }
        #expect(throws: FlowQueryError.self) { try FlowQuery(parameters: [("limit", "")]) }
        // `?&limit=5`: the empty pair asks nothing.
        #expect(try FlowQuery(parameters: [("", ""), ("limit", "5"), ("", "")]).limit == 5)
        #expect(throws: FlowQueryError.self) { try FlowQuery(parameters: [("", "5")]) }
        // local: a port, or an address and port (IPv6 in brackets).
        #expect(try FlowQuery(parameters: [("local", "61005")]).local == .init(port: 61005))
        #expect(try FlowQuery(parameters: [("local", "10.77.0.2:61005")]).local == .init(address: IPAddress("10.77.0.2"), port: 61005))
        #expect(try FlowQuery(parameters: [("local", "[fd77::2]:61005")]).local == .init(address: IPAddress("fd77::2"), port: 61005))
        for bad in ["x", "0", "70000", "+80", "080", " 80", "10.77.0.2", "10.77.0.2:0", ""] {
            #expect(throws: FlowQueryError.self, "\(bad)") { try FlowQuery(parameters: [("local", bad)]) }
        }
    }

    @Test("passthrough: local= finds the flow behind a NAT port a backend reports; in DSR it is refused, saying why")
    func byNATPort() throws {
        let fixture = RoutesFixture(balance: .wrr, count: 3)
        var pt = FlowCarryOverTests.passthrough(fixture)
        let flows = FlowCarryOverTests.open(5, through: &pt)
        let nat = IPAddress.v4(FlowCarryOverTests.nat)
        let report = FlowListingReport(listings: [pt.counters.listing], routes: fixture.publisher.current().routes,
                                       mode: .passthrough, natAddresses: [nat])
        func run(_ query: FlowQuery) -> Result<JSONValue, FlowQueryError>? {
            let answer = Mutex<Result<JSONValue, FlowQueryError>??>(nil)
            Task {
                let r: Result<JSONValue, FlowQueryError>
                do throws(FlowQueryError) { r = .success(try await report.run(query)) } catch { r = .failure(error) }
                answer.withLock { $0 = .some(r) }
            }
            for _ in 0..<5000 {
                pt.beginBatch(now: 3 * second)
                if let done = answer.withLock({ $0 }) { return done }
                usleep(1000)
            }
            return nil
        }
        for flow in flows {
            let text = try #require(try run(FlowQuery(local: .init(address: nat, port: flow.nat)))?.get()).serialized()
            #expect(text.hasPrefix("{\"matched\":1,") && text.contains("\"client\":\"10.77.0.10:\(flow.port)\""), "\(text)")
            #expect(text.contains("\"nat\":\"\(nat):\(flow.nat)\""), "\(text)")
            let byPort = try #require(try run(FlowQuery(local: .init(port: flow.nat)))?.get()).serialized()
            #expect(byPort.hasPrefix("{\"matched\":1,"), "\(byPort)")
        }
        let unused = try #require(try run(FlowQuery(local: .init(port: 61999)))?.get()).serialized()
        #expect(unused.hasPrefix("{\"matched\":0,"), "\(unused)")
        guard case .failure(let error)? = run(FlowQuery(local: .init(address: IPAddress("10.9.9.9")!, port: flows[0].nat))) else {
            Issue.record("an address that is no NAT address was accepted")
            return
        }
        #expect(error.message.contains("not a NAT address"), "\(error)")
        // A port outside nat_ports is no flow's NAT port: said so, not answered with nothing.
        let ranged = FlowListingReport(listings: [pt.counters.listing], routes: fixture.publisher.current().routes,
                                       mode: .passthrough, natAddresses: [nat], natPorts: 61000...61999)
        let outside = Mutex<String?>(nil)
        Task {
            do throws(FlowQueryError) { _ = try await ranged.run(FlowQuery(local: .init(port: 80))) } catch {
                outside.withLock { $0 = error.message }
            }
        }
        // Refused before any worker is asked.
        for _ in 0..<5000 where outside.withLock({ $0 }) == nil { usleep(1000) }
        #expect(outside.withLock { $0 } == "local: port 80 is outside nat_ports 61000-61999, so no flow has it (the port a backend logs for its client is one of those)")

        var (dsr, _) = Self.threeFlows(RoutesFixture(balance: .maglev))
        let dsrReport = FlowListingReport(listings: [dsr.counters.listing], routes: fixture.publisher.current().routes,
                                          mode: .dsr, natAddresses: [])
        let refused = Self.whileWorking(&dsr) { () async -> String? in
            do throws(FlowQueryError) {
                _ = try await dsrReport.run(FlowQuery(local: .init(port: 4001)))
                return nil
            } catch { return error.message }
        }
        #expect(refused?.contains("ask with client=IP") == true, "\(String(describing: refused))")
    }
}
