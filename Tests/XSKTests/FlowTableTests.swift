import Balancer
import Testing
@testable import XSK

@Suite("Flow table: hard capacity, eviction of idle flows, expiry by state")
struct FlowTableTests {
    static func send(_ frame: [UInt8], _ forwarder: inout DSRForwarder) -> PacketVerdict {
        var f = frame
        return withFrame(&f) { forwarder.handle($0) }
    }

    /// A DSR forwarder with room for 8 flows, which evicts only flows idle for a second, at 1 s.
    static func smallTable(_ fixture: RoutesFixture) -> DSRForwarder {
        var settings = ForwarderSettings(capacity: 8)
        settings.minIdleForEviction = second
        var dsr = DSRForwarder(settings: settings, routes: fixture.publisher)
        dsr.beginBatch(now: second)
        return dsr
    }

    @Test func aFullTableEvictsTheOldestIdleFlowAndCountsIt() {
        let fixture = RoutesFixture(balance: .wrr)
        var dsr = Self.smallTable(fixture)
        for port in UInt16(1)...8 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == .transmit) }
        // Full, and every flow was seen this very second: nothing is idle enough to evict.
        #expect(Self.send(clientFrame(port: 100, flags: TCPHeader.syn), &dsr) == .drop)
        #expect(dsr.counters.snapshot().drops(.tableFull) == 1)
        // Later, flows 1...8 are idle; keep flow 8 busy so it is not one to go.
        dsr.beginBatch(now: 3 * second)
        #expect(Self.send(clientFrame(port: 8, flags: TCPHeader.ack), &dsr) == .transmit)
        for port in UInt16(101)...107 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == .transmit) }
        // Now every flow was seen within the second again: the next SYN finds no idle victim.
        #expect(Self.send(clientFrame(port: 108, flags: TCPHeader.syn), &dsr) == .drop)
        let stats = dsr.counters.snapshot()
        #expect(dsr.flowCount == 8)
        #expect(stats.flowsEvicted == 7)
        #expect(stats.drops(.tableFull) == 2)
        #expect(stats.flowsActive == 8)
        #expect(Self.send(clientFrame(port: 8, flags: TCPHeader.ack), &dsr) == .transmit, "the busy flow survived")
    }

    @Test("the occupancy bitmap (a takeover's export) follows every insert, eviction and expiry")
    func theOccupancyBitmapFollowsTheTable() {
        let fixture = RoutesFixture(balance: .wrr)
        var dsr = Self.smallTable(fixture)
        func check(_ when: String) {
            let table = dsr.core.table
            let scanned = (0..<table.slotCount).filter { table.entry(at: $0).pointee.state != .empty }
            #expect(table.occupiedSlots() == scanned, "\(when)")
            #expect(scanned.count == table.count, "\(when)")
        }
        check("empty")
        for port in UInt16(1)...8 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == .transmit) }
        check("full")
        dsr.beginBatch(now: 3 * second)
        for port in UInt16(101)...106 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == .transmit) }
        check("after evictions")
        dsr.beginBatch(now: 1000 * second)
        dsr.core.sweep(dsr.core.table.slotCount)
        #expect(dsr.flowCount == 0)
        check("after expiry")
    }

    @Test func aFullTableEvictsHalfOpenFlowsBeforeEstablishedOnes() {
        let fixture = RoutesFixture(balance: .wrr)
        var dsr = Self.smallTable(fixture)
        for port in UInt16(1)...4 {
            #expect(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == .transmit)
            #expect(Self.send(clientFrame(port: port, flags: TCPHeader.ack), &dsr) == .transmit)
        }
        // A flood of SYNs, newer than the quiet established flows 1...4.
        dsr.beginBatch(now: 2 * second)
        for port in UInt16(11)...14 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == .transmit) }
        dsr.beginBatch(now: 4 * second)
        for port in UInt16(21)...24 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == .transmit) }
        #expect(dsr.counters.snapshot().flowsEvicted == 4)
        // The new SYNs replaced the older half-open flows, not the older established ones.
        for port in UInt16(1)...4 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.ack), &dsr) == .transmit) }
        for port in UInt16(11)...14 { _ = Self.send(clientFrame(port: port, flags: TCPHeader.ack), &dsr) }
        let stats = dsr.counters.snapshot()
        #expect(stats.drops(.noFlow) == 4, "flows 11...14 are gone, 1...4 are not: \(stats.drops(.noFlow))")
        // With no half-open flow idle enough, an idle established one goes.
        dsr.beginBatch(now: 8 * second)
        for port in UInt16(21)...24 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.ack), &dsr) == .transmit) }
        dsr.beginBatch(now: 12 * second)
        for port in UInt16(21)...24 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.ack), &dsr) == .transmit) }
        #expect(Self.send(clientFrame(port: 31, flags: TCPHeader.syn), &dsr) == .transmit)
        #expect(dsr.counters.snapshot().flowsEvicted == 5)
        #expect(dsr.flowCount == 8)
    }

    /// Passthrough: a closing flow (both FINs, or a RST) lingers in the table for
    /// retransmissions, but its connection is over: its backend's open count drops when it
    /// starts closing. DSR, which sees only the client's FIN, counts the flow until it ends.
    @Test func aClosedPassthroughFlowNoLongerCountsAsAnOpenConnection() throws {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var pt = PassthroughForwarder(settings: ForwarderSettings(capacity: 64, closingTimeout: .seconds(10),
                                                                 natAddress: .v4(0x0A4D_0002), natPorts: 61000...61999),
                                      routes: fixture.publisher, reverseMap: NATReverseMap())
        pt.beginBatch(now: second)
        func send(_ frame: [UInt8]) -> PacketVerdict {
            var f = frame
            return withFrame(&f) { pt.handle($0) }
        }
        var natPorts: [UInt16] = []
        for port in UInt16(1)...3 {
            var syn = clientFrame(port: port, flags: TCPHeader.syn)
            #expect(withFrame(&syn) { pt.handle($0) } == .transmit)
            natPorts.append(TestFrames.fields(syn).sport)
            #expect(send(clientFrame(port: port, flags: TCPHeader.ack)) == .transmit)
        }
        let slot = 0
        func backend() -> BackendTraffic { pt.counters.backend(slot) }
        #expect(backend().opened == 3 && backend().closed == 0)
        // 1: both sides finish; 2: the client resets (twice); 3: only the client finishes.
        #expect(send(clientFrame(port: 1, flags: TCPHeader.fin | TCPHeader.ack)) == .transmit)
        #expect(send(TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: 0x0A4D_0002, sport: 8080, dport: natPorts[0],
                                        flags: TCPHeader.fin | TCPHeader.ack)) == .transmit)
        for t in UInt64(2)...5 { pt.beginBatch(now: t * second) }  // a whole sweep sees the backend's FIN
        #expect(send(clientFrame(port: 2, flags: TCPHeader.rst)) == .transmit)
        #expect(send(clientFrame(port: 2, flags: TCPHeader.rst)) == .transmit, "a retransmitted RST counts nothing more")
        #expect(send(clientFrame(port: 3, flags: TCPHeader.fin | TCPHeader.ack)) == .transmit)
        #expect(backend().closed == 2, "closed connections; the half-closed one is open")
        #expect(pt.flowCount == 3 && pt.counters.snapshot().flowsClosing == 2, "still in the table, lingering")
        for t in UInt64(16)...20 { pt.beginBatch(now: t * second) }  // past closing_timeout, whole sweeps
        #expect(pt.flowCount == 1)
        #expect(backend().closed == 2, "their end counts no second close")
    }

    @Test func aDSRFlowTheClientFinishedCountsUntilItEnds() throws {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 64, closingTimeout: .seconds(10)), routes: fixture.publisher)
        dsr.beginBatch(now: second)
        #expect(Self.send(clientFrame(port: 1, flags: TCPHeader.syn), &dsr) == .transmit)
        #expect(Self.send(clientFrame(port: 1, flags: TCPHeader.fin | TCPHeader.ack), &dsr) == .transmit)
        #expect(dsr.counters.backend(0).closed == 0, "the backend may still be sending")
        for t in UInt64(12)...16 { dsr.beginBatch(now: t * second) }
        #expect(dsr.flowCount == 0 && dsr.counters.backend(0).closed == 1)
    }

    /// Structured keys (one client's many ports, sequential addresses, both) must land in home
    /// slots as spread out as random keys do, whatever the table's seed (seeds come from
    /// 2 MiB-aligned addresses). 60 000 keys in 2^21 slots: about 850 share a home at random.
    @Test func homeSlotsSpreadLikeRandomForStructuredKeys() {
        let storage = FlowTableStorage(capacity: 1 << 20)
        let patterns: [(String, (Int) -> (hi: UInt64, lo: UInt64, key: UInt32))] = [
            ("one client, many ports", { n in (0, 0xffff_0A00_0001, FlowEntry.key(port: UInt16(1024 + n), vip: 0)) }),
            ("sequential clients, 16 ports each", { n in
                (0, 0xffff_0B00_0000 | UInt64(n >> 4), FlowEntry.key(port: UInt16(10_000 + n & 15), vip: 0)) }),
            ("sequential clients, one port", { n in (0, 0xffff_0A00_0000 + UInt64(n), FlowEntry.key(port: 40_000, vip: 1)) }),
            ("IPv6 clients, one /64", { n in (0x2001_0db8_0000_0001, UInt64(n) << 8, FlowEntry.key(port: 443, vip: 2)) }),
        ]
        var rng = TestRandom(seed: 3)
        for trial in 0..<6 {
            let address = UInt64.random(in: 1...(1 << 26), using: &rng) << 21
            let table = FlowTable(storage: storage, capacity: 1 << 20, window: 32,
                                  seed: address &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(trial % 2))
            for (name, pattern) in patterns {
                var used = Set<Int>()
                var shared = 0
                for n in 0..<60_000 {
                    let k = pattern(n)
                    if !used.insert(table.home(hi: k.hi, lo: k.lo, key: k.key)).inserted { shared += 1 }
                }
                #expect(shared < 1300, "\(name), seed \(trial): \(shared) keys share a home slot (random: about 850)")
            }
        }
    }

    /// The packet path's indexing assumes it (one shift, one cache line per lookup).
    @Test func aFlowEntryAndABackendAreOneCacheLineEach() {
        #expect(MemoryLayout<FlowEntry>.stride == 64)
        #expect(MemoryLayout<PacketRoutes.Backend>.stride == 64)
    }

    @Test func flowsExpireByTheirStatesTimeout() {
        let fixture = RoutesFixture(balance: .wrr)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 100, synTimeout: .seconds(5),
                                                           establishedTimeout: .seconds(300),
                                                           closingTimeout: .seconds(10)),
                               routes: fixture.publisher)
        dsr.beginBatch(now: second)
        // 1: half-open; 2: established; 3: closing.
        for port in UInt16(1)...3 { #expect(Self.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == .transmit) }
        #expect(Self.send(clientFrame(port: 2, flags: TCPHeader.ack), &dsr) == .transmit)
        #expect(Self.send(clientFrame(port: 3, flags: TCPHeader.ack), &dsr) == .transmit)
        #expect(Self.send(clientFrame(port: 3, flags: TCPHeader.fin | TCPHeader.ack), &dsr) == .transmit)
        #expect(dsr.counters.snapshot().flowsClosing == 1 && dsr.counters.snapshot().flowsOpen == 2)
        dsr.beginBatch(now: 7 * second)  // > 5 s: the half-open flow goes
        #expect(dsr.flowCount == 2)
        dsr.beginBatch(now: 12 * second)  // > 10 s: the closing flow goes
        #expect(dsr.flowCount == 1)
        #expect(dsr.counters.snapshot().flowsClosing == 0 && dsr.counters.snapshot().flowsOpen == 1)
        dsr.beginBatch(now: 300 * second)  // 299 s idle: established stays
        #expect(dsr.flowCount == 1)
        dsr.beginBatch(now: 302 * second)
        #expect(dsr.flowCount == 0)
        // The closing flow ended; the half-open and the idle established ones expired.
        #expect(dsr.counters.snapshot().flowsExpired == 2 && dsr.counters.snapshot().flowsEnded == 1)
        // A later segment of an expired flow is answered with a reset.
        #expect(Self.send(clientFrame(port: 2, flags: TCPHeader.ack), &dsr) == .transmit)
        #expect(dsr.counters.snapshot().drops(.noFlow) == 1 && dsr.counters.snapshot().resetsSent == 1)
    }

    @Test func anExpiredFlowFoundByLookupIsEndedEvenBeforeTheSweepReachesIt() {
        let fixture = RoutesFixture(balance: .wrr)
        var settings = ForwarderSettings(capacity: 100_000, synTimeout: .seconds(5))
        settings.sweepPerBatch = 0
        var dsr = DSRForwarder(settings: settings, routes: fixture.publisher)
        dsr.beginBatch(now: second)
        #expect(Self.send(clientFrame(port: 9, flags: TCPHeader.syn), &dsr) == .transmit)
        dsr.beginBatch(now: 10 * second)
        #expect(Self.send(clientFrame(port: 9, flags: TCPHeader.ack), &dsr) == .transmit, "answered with a reset")
        let stats = dsr.counters.snapshot()
        #expect(stats.flowsExpired == 1 && stats.drops(.noFlow) == 1 && stats.resetsSent == 1 && dsr.flowCount == 0)
    }

    @Test func aSYNReusingAClosingFlowsTupleIsPlacedAfresh() {
        let fixture = RoutesFixture(balance: .wrr)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 100), routes: fixture.publisher)
        dsr.beginBatch(now: second)
        #expect(Self.send(clientFrame(port: 9, flags: TCPHeader.syn), &dsr) == .transmit)
        #expect(Self.send(clientFrame(port: 9, flags: TCPHeader.rst), &dsr) == .transmit)
        #expect(Self.send(clientFrame(port: 9, flags: TCPHeader.syn), &dsr) == .transmit)
        let stats = dsr.counters.snapshot()
        #expect(stats.flowsCreated == 2 && stats.flowsEnded == 1 && dsr.flowCount == 1)
    }

    @Test func theExpirySweepFollowsTheClockNotThePacketRate() {
        let fixture = RoutesFixture(balance: .wrr)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 1024), routes: fixture.publisher)
        #expect(dsr.core.table.slotCount == 2048)
        dsr.beginBatch(now: 10 * second)  // 2 s of credit: one full pass, then back at slot 0
        #expect(dsr.core.sweepCursor == 0)
        dsr.beginBatch(now: 10 * second)  // no time passed: nothing owed
        #expect(dsr.core.sweepCursor == 0)
        dsr.beginBatch(now: 10 * second + 10_000_000)  // 10 ms: 2048 × 10 ms / 2 s ≈ 10 slots
        #expect(dsr.core.sweepCursor == 10)
    }

    @Test func aPerBatchCapCarriesTheRestOver() {
        let fixture = RoutesFixture(balance: .wrr)
        var settings = ForwarderSettings(capacity: 1024)
        settings.sweepPerBatch = 1024
        var dsr = DSRForwarder(settings: settings, routes: fixture.publisher)
        dsr.beginBatch(now: 10 * second)  // a full pass owed, at most 1024 slots a batch
        #expect(dsr.core.sweepCursor == 1024)
        dsr.beginBatch(now: 10 * second)  // the carried-over rest, though no time passed
        #expect(dsr.core.sweepCursor == 0)
        dsr.beginBatch(now: 10 * second)
        #expect(dsr.core.sweepCursor == 0)
    }
}
