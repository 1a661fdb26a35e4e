import Balancer
import Testing
@testable import XSK

/// A server's `max_connections` in the AF_XDP modes: its open flows, over every worker and
/// frontend, bound the new flows it is given.
@Suite("Server and frontend limits (max_connections) in the AF_XDP modes")
struct XDPServerLimitTests {
    static func forwarder(_ fixture: RoutesFixture, worker: Int = 0, workers: Int = 1) -> DSRForwarder {
        var f = DSRForwarder(settings: ForwarderSettings(capacity: 4096, workerIndex: worker, workerCount: workers),
                             routes: fixture.publisher)
        f.beginBatch(now: second)
        return f
    }

    /// Sends `frame`; returns the backend number it went to, or nil if dropped.
    static func send(_ frame: [UInt8], _ forwarder: inout DSRForwarder) -> Int? {
        var f = frame
        guard withFrame(&f, { forwarder.handle($0) }) == .transmit else { return nil }
        return RoutesFixture.backendNumber(mac: TestFrames.fields(f).dstMAC)
    }

    /// Open flows of server `name` over every slot it has (every frontend).
    static func open(_ name: String, _ fixture: RoutesFixture) -> Int64 {
        let routes = fixture.publisher.current().routes
        return routes.servers.indices.filter { routes.servers[$0]?.name == name }
            .reduce(0) { $0 + fixture.publisher.openFlows.open($1) }
    }

    @Test("passthrough, maglev: a new flow whose server is full goes to the one with room; every other flow keeps its hash's server; a reset frees the place at once")
    func aFullFirstChoiceGoesToAServerWithRoom() {
        let fixture = RoutesFixture(balance: .maglev, count: 3, limits: [2, 0, 0])
        let reference = RoutesFixture(balance: .maglev, count: 3)  // where each flow hashes to
        var workers = (0..<2).map { i in
            var f = PassthroughForwarder(settings: ForwarderSettings(capacity: 4096, natAddress: .v4(0x0A4D_0002),
                                                                     natPorts: 61000...61999, workerIndex: i, workerCount: 2),
                                         routes: fixture.publisher, reverseMap: NATReverseMap())
            f.beginBatch(now: second)
            return f
        }
        func send(_ frame: [UInt8], _ worker: Int) -> Int? {
            var f = frame
            guard withFrame(&f, { workers[worker].handle($0) }) == .transmit else { return nil }
            return RoutesFixture.backendNumber(mac: TestFrames.fields(f).dstMAC)
        }
        var hashed = Self.forwarder(reference)
        var onFirst: [UInt16] = []
        var movedOff = 0
        for port in UInt16(1)...60 {
            let syn = clientFrame(port: port, flags: TCPHeader.syn)
            let home = Self.send(syn, &hashed)
            let placed = send(syn, Int(port) % 2)
            if home == 1 && onFirst.count == 2 {
                #expect(placed == 2 || placed == 3, "port \(port): s1 is full")
                movedOff += 1
            } else {
                #expect(placed == home, "port \(port): hashed to s\(home ?? 0), placed on s\(placed ?? 0)")
            }
            if placed == 1 { onFirst.append(port) }
        }
        #expect(onFirst.count == 2 && movedOff > 0, "s1 took \(onFirst.count); \(movedOff) moved off it")
        #expect(Self.open("s1", fixture) == 2)
        #expect(workers.allSatisfy { $0.counters.snapshot().drops(.serversFull) == 0 })
        // One of s1's connections is reset: passthrough sees it end, and s1 has room again.
        let ended = onFirst[0]
        #expect(send(clientFrame(port: ended, flags: TCPHeader.rst), Int(ended) % 2) == 1)
        #expect(Self.open("s1", fixture) == 1)
        for port in UInt16(100)..<400 where Self.send(clientFrame(port: port, flags: TCPHeader.syn), &hashed) == 1 {
            #expect(send(clientFrame(port: port, flags: TCPHeader.syn), 0) == 1)
            break
        }
        #expect(Self.open("s1", fixture) == 2)
    }

    @Test("DSR, maglev: a SYN whose hash's server is full is dropped (servers_full), not moved (a later segment the table lost would be taken up on the hash's server); every other flow keeps its hash's server")
    func dsrByHashDoesNotMoveASYN() {
        let fixture = RoutesFixture(balance: .maglev, count: 3, limits: [2, 0, 0])
        let reference = RoutesFixture(balance: .maglev, count: 3)
        var workers = [Self.forwarder(fixture, worker: 0, workers: 2), Self.forwarder(fixture, worker: 1, workers: 2)]
        var hashed = Self.forwarder(reference)
        var onFirst = 0
        var refused = 0
        for port in UInt16(1)...60 {
            let syn = clientFrame(port: port, flags: TCPHeader.syn)
            let home = Self.send(syn, &hashed)
            let placed = Self.send(syn, &workers[Int(port) % 2])
            if home == 1 && onFirst == 2 {
                #expect(placed == nil, "port \(port): s1 is full")
                refused += 1
            } else {
                #expect(placed == home, "port \(port): hashed to s\(home ?? 0), placed on s\(placed ?? 0)")
            }
            if placed == 1 { onFirst += 1 }
        }
        #expect(onFirst == 2 && refused > 0)
        let drops = workers.reduce(0) { $0 + $1.counters.snapshot().drops(.serversFull) }
        #expect(drops == UInt64(refused))
        #expect(Self.open("s1", fixture) == 2)
    }

