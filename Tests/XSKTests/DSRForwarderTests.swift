import Balancer
import Testing
@testable import XSK

@Suite("DSR: MAC rewrite, consistent placement, flows kept until they end")
struct DSRForwarderTests {
    static func forwarder(_ fixture: RoutesFixture, capacity: Int = 1024) -> DSRForwarder {
        var f = DSRForwarder(settings: ForwarderSettings(capacity: capacity), routes: fixture.publisher)
        f.beginBatch(now: second)
        return f
    }

    /// Sends `frame` through `forwarder`; returns the backend number it went to, or nil if dropped.
    static func send(_ frame: [UInt8], _ forwarder: inout DSRForwarder) -> Int? {
        var f = frame
        let verdict = withFrame(&f) { forwarder.handle($0) }
        guard verdict == .transmit else { return nil }
        return RoutesFixture.backendNumber(mac: TestFrames.fields(f).dstMAC)
    }

    @Test func aClientFrameLeavesWithTheBackendsMACAndEveryOtherByteAsReceived() {
        let fixture = RoutesFixture(balance: .wrr)
        var dsr = Self.forwarder(fixture)
        let original = clientFrame(port: 40_000, flags: TCPHeader.syn, payload: Array("hello".utf8),
                                   ipOptions: [1, 1, 1, 0])
        var f = original
        #expect(withFrame(&f) { dsr.handle($0) } == .transmit)
        let out = TestFrames.fields(f)
        #expect(RoutesFixture.backendNumber(mac: out.dstMAC) != nil)
        #expect(out.srcMAC == TestFrames.lbMAC)
        #expect(Array(f[12...]) == Array(original[12...]), "IP and TCP must be untouched")
        let stats = dsr.counters.snapshot()
        #expect(stats.txPackets == 1 && stats.flowsCreated == 1 && stats.flowsActive == 1)
    }

