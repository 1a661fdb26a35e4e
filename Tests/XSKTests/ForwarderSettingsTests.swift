import Balancer
import Testing
@testable import XSK

@Suite("Forwarder settings and placement rules")
struct ForwarderSettingsTests {
    @Test func settingsComeFromTheConfigsPassthroughAndXDPSections() {
        var config = RoutesFixture.makeConfig(balance: .wrr, count: 1, weights: nil)
        config.passthrough.connectionTrackerCapacity = 5000
        config.xdp.synTimeout = .seconds(3)
        config.xdp.establishedTimeout = .seconds(600)
        config.xdp.closingTimeout = .milliseconds(1500)
        config.xdp.natAddresses = [IPAddress("fd77::2")!, .v4(0x0A4D_0002)]
        config.xdp.natPorts = 61000...61999
        let s = ForwarderSettings(config: config, workerIndex: 1, workerCount: 4)
        #expect(s.capacity == 5000)
        #expect(s.synTimeout == 3_000_000_000 && s.establishedTimeout == 600_000_000_000)
        #expect(s.closingTimeout == 1_500_000_000)
        #expect(s.natAddress == .v4(0x0A4D_0002) && s.natAddressV6 == IPAddress("fd77::2"))
        #expect(s.workerNATPorts == 61250...61499)
        let resolved = ForwarderSettings(config: config, workerIndex: 0, workerCount: 1,
                                         natAddresses: [.v4(0x0A4D_0003)], natPorts: 50000...50009)
        #expect(resolved.workerNATPorts == 50000...50009)
        #expect(resolved.natAddress == .v4(0x0A4D_0003) && resolved.natAddressV6 == nil)
    }