    @Test("every server full: the SYN is dropped and counted (servers_full, to the frontend too); the client's retry gets in once a flow ends")
    func everyServerFullDropsTheSYN() throws {
        let fixture = RoutesFixture(balance: .wrr, count: 2, limits: [1, 1])
        var dsr = Self.forwarder(fixture)
        let first = try #require(Self.send(clientFrame(port: 1, flags: TCPHeader.syn), &dsr))
        let other = try #require(Self.send(clientFrame(port: 2, flags: TCPHeader.syn), &dsr))
        #expect(Set([first, other]) == [1, 2])
        #expect(Self.send(clientFrame(port: 3, flags: TCPHeader.syn), &dsr) == nil)
        #expect(Self.send(clientFrame(port: 3, flags: TCPHeader.syn), &dsr) == nil, "a retransmitted SYN counts again")
        let routes = fixture.publisher.current().routes
        let web = try #require(routes.frontendIndex(named: "web"))
        #expect(dsr.counters.snapshot().drops(.serversFull) == 2 && dsr.counters.refused(.serversFull, frontend: web) == 2)
        #expect(dsr.counters.snapshot().drops(.noBackend) == 0 && dsr.counters.refused(.noBackend, frontend: web) == 0)
        // A placed flow's own SYN, sent again, is its flow's: not turned away.
        #expect(Self.send(clientFrame(port: 1, flags: TCPHeader.syn), &dsr) == first)
        // The flusher books the drops to the frontend, where /stats and /metrics read them.
        BackendStatsFlusher(workers: [dsr.counters]).flush(into: routes)
        let counters = try #require(fixture.runtime.snapshots.load().value.frontends.first?.counters)
        #expect(counters.serversFull.load(ordering: .relaxed) == 2)
        #expect(counters.noBackend.load(ordering: .relaxed) == 0)
        let stats = StatsDocument(view: fixture.runtime.view(), mode: .dsr, uptime: .seconds(1), version: "test").json.serialized()
        #expect(stats.contains("\"servers_full\":2"), "\(stats)")
        // The first flow ends: the client's next SYN is let in, to the server with room.
        #expect(Self.send(clientFrame(port: 1, flags: TCPHeader.rst), &dsr) == first)
        for _ in 0..<64 { dsr.beginBatch(now: 12 * second) }
        #expect(Self.send(clientFrame(port: 3, flags: TCPHeader.syn), &dsr) == first)
    }