    @Test func maglevPlacementEqualsTheBalancersSchedulerForTheSame5Tuple() {
        for balance in [BalanceAlgorithm.maglev, .source] {
            let fixture = RoutesFixture(balance: balance, count: 5, weights: [1, 2, 3, 1, 1])
            var dsr = Self.forwarder(fixture, capacity: 4096)
            let route = fixture.runtime.snapshots.load().value.frontends[0]
            var scheduler = Scheduler(route: route)
            var rng = TestRandom(seed: 99)
            for _ in 0..<1000 {
                let client = UInt32.random(in: 0x0A00_0000...0x0AFF_FFFF, using: &rng)
                let port = UInt16.random(in: 1024...65535, using: &rng)
                let chosen = Self.send(clientFrame(client: client, port: port, flags: TCPHeader.syn), &dsr)
                let expected = scheduler.pick(for: FlowKey(client: Endpoint(address: .v4(client), port: port),
                                                           vip: RoutesFixture.vip), in: route)
                #expect(chosen != nil && expected != nil)
                if let chosen, let expected { #expect(route.servers[expected].id.name == "s\(chosen)") }
            }
        }
    }

    @Test("maglev/source: a segment of a connection the table does not hold (a restart, an ECMP move) goes where its SYN went, and is tracked from then on; wrr drops it, and no reset is taken up")
    func aMidFlowSegmentIsPlacedByItsHash() {
        for balance in [BalanceAlgorithm.maglev, .source] {
            let fixture = RoutesFixture(balance: balance, count: 5)
            var before = Self.forwarder(fixture, capacity: 4096)
            var after = Self.forwarder(fixture, capacity: 4096)  // the restarted balancer: an empty table
            for port in UInt16(2000)..<2100 {
                let client = 0x0A4D_2000 + UInt32(port)
                let opened = Self.send(clientFrame(client: client, port: port, flags: TCPHeader.syn), &before)
                let midway = Self.send(clientFrame(client: client, port: port, flags: TCPHeader.ack, payload: [1, 2, 3]), &after)
                #expect(opened != nil && midway == opened, "\(balance) port \(port): SYN to \(String(describing: opened)), later segment to \(String(describing: midway))")
            }
            let stats = after.counters.snapshot()
            #expect(stats.flowsAdopted == 100 && stats.flowsCreated == 100 && stats.flowsActive == 100)
            #expect(stats.drops(.noFlow) == 0)
            // Tracked now: the next segment is an established flow's.
            #expect(Self.send(clientFrame(client: 0x0A4D_2000 + 2000, port: 2000, flags: TCPHeader.ack), &after) != nil)
            #expect(after.counters.snapshot().flowsCreated == 100)
            #expect(Self.send(clientFrame(client: 0x0A4D_3000, port: 3000, flags: TCPHeader.rst), &after) == nil)
            #expect(after.counters.snapshot().drops(.noFlow) == 1, "a reset of no flow is dropped, not taken up")
        }
        let fixture = RoutesFixture(balance: .wrr, count: 3)
        var wrr = Self.forwarder(fixture)
        #expect(Self.send(clientFrame(client: 0x0A4D_2000, port: 2000, flags: TCPHeader.ack), &wrr) == nil)
        #expect(wrr.counters.snapshot().drops(.noFlow) == 1 && wrr.counters.snapshot().flowsAdopted == 0)
    }

    @Test func aBackendWithoutAMACIsNeverChosenAndIsReported() {
        for balance in BalanceAlgorithm.allCases {
            let fixture = RoutesFixture(balance: balance, count: 3, withoutMAC: [2])
            let routes = fixture.publisher.current().routes
            #expect(routes.unresolved.map(\.server.name) == ["s2"])
            var dsr = Self.forwarder(fixture, capacity: 4096)
            var seen = Set<Int>()
            for port in UInt16(1000)..<1300 {
                // Many clients: `source` places by client address only.
                let chosen = Self.send(clientFrame(client: 0x0A4D_1000 + UInt32(port), port: port, flags: TCPHeader.syn),
                                       &dsr)
                #expect(chosen != nil)
                if let chosen { seen.insert(chosen) }
            }
            #expect(seen == [1, 3], "\(balance): \(seen)")
        }
    }

    @Test func aBackupStandsByUntilNoOtherServerHasAMAC() {
        for balance in BalanceAlgorithm.allCases {
            for (withoutMAC, expected) in [(Set<Int>(), Set([1, 2])), ([1, 2], [3])] {
                var fixture = RoutesFixture(balance: balance, count: 3, withoutMAC: withoutMAC)
                fixture.config.pools[0].servers[2].backup = true
                fixture.runtime.apply(fixture.config)
                fixture.republish()
                var dsr = Self.forwarder(fixture, capacity: 4096)
                var seen = Set<Int>()
                for port in UInt16(1000)..<1200 {
                    let chosen = Self.send(clientFrame(client: 0x0A4D_1000 + UInt32(port), port: port, flags: TCPHeader.syn), &dsr)
                    #expect(chosen != nil)
                    if let chosen { seen.insert(chosen) }
                }
                #expect(seen == expected, "\(balance), without MAC \(withoutMAC): \(seen)")
                // Said so: the frontend shows on_backup although the runtime does not.
                let standIn = fixture.publisher.current().routes.onBackupForMAC
                #expect(Array(standIn.keys) == (withoutMAC.isEmpty ? [] : [fixture.config.frontends[0].name]), "\(standIn)")
                let document = StatsDocument(view: fixture.runtime.view(), mode: .dsr, uptime: .seconds(1), version: "test",
                                             dataPlane: DataPlaneStats(json: .object([]), metrics: [],
                                                                       frontendsOnBackup: Set(standIn.keys)))
                #expect(document.frontends.first?.onBackup == !withoutMAC.isEmpty)
            }
        }
    }

    @Test("allow / deny: a new flow from a refused source is dropped and counted to its frontend; allowed ones are placed; a reload changes the lists")
    func sourceLists() throws {
        var fixture = RoutesFixture(balance: .maglev, count: 2)
        // 10.77.16.0/28 refused; otherwise only 10.77.0.0/16 allowed.
        fixture.config.frontends[0].sources = SourceFilter(allow: [try #require(.init("10.77.0.0/16"))],
                                                           deny: [try #require(.init("10.77.16.0/28"))])
        fixture.runtime.apply(fixture.config)
        fixture.republish()
        var dsr = Self.forwarder(fixture)
        #expect(Self.send(clientFrame(client: 0x0A4D_1005, port: 1000, flags: TCPHeader.syn), &dsr) == nil, "denied")
        #expect(Self.send(clientFrame(client: 0x0A4E_0001, port: 1001, flags: TCPHeader.syn), &dsr) == nil, "not allowed")
        // A mid-flow segment from a refused source is not taken up either.
        #expect(Self.send(clientFrame(client: 0x0A4D_1006, port: 1002, flags: TCPHeader.ack), &dsr) == nil)
        #expect(Self.send(clientFrame(client: 0x0A4D_1105, port: 1003, flags: TCPHeader.syn), &dsr) != nil, "allowed")
        let stats = dsr.counters.snapshot()
        #expect(stats.drops(.denied) == 3 && stats.flowsCreated == 1, "\(stats.drops)")
        #expect(dsr.counters.refused(.denied, frontend: 0) + dsr.counters.refused(.denied, frontend: 1) == 3)
        // The lists go away: the same source is placed.
        fixture.config.frontends[0].sources = SourceFilter()
        fixture.runtime.apply(fixture.config)
        fixture.republish()
        dsr.beginBatch(now: second)
        #expect(Self.send(clientFrame(client: 0x0A4D_1005, port: 1004, flags: TCPHeader.syn), &dsr) != nil)
    }

    @Test("wrr over large weights: the per-worker sequence is scaled down to at most maxWRRCycle steps, proportions kept")
    func largeWeightsMakeABoundedSequence() throws {
        let weights = Array(repeating: 1000, count: 69) + [501]  // no common divisor: a cycle of 69 501
        let fixture = RoutesFixture(balance: .wrr, count: 70, weights: weights, maxBackendSlots: 128)
        let routes = fixture.publisher.current().routes
        let f = try #require((0..<routes.frontendCount).map { routes.frontends[$0] }.first { $0.present })
        let n = Int(f.sequenceCount)
        #expect(n > 0 && n <= FrontendRoute.maxWRRCycle + 70, "\(n)")
        var counts: [UInt32: Int] = [:]
        for i in 0..<n { counts[routes.slots[Int(f.sequenceStart) + i], default: 0] += 1 }
        #expect(counts.count == 70)
        let small = counts.values.min()!, large = counts.values.max()!
        #expect(abs(Double(large) / Double(small) - 1000.0 / 501) < 0.03, "1000:501 kept: \(large):\(small)")
    }

    @Test func severalVIPsEachReachTheirOwnPool() {
        let web = Endpoint(address: .v4(0x0A4D_0064), port: 80)
        let tls = Endpoint(address: .v4(0x0A4D_0064), port: 443)
        let other = Endpoint(address: .v4(0x0A4D_0065), port: 80)
        let pools = (1...3).map { i in
            PoolConfig(name: "p\(i)", servers: [ServerConfig(name: "s", address: RoutesFixture.backendAddress(i))])
        }
        let config = ConveyConfig(frontends: [FrontendConfig(name: "web", listen: web, pool: "p1"),
                                              FrontendConfig(name: "tls", listen: tls, pool: "p2"),
                                              FrontendConfig(name: "other", listen: other, pool: "p3")],
                                  pools: pools)
        let runtime = BalancerRuntime(config: config)
        let publisher = PacketRoutesPublisher()
        var macs: [IPAddress: MACAddress] = [:]
        for i in 1...3 { macs[RoutesFixture.backendAddress(i).address] = MACAddress(rawValue: RoutesFixture.backendMAC(i)) }
        publisher.publish(snapshot: runtime.snapshots.load().value, backendMACs: macs, interfaceMAC: RoutesFixture.interfaceMAC)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 64), routes: publisher)
        dsr.beginBatch(now: second)
        for (vip, expected) in [(web, 1), (tls, 2), (other, 3)] {
            guard case .v4(let a) = vip.address else { continue }
            let f = TestFrames.ipv4TCP(src: 0x0A4D_000A, dst: a, sport: 5555, dport: vip.port, flags: TCPHeader.syn)
            #expect(Self.send(f, &dsr) == expected)
        }
        let stray = TestFrames.ipv4TCP(src: 0x0A4D_000A, dst: 0x0A4D_0065, sport: 5555, dport: 443, flags: TCPHeader.syn)
        #expect(Self.send(stray, &dsr) == nil)
        #expect(dsr.counters.snapshot().drops(.notForUs) == 1)
    }

    @Test func aNonSYNFrameOfNoFlowIsDroppedAndCounted() {
        var dsr = Self.forwarder(RoutesFixture(balance: .wrr))
        #expect(Self.send(clientFrame(port: 5000, flags: TCPHeader.ack), &dsr) == nil)
        #expect(dsr.counters.snapshot().drops(.noFlow) == 1)
        #expect(dsr.flowCount == 0)
    }

    @Test func aFrameToNoVIPIsDroppedAsNotForUs() {
        var dsr = Self.forwarder(RoutesFixture(balance: .wrr))
        var f = TestFrames.ipv4TCP(src: 0x0A4D_000A, dst: 0x0A4D_0065, sport: 1, dport: 80, flags: TCPHeader.syn)
        #expect(withFrame(&f) { dsr.handle($0) } == .drop)
        #expect(dsr.counters.snapshot().drops(.notForUs) == 1)
    }

    @Test func establishedFlowsKeepTheirBackendWhenWeightsChange() {
        for balance in [BalanceAlgorithm.wrr, .maglev] {
            var fixture = RoutesFixture(balance: balance, count: 3)
            var dsr = Self.forwarder(fixture)
            var placed: [UInt16: Int] = [:]
            for port in UInt16(2000)..<2060 {
                placed[port] = Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr)
                #expect(Self.send(clientFrame(port: port, flags: TCPHeader.ack), &dsr) == placed[port])
            }
            // New weights: new flows now go mostly to s3, but the established ones stay put.
            fixture.config = RoutesFixture.makeConfig(balance: balance, count: 3, weights: [1, 1, 20])
            fixture.runtime.apply(fixture.config)
            fixture.republish()
            dsr.beginBatch(now: 2 * second)
            for port in UInt16(2000)..<2060 {
                #expect(Self.send(clientFrame(port: port, flags: TCPHeader.ack, payload: [1]), &dsr) == placed[port])
            }
            var toThird = 0
            for port in UInt16(3000)..<3100 where Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == 3 {
                toThird += 1
            }
            #expect(toThird > 70, "\(balance): the new weights apply to new flows")
        }
    }

    @Test func aFlowOfABackendWhoseDrainEndedIsDroppedAndRemoved() {
        let fixture = RoutesFixture(balance: .wrr, count: 2)
        var dsr = Self.forwarder(fixture)
        var onFirst: [UInt16] = []
        for port in UInt16(4000)..<4010 where Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == 1 {
            onFirst.append(port)
        }
        #expect(!onFirst.isEmpty)
        // Draining (weight 0, still keeping flows): established flows go on.
        fixture.republish { snapshot in
            snapshot.frontends[0].servers[0].state = .drain
            snapshot.frontends[0].selectable = [1]
        }
        dsr.beginBatch(now: 2 * second)
        #expect(Self.send(clientFrame(port: onFirst[0], flags: TCPHeader.ack), &dsr) == 1)
        // Drain over: its flows are dropped, counted, and removed.
        fixture.republish { snapshot in
            snapshot.frontends[0].servers[0].state = .drain
            snapshot.frontends[0].servers[0].keepsFlows = false
            snapshot.frontends[0].selectable = [1]
        }
        let before = dsr.flowCount
        dsr.beginBatch(now: 3 * second)
        let afterSweep = dsr.flowCount
        for port in onFirst { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.ack), &dsr) == nil) }
        let stats = dsr.counters.snapshot()
        #expect(before - dsr.flowCount == onFirst.count)
        // The batch sweep may already have removed them (flowsEnded); the rest are dropped on sight.
        #expect(stats.flowsEnded == UInt64(onFirst.count))
        #expect(stats.drops(.backendGone) + stats.drops(.noFlow) == UInt64(onFirst.count))
        #expect(afterSweep <= before)
    }

    @Test func aBackendRemovedFromTheSnapshotEndsItsFlows() {
        let fixture = RoutesFixture(balance: .wrr, count: 2)
        var dsr = Self.forwarder(fixture, capacity: 100_000)  // too big for one sweep to reach every slot
        var onSecond: [UInt16] = []
        for port in UInt16(4000)..<4010 where Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == 2 {
            onSecond.append(port)
        }
        fixture.republish { snapshot in
            snapshot.frontends[0].servers.removeLast()
            snapshot.frontends[0].selectable = [0]
        }
        dsr.beginBatch(now: 2 * second)
        for port in onSecond { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.ack), &dsr) == nil) }
        let stats = dsr.counters.snapshot()
        #expect(stats.drops(.backendGone) + stats.drops(.noFlow) == UInt64(onSecond.count))
        #expect(stats.flowsEnded == UInt64(onSecond.count))
        #expect(dsr.flowCount == 10 - onSecond.count)
    }

    @Test func perBackendTrafficIsFlushedIntoTheServersCounters() {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var dsr = Self.forwarder(fixture)
        let syn = clientFrame(port: 7000, flags: TCPHeader.syn)
        let data = clientFrame(port: 7000, flags: TCPHeader.ack, payload: [UInt8](repeating: 1, count: 100))
        #expect(Self.send(syn, &dsr) == 1)
        #expect(Self.send(data, &dsr) == 1)
        let flusher = BackendStatsFlusher(workers: [dsr.counters])
        let routes = fixture.publisher.current().routes
        flusher.flush(into: routes)
        flusher.flush(into: routes)  // a second flush adds nothing new
        let totals = fixture.runtime.snapshots.load().value.frontends[0].servers[0].counters.snapshot()
        #expect(totals.totalConnections == 1 && totals.currentConnections == 1)
        #expect(totals.bytesTx == Int64(syn.count + data.count))
    }

    /// A SYN no backend can take is a drop (`no_backend`) and counts to its frontend's
    /// `no_backend`, as a refused client does in proxy mode.
    @Test func newConnectionsNoBackendCanTakeCountToTheFrontend() {
        let fixture = RoutesFixture(balance: .wrr, count: 1, withoutMAC: [1])
        var dsr = Self.forwarder(fixture)
        for port in UInt16(7000)..<7003 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == nil) }
        #expect(dsr.counters.snapshot().drops(.noBackend) == 3)
        let flusher = BackendStatsFlusher(workers: [dsr.counters])
        flusher.flush(into: fixture.publisher.current().routes)
        flusher.flush(into: fixture.publisher.current().routes)  // counted once
        let frontend = fixture.runtime.snapshots.load().value.frontends[0].counters
        #expect(frontend.noBackend.load(ordering: .relaxed) == 3)
    }

    /// Two frontends over one pool: each frontend's flows and bytes are counted to it, and
    /// each server's counters hold the sum over both.
    @Test func aPoolSharedByTwoFrontendsCountsEachFrontendsOwnTraffic() {
        let runtime = BalancerRuntime(config: FrontendIndexTests.config([("a", 0x64), ("b", 0x65)]))
        let publisher = PacketRoutesPublisher(maxBackendSlots: 16)
        let macs = Dictionary(uniqueKeysWithValues: (1...2).map {
            (RoutesFixture.backendAddress($0).address, MACAddress(rawValue: RoutesFixture.backendMAC($0)))
        })
        publisher.publish(snapshot: runtime.snapshots.load().value, backendMACs: macs, interfaceMAC: RoutesFixture.interfaceMAC)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 1024), routes: publisher)
        dsr.beginBatch(now: second)
        var bytes: [UInt32: Int] = [0x64: 0, 0x65: 0]
        let flows: [UInt32: Int] = [0x64: 3, 0x65: 5]
        for (vip, count) in flows {
            for port in UInt16(1000)..<UInt16(1000 + count) {
                var syn = TestFrames.ipv4TCP(src: 0x0A4D_000A, dst: 0x0A4D_0000 + vip, sport: port, dport: 80,
                                             flags: TCPHeader.syn)
                var data = TestFrames.ipv4TCP(src: 0x0A4D_000A, dst: 0x0A4D_0000 + vip, sport: port, dport: 80,
                                              flags: TCPHeader.ack, payload: [UInt8](repeating: 7, count: Int(vip) - 0x50))
                bytes[vip]! += syn.count + data.count
                #expect(withFrame(&syn, { dsr.handle($0) }) == .transmit)
                #expect(withFrame(&data, { dsr.handle($0) }) == .transmit)
            }
        }
        BackendStatsFlusher(workers: [dsr.counters]).flush(into: publisher.current().routes)

        let snapshot = runtime.snapshots.load().value
        for (name, vip) in [("a", UInt32(0x64)), ("b", 0x65)] {
            let counted = snapshot.frontend(named: name)!.counters
            #expect(counted.totalConnections.load(ordering: .relaxed) == Int64(flows[vip]!), "frontend \(name)")
            #expect(counted.bytesTx.load(ordering: .relaxed) == Int64(bytes[vip]!), "frontend \(name)")
        }
        let servers = snapshot.frontends[0].servers.map { $0.counters.snapshot() }
        #expect(servers.map(\.totalConnections).reduce(0, +) == 8)
        #expect(servers.map(\.bytesTx).reduce(0, +) == Int64(bytes.values.reduce(0, +)))
    }

    /// A frontend sharing a pool goes away: its flows end (swept), and their ends are booked
    /// to the servers, which live on under the other frontend, so their open counts come back
    /// down to the other frontend's flows.
    @Test func removingOneOfTwoFrontendsSharingAPoolBooksItsFlowsEnds() {
        let runtime = BalancerRuntime(config: FrontendIndexTests.config([("a", 0x64), ("b", 0x65)]))
        let publisher = PacketRoutesPublisher(maxBackendSlots: 16)
        let macs = Dictionary(uniqueKeysWithValues: (1...2).map {
            (RoutesFixture.backendAddress($0).address, MACAddress(rawValue: RoutesFixture.backendMAC($0)))
        })
        func publish() {
            publisher.publish(snapshot: runtime.snapshots.load().value, backendMACs: macs, interfaceMAC: RoutesFixture.interfaceMAC)
        }
        publish()
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 1024), routes: publisher)
        let flusher = BackendStatsFlusher(workers: [dsr.counters])
        func flush() {
            publisher.countersFlushStarting()
            flusher.flush(into: publisher.current().routes)
        }
        func open() -> Int64 {
            runtime.snapshots.load().value.frontend(named: "b")!.servers.map { $0.counters.snapshot().currentConnections }
                .reduce(0, +)
        }
        dsr.beginBatch(now: second)
        for (vip, count) in [(UInt32(0x64), 10), (0x65, 4)] {
            for port in UInt16(1000)..<UInt16(1000 + count) {
                #expect(FrontendIndexTests.send(to: vip, port: port, flags: TCPHeader.syn, &dsr) != nil)
            }
        }
        flush()
        #expect(open() == 14)

        runtime.apply(FrontendIndexTests.config([("b", 0x65)]))
        publish()
        for t in UInt64(2)...6 { dsr.beginBatch(now: t * second) }  // the sweep ends a's flows
        #expect(dsr.flowCount == 4)
        flush()
        #expect(open() == 4, "a's 10 flows ended and were booked to the servers b still uses")
        // The retired slots are freed in time (seen clean, then a whole flush), and a's
        // counters go with them.
        #expect(publisher.heldBackendSlots == 4)
        _ = publisher.canReclaimSlots
        flush(); flush(); publish()
        #expect(publisher.heldBackendSlots == 2)
        #expect(publisher.current().routes.serverCounters.compactMap { $0 }.count == 2)
    }
}