    @Test func wrrFollowsTheWeightsExactlyOverOneCycle() {
        let fixture = RoutesFixture(balance: .wrr, count: 3, weights: [1, 2, 3])
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 4096), routes: fixture.publisher)
        dsr.beginBatch(now: second)
        var counts = [0, 0, 0, 0]
        for port in UInt16(1)...600 {
            var f = clientFrame(port: port, flags: TCPHeader.syn)
            #expect(withFrame(&f) { dsr.handle($0) } == .transmit)
            counts[RoutesFixture.backendNumber(mac: TestFrames.fields(f).dstMAC) ?? 0] += 1
        }
        #expect(counts == [0, 100, 200, 300])
    }

    @Test func leastconnSendsNewFlowsToTheServerWithFewestOpenFlows() {
        let fixture = RoutesFixture(balance: .leastconn, count: 2)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 4096), routes: fixture.publisher)
        dsr.beginBatch(now: second)
        func open(_ port: UInt16) -> Int {
            var syn = clientFrame(port: port, flags: TCPHeader.syn)
            var ack = clientFrame(port: port, flags: TCPHeader.ack)
            #expect(withFrame(&syn) { dsr.handle($0) } == .transmit)
            #expect(withFrame(&ack) { dsr.handle($0) } == .transmit)
            return RoutesFixture.backendNumber(mac: TestFrames.fields(syn).dstMAC) ?? 0
        }
        var counts = [0, 0, 0]
        for port in UInt16(1)...10 { counts[open(port)] += 1 }
        #expect(counts == [0, 5, 5])
        // The flows on s1 end (RST, then the closing timeout passes).
        let s1 = fixture.publisher.current().routes.slot(of: ServerID(pool: "pool", name: "s1"))
        for port in UInt16(1)...10
        where dsr.backendSlot(client: Endpoint(address: .v4(0x0A4D_000A), port: port), vip: RoutesFixture.vip) == s1 {
            var rst = clientFrame(port: port, flags: TCPHeader.rst)
            #expect(withFrame(&rst) { dsr.handle($0) } == .transmit)
        }
        for _ in 0..<64 { dsr.beginBatch(now: 12 * second) }
        #expect(dsr.flowCount == 5)
        // s1 has 0 open flows, s2 has 5: the next five go to s1.
        counts = [0, 0, 0]
        for port in UInt16(100)..<105 { counts[open(port)] += 1 }
        #expect(counts == [0, 5, 0])
    }

    /// Workers count one pool's open flows together: a worker that has placed nothing yet
    /// still sends its first flow to the server the others loaded least.
    @Test func leastconnCountsTheFlowsOfEveryWorker() {
        let fixture = RoutesFixture(balance: .leastconn, count: 2)
        var a = DSRForwarder(settings: ForwarderSettings(capacity: 4096, workerIndex: 0, workerCount: 2), routes: fixture.publisher)
        var b = DSRForwarder(settings: ForwarderSettings(capacity: 4096, workerIndex: 1, workerCount: 2), routes: fixture.publisher)
        a.beginBatch(now: second)
        b.beginBatch(now: second)
        func open(_ port: UInt16, on worker: inout DSRForwarder) -> Int {
            var syn = clientFrame(port: port, flags: TCPHeader.syn)
            #expect(withFrame(&syn) { worker.handle($0) } == .transmit)
            return RoutesFixture.backendNumber(mac: TestFrames.fields(syn).dstMAC) ?? 0
        }
        // The first worker places three: 2 on one server, 1 on the other.
        var counts = [0, 0, 0]
        for port in UInt16(1)...3 { counts[open(port, on: &a)] += 1 }
        let lighter = counts[1] < counts[2] ? 1 : 2
        #expect(counts[lighter] == 1 && counts[3 - lighter] == 2)
        // The second worker, with no flow of its own, evens them out.
        #expect(open(100, on: &b) == lighter)
        counts[lighter] += 1
        #expect(counts[1] == 2 && counts[2] == 2)
        let routes = fixture.publisher.current().routes
        for server in 1...2 {
            let slot = routes.slot(of: ServerID(pool: "pool", name: "s\(server)"))
            #expect(slot.map { fixture.publisher.openFlows.open($0) } == 2)
        }
        // Flows that end are taken off the shared count.
        var rst = clientFrame(port: 100, flags: TCPHeader.rst)
        #expect(withFrame(&rst) { b.handle($0) } == .transmit)
        for _ in 0..<64 { b.beginBatch(now: 12 * second) }
        #expect(b.flowCount == 0)
        #expect(open(4, on: &a) == lighter)
    }

    @Test func countersMadeOnTheControlThreadSeeTheWorkersTraffic() {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        let counters = ForwarderCounters(backendSlots: fixture.publisher.maxBackendSlots)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 16), routes: fixture.publisher, counters: counters)
        dsr.beginBatch(now: second)
        var f = clientFrame(port: 1, flags: TCPHeader.syn)
        #expect(withFrame(&f) { dsr.handle($0) } == .transmit)
        #expect(counters.snapshot().txPackets == 1 && counters.backend(0).opened == 1)
        #expect((counters.snapshot() + counters.snapshot()).txPackets == 2)
    }

    @Test func portZeroIsNeverANATPort() {
        let storage = NATPortStorage(range: 0...2)
        var pool = NATPortPool(storage: storage)
        #expect(pool.allocate() == 1 && pool.allocate() == 2 && pool.allocate() == 0)
        pool.release(1)
        #expect(pool.allocate() == 1)
    }

    @Test("a worker's port queue begins at its start offset (modulo the slice) and goes on around; released ports queue behind")
    func portQueueBeginsAtItsStart() {
        for (start, first) in [(0, 61000), (2, 61002), (6, 61002), (-1, 61003)] as [(Int, UInt16)] {
            let storage = NATPortStorage(range: 61000...61003, start: start)
            var pool = NATPortPool(storage: storage)
            let order = (0..<5).map { _ in pool.allocate() }
            let offset = Int(first) - 61000
            var expected: [UInt16] = (0..<4).map { (i: Int) -> UInt16 in UInt16(61000 + (offset + i) % 4) }
            expected.append(0)
            #expect(order == expected, "start \(start)")
            pool.release(order[1])
            pool.release(order[0])
            #expect(pool.allocate() == order[1] && pool.allocate() == order[0])
        }
        // The forwarder takes it from its settings: the first SYN's NAT port.
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var settings = ForwarderSettings(capacity: 16, natAddress: .v4(PassthroughForwarderTests.nat), natPorts: 61000...61999)
        settings.natPortStart = 517
        var pt = PassthroughForwarder(settings: settings, routes: fixture.publisher, reverseMap: NATReverseMap())
        pt.beginBatch(now: second)
        var f = TestFrames.ipv4TCP(src: PassthroughForwarderTests.client, dst: 0x0A4D_0064, sport: 40_000, dport: 80,
                                   flags: TCPHeader.syn)
        #expect(withFrame(&f) { pt.handle($0) } == .transmit)
        #expect(TestFrames.fields(f).sport == 61517)
    }
}