    @Test("a reload's new limit applies to new flows at once; a lower one closes nothing")
    func aReloadChangesTheLimitForNewFlows() throws {
        var fixture = RoutesFixture(balance: .wrr, count: 2, limits: [1, 1])
        var dsr = Self.forwarder(fixture)
        var placed: [UInt16: Int] = [:]
        for port in UInt16(1)...2 { placed[port] = Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) }
        #expect(Set(placed.values) == [1, 2])
        #expect(Self.send(clientFrame(port: 3, flags: TCPHeader.syn), &dsr) == nil)
        // s1 may hold 3 now: the waiting client and the next get in, on s1.
        fixture.config = RoutesFixture.makeConfig(balance: .wrr, count: 2, weights: nil, limits: [3, 1])
        fixture.runtime.apply(fixture.config)
        fixture.republish()
        dsr.beginBatch(now: 2 * second)
        #expect(Self.send(clientFrame(port: 3, flags: TCPHeader.syn), &dsr) == 1)
        #expect(Self.send(clientFrame(port: 4, flags: TCPHeader.syn), &dsr) == 1)
        #expect(Self.send(clientFrame(port: 5, flags: TCPHeader.syn), &dsr) == nil)
        #expect(Self.open("s1", fixture) == 3)
        // Lowered to 1: s1's three flows go on; new ones find every server full.
        fixture.config = RoutesFixture.makeConfig(balance: .wrr, count: 2, weights: nil, limits: [1, 1])
        fixture.runtime.apply(fixture.config)
        fixture.republish()
        dsr.beginBatch(now: 3 * second)
        for port in UInt16(1)...4 {
            let expected = port <= 2 ? placed[port] : 1
            #expect(Self.send(clientFrame(port: port, flags: TCPHeader.ack, payload: [1]), &dsr) == expected)
        }
        #expect(Self.send(clientFrame(port: 6, flags: TCPHeader.syn), &dsr) == nil)
        #expect(dsr.counters.snapshot().drops(.serversFull) == 3)
    }

    @Test("DSR takes up a connection it does not track on its hash's server even when that server is full (it is open already)")
    func aMidFlowSegmentIsNotTurnedAway() throws {
        let fixture = RoutesFixture(balance: .maglev, count: 2, limits: [1, 1])
        let reference = RoutesFixture(balance: .maglev, count: 2)
        var dsr = Self.forwarder(fixture)
        var hashed = Self.forwarder(reference)
        var filled = Set<Int>()
        for port in UInt16(1)..<100 where filled.count < 2 {
            if let s = Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) { filled.insert(s) }
        }
        #expect(filled == [1, 2])
        let port: UInt16 = 5000
        let home = try #require(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &hashed))
        #expect(Self.send(clientFrame(port: port, flags: TCPHeader.ack, payload: [1]), &dsr) == home)
        #expect(dsr.counters.snapshot().flowsAdopted == 1)
        #expect(Self.send(clientFrame(port: port + 1, flags: TCPHeader.syn), &dsr) == nil, "a new connection is turned away")
    }

    @Test("a frontend's max_connections: its open flows over every worker bound its new ones; at the limit a SYN is dropped (over_limit, to the frontend too), a DSR flow taken up mid-connection is not; an ended flow frees a place")
    func theFrontendLimit() throws {
        var fixture = RoutesFixture(balance: .maglev, count: 2)
        fixture.config.frontends[0].maxConnections = 3
        fixture.runtime.apply(fixture.config)
        fixture.republish()
        var workers = [Self.forwarder(fixture, worker: 0, workers: 2), Self.forwarder(fixture, worker: 1, workers: 2)]
        for port in UInt16(1)...3 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &workers[Int(port) % 2]) != nil) }
        #expect(Self.send(clientFrame(port: 4, flags: TCPHeader.syn), &workers[0]) == nil)
        #expect(Self.send(clientFrame(port: 5, flags: TCPHeader.syn), &workers[1]) == nil, "counted over both workers")
        let routes = fixture.publisher.current().routes
        let web = try #require(routes.frontendIndex(named: "web"))
        #expect(workers.map { $0.counters.refused(.overLimit, frontend: web) } == [1, 1])
        #expect(workers.allSatisfy { $0.counters.snapshot().drops(.overLimit) == 1 && $0.counters.snapshot().drops(.serversFull) == 0 })
        // Open already elsewhere: taken up on its hash's server.
        #expect(Self.send(clientFrame(port: 6, flags: TCPHeader.ack, payload: [1]), &workers[0]) != nil)
        BackendStatsFlusher(workers: workers.map(\.counters)).flush(into: routes)
        let counters = try #require(fixture.runtime.snapshots.load().value.frontends.first?.counters)
        #expect(counters.overLimit.load(ordering: .relaxed) == 2)
        // Two flows end (a reset, then DSR's closing time): two places free.
        #expect(Self.send(clientFrame(port: 2, flags: TCPHeader.rst), &workers[0]) != nil)
        #expect(Self.send(clientFrame(port: 6, flags: TCPHeader.rst), &workers[0]) != nil)
        for _ in 0..<64 { workers[0].beginBatch(now: 12 * second) }
        #expect(Self.send(clientFrame(port: 4, flags: TCPHeader.syn), &workers[1]) != nil)
        #expect(Self.send(clientFrame(port: 7, flags: TCPHeader.syn), &workers[1]) == nil)
    }

    @Test("a backend with its limit still fills one cache line")
    func aBackendIsOneCacheLine() {
        #expect(MemoryLayout<PacketRoutes.Backend>.stride == 64)
    }

    @Test("a server's limit counts its flows under every frontend whose pool holds it")
    func theLimitCountsEveryFrontend() throws {
        let vip2 = Endpoint(address: .v4(0x0A4D_0065), port: 80)
        var fixture = RoutesFixture(balance: .wrr, count: 2, limits: [2, 0])
        fixture.config.frontends.append(FrontendConfig(name: "web2", listen: vip2, pool: "pool", balance: .wrr))
        fixture.runtime.apply(fixture.config)
        let routes = fixture.republish()
        for slot in routes.servers.indices where routes.servers[slot]?.name == "s1" {
            #expect(routes.backends[slot].limit == 2 && routes.backends[slot].limitSlotsCount == 2)
        }
        var dsr = Self.forwarder(fixture)
        var counts = [0, 0, 0]
        for port in UInt16(1)...4 { counts[Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) ?? 0] += 1 }
        #expect(counts == [0, 2, 2])
        for port in UInt16(10)...13 {
            let syn = TestFrames.ipv4TCP(src: 0x0A4D_000A, dst: 0x0A4D_0065, sport: port, dport: 80, flags: TCPHeader.syn)
            #expect(Self.send(syn, &dsr) == 2, "s1 holds its two flows under web: full for web2 too")
        }
        #expect(Self.open("s1", fixture) == 2 && Self.open("s2", fixture) == 6)
    }
}
