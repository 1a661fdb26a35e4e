import Balancer
import Testing
@testable import XSK

@Suite("Passthrough NAT: both directions rewritten with valid checksums, replies authenticated")
struct PassthroughForwarderTests {
    static let nat: UInt32 = 0x0A4D_0002
    static let client: UInt32 = 0x0A4D_000A

    static func forwarder(_ fixture: RoutesFixture, ports: ClosedRange<UInt16> = 61000...61999, worker: Int = 0,
                          of count: Int = 1, map: NATReverseMap = NATReverseMap()) -> PassthroughForwarder {
        var f = PassthroughForwarder(settings: ForwarderSettings(capacity: 1024, natAddress: .v4(nat), natPorts: ports,
                                                                 workerIndex: worker, workerCount: count),
                                     routes: fixture.publisher, reverseMap: map)
        f.beginBatch(now: second)
        return f
    }

    static func expectValidChecksums(_ f: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(TestFrames.storedIPv4Checksum(f) == TestFrames.recomputedIPv4Checksum(f), sourceLocation: sourceLocation)
        #expect(TestFrames.storedTCPChecksum(f) == TestFrames.recomputedTCPChecksum(f), sourceLocation: sourceLocation)
    }

    @Test func aConnectionIsRewrittenBothWaysWithValidChecksums() {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var pt = Self.forwarder(fixture)
        let options: [UInt8] = [0x94, 4, 0, 0]  // router alert: must survive untouched
        var out = TestFrames.ipv4TCP(src: Self.client, dst: 0x0A4D_0064, sport: 40_000, dport: 80,
                                     flags: TCPHeader.syn, ttl: 61, ipOptions: options, payload: Array("GET".utf8))
        let original = out
        #expect(withFrame(&out) { pt.handle($0) } == .transmit)
        let o = TestFrames.fields(out)
        #expect(o.dstMAC == RoutesFixture.backendMAC(1) && o.srcMAC == TestFrames.lbMAC)
        #expect(o.src == Self.nat && o.dst == 0x0A4D_0015 && o.dport == 8080)
        #expect((61000...61999).contains(o.sport))
        #expect(o.ttl == 61)
        #expect(Array(out[34..<38]) == options)
        #expect(Array(out[(out.count - 3)...]) == Array(original[(original.count - 3)...]))
        Self.expectValidChecksums(out)

        var reply = TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: Self.nat, sport: 8080, dport: o.sport,
                                       flags: TCPHeader.syn | TCPHeader.ack, srcMAC: RoutesFixture.backendMAC(1),
                                       ttl: 64, payload: Array("200 OK".utf8))
        #expect(withFrame(&reply) { pt.handle($0) } == .transmit)
        let r = TestFrames.fields(reply)
        #expect(r.dstMAC == TestFrames.clientMAC && r.srcMAC == TestFrames.lbMAC)
        #expect(r.src == 0x0A4D_0064 && r.sport == 80 && r.dst == Self.client && r.dport == 40_000)
        #expect(r.ttl == 64)
        Self.expectValidChecksums(reply)

        // The reverse map holds what the reply needed.
        let entry = fixture.publisher.current().routes.slot(of: ServerID(pool: "pool", name: "s1"))
        #expect(entry != nil)
        let stats = pt.counters.snapshot()
        #expect(stats.txPackets == 2 && stats.flowsCreated == 1)
        #expect(stats.rxBytes == UInt64(original.count + reply.count) && stats.txBytes == stats.rxBytes)
        let traffic = pt.counters.backend(entry!)
        #expect(traffic.bytesTx == UInt64(original.count) && traffic.bytesRx == UInt64(reply.count))
    }

    @Test func manyRandomFlowsKeepValidChecksumsBothWays() {
        let fixture = RoutesFixture(balance: .maglev, count: 3)
        var pt = Self.forwarder(fixture)
        var rng = TestRandom(seed: 5)
        for _ in 0..<300 {
            let client = UInt32.random(in: 0x0A00_0000...0x0AFF_FFFF, using: &rng)
            let port = UInt16.random(in: 1024...65535, using: &rng)
            let payload = (0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var f = TestFrames.ipv4TCP(src: client, dst: 0x0A4D_0064, sport: port, dport: 80, flags: TCPHeader.syn,
                                       payload: payload)
            #expect(withFrame(&f) { pt.handle($0) } == .transmit)
            Self.expectValidChecksums(f)
            let o = TestFrames.fields(f)
            var reply = TestFrames.ipv4TCP(src: o.dst, dst: o.src, sport: o.dport, dport: o.sport,
                                           flags: TCPHeader.syn | TCPHeader.ack, payload: payload.reversed())
            #expect(withFrame(&reply) { pt.handle($0) } == .transmit)
            Self.expectValidChecksums(reply)
            let r = TestFrames.fields(reply)
            #expect(r.dst == client && r.dport == port && r.src == 0x0A4D_0064 && r.sport == 80)
        }
    }

    @Test func aReplyFromAnotherHostOrPortIsDroppedAndOneToAnUnusedPortIsAnsweredWithAReset() {
        let fixture = RoutesFixture(balance: .wrr, count: 2)
        var pt = Self.forwarder(fixture)
        var out = clientFrame(client: Self.client, port: 40_001, flags: TCPHeader.syn)
        #expect(withFrame(&out) { pt.handle($0) } == .transmit)
        let o = TestFrames.fields(out)
        let otherBackend: UInt32 = o.dst == 0x0A4D_0015 ? 0x0A4D_0016 : 0x0A4D_0015
        var spoofedHost = TestFrames.ipv4TCP(src: otherBackend, dst: Self.nat, sport: 8080, dport: o.sport, flags: TCPHeader.ack)
        var spoofedPort = TestFrames.ipv4TCP(src: o.dst, dst: Self.nat, sport: 8081, dport: o.sport, flags: TCPHeader.ack)
        var unusedPort = TestFrames.ipv4TCP(src: o.dst, dst: Self.nat, sport: 8080,
                                            dport: o.sport == 61999 ? 61998 : 61999, flags: TCPHeader.ack)
        #expect(withFrame(&spoofedHost) { pt.handle($0) } == .drop)
        #expect(withFrame(&spoofedPort) { pt.handle($0) } == .drop)
        #expect(pt.counters.snapshot().resetsSent == 0, "a live port's spoofed segments get no answer")
        // No flow on that port: the backend holds a connection that is over; it is told so.
        #expect(withFrame(&unusedPort) { pt.handle($0) } == .transmit)
        let r = TestFrames.fields(unusedPort)
        #expect(r.src == Self.nat && r.dst == o.dst && r.sport == (o.sport == 61999 ? 61998 : 61999) && r.dport == 8080)
        #expect(unusedPort[14 + 20 + 13] == TCPHeader.rst)
        Self.expectValidChecksums(unusedPort)
        var batched = TestFrames.ipv4TCP(src: o.dst, dst: Self.nat, sport: 8080, dport: o.sport == 61999 ? 61998 : 61999,
                                         flags: TCPHeader.ack)
        #expect(handleAsBatch(&batched, &pt) == .transmit, "the batch path answers alike")
        #expect(batched == unusedPort)
        #expect(pt.counters.snapshot().drops(.unknownReply) == 4 && pt.counters.snapshot().resetsSent == 2)
    }

    @Test func exhaustedNATPortsDropTheSYNUntilAFlowEnds() {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var pt = Self.forwarder(fixture, ports: 61000...61003)
        for port in UInt16(1)...4 {
            var f = clientFrame(port: port, flags: TCPHeader.syn)
            #expect(withFrame(&f) { pt.handle($0) } == .transmit)
            // Established: a half-open flow would give its port up (see the next test).
            var ack = clientFrame(port: port, flags: TCPHeader.ack)
            #expect(withFrame(&ack) { pt.handle($0) } == .transmit)
        }
        var fifth = clientFrame(port: 5, flags: TCPHeader.syn)
        #expect(withFrame(&fifth) { pt.handle($0) } == .drop)
        #expect(pt.counters.snapshot().drops(.noNATPort) == 1)
        #expect(pt.freeNATPorts == 0)
        // Flow 1 closes; after the closing timeout its port is free again.
        var rst = clientFrame(port: 1, flags: TCPHeader.rst)
        #expect(withFrame(&rst) { pt.handle($0) } == .transmit)
        pt.beginBatch(now: 4 * second)
        var again = clientFrame(port: 5, flags: TCPHeader.syn)
        #expect(withFrame(&again) { pt.handle($0) } == .drop)
        // Enough batches for the bounded sweep to cover the whole table.
        for _ in 0..<16 { pt.beginBatch(now: 12 * second) }
        #expect(pt.freeNATPorts == 1, "flow 1's port; the established flows keep theirs")
        var later = clientFrame(port: 5, flags: TCPHeader.syn)
        #expect(withFrame(&later) { pt.handle($0) } == .transmit)
    }

    /// A SYN flood from spoofed sources used to hold every port until syn_timeout, so real
    /// clients found none (found by fuzzing: 20 000 sources took all 4 536 ports).
    @Test("out of NAT ports, the oldest half-open flow silent for a second gives its port to a new SYN; established flows never do")
    func halfOpenFlowsGiveUpTheirPorts() {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var pt = Self.forwarder(fixture, ports: 61000...61003)
        // Port 1's flow is established; 2, 3, 4 stay half-open (their SYN-ACK never answered).
        for port in UInt16(1)...4 {
            var f = clientFrame(port: port, flags: TCPHeader.syn)
            #expect(withFrame(&f) { pt.handle($0) } == .transmit)
        }
        var ack = clientFrame(port: 1, flags: TCPHeader.ack)
        #expect(withFrame(&ack) { pt.handle($0) } == .transmit)
        var young = clientFrame(port: 5, flags: TCPHeader.syn)
        #expect(withFrame(&young) { pt.handle($0) } == .drop, "all four flows are younger than a second")
        #expect(pt.counters.snapshot().drops(.noNATPort) == 1)
        pt.beginBatch(now: second + second / 2 * 3)
        for port in UInt16(5)...7 {
            var f = clientFrame(port: port, flags: TCPHeader.syn)
            #expect(withFrame(&f) { pt.handle($0) } == .transmit, "client port \(port) takes a half-open flow's NAT port")
        }
        var fourth = clientFrame(port: 8, flags: TCPHeader.syn)
        #expect(withFrame(&fourth) { pt.handle($0) } == .drop, "the established flow and the new half-open ones keep theirs")
        let stats = pt.counters.snapshot()
        #expect(stats.flowsEvicted == 3 && stats.drops(.noNATPort) == 2)
        // The established flow still goes through.
        var data = clientFrame(port: 1, flags: TCPHeader.ack, payload: [1, 2, 3])
        #expect(withFrame(&data) { pt.handle($0) } == .transmit)
    }

    @Test func workersOwnDisjointPortSlicesAndAnswerEachOthersReplies() {
        let slices = (0..<3).compactMap { NATPortPool.slice(of: 61000...61010, worker: $0, of: 3) }
        #expect(slices == [61000...61002, 61003...61006, 61007...61010])
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        let map = NATReverseMap()
        var w0 = Self.forwarder(fixture, ports: 61000...61010, worker: 0, of: 2, map: map)
        var w1 = Self.forwarder(fixture, ports: 61000...61010, worker: 1, of: 2, map: map)
        var a = clientFrame(port: 1, flags: TCPHeader.syn)
        var b = clientFrame(port: 2, flags: TCPHeader.syn)
        #expect(withFrame(&a) { w0.handle($0) } == .transmit)
        #expect(withFrame(&b) { w1.handle($0) } == .transmit)
        let portA = TestFrames.fields(a).sport, portB = TestFrames.fields(b).sport
        #expect((61000...61004).contains(portA) && (61005...61010).contains(portB))
        // The reply to worker 0's flow arrives on worker 1's queue.
        var reply = TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: Self.nat, sport: 8080, dport: portA,
                                       flags: TCPHeader.syn | TCPHeader.ack)
        #expect(withFrame(&reply) { w1.handle($0) } == .transmit)
        #expect(TestFrames.fields(reply).dport == 1)
        Self.expectValidChecksums(reply)
    }

    /// A half-close: the client sends its request and FIN, the backend answers 15 s later
    /// (past the 10 s closing time). The flow stays until both sides have sent FIN; then the
    /// closing time runs. Either order works.
    /// A client whose handshake ACK was lost sends its request with FIN in the next segment
    /// (ACK|PSH|FIN): that segment establishes the flow, so a backend answering after the SYN
    /// timeout still reaches the client.
    @Test func aFirstACKThatAlsoCarriesFINEstablishesTheFlow() {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var pt = Self.forwarder(fixture)
        var syn = clientFrame(port: 1, flags: TCPHeader.syn)
        #expect(withFrame(&syn) { pt.handle($0) } == .transmit)
        var request = clientFrame(port: 1, flags: TCPHeader.ack | TCPHeader.fin | 0x08, payload: [1, 2, 3])
        #expect(withFrame(&request) { pt.handle($0) } == .transmit)
        // Past the 5 s SYN timeout, within the established one.
        for _ in 0..<2 { pt.beginBatch(now: 9 * second) }
        #expect(pt.flowCount == 1)
        var answer = TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: Self.nat, sport: 8080, dport: TestFrames.fields(syn).sport,
                                        flags: TCPHeader.ack | 0x08, payload: [4, 5, 6])
        #expect(withFrame(&answer) { pt.handle($0) } == .transmit)
        #expect(pt.counters.snapshot().drops(.unknownReply) == 0)
    }

    @Test func aHalfClosedConnectionKeepsItsFlowUntilBothSidesFinish() {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var pt = Self.forwarder(fixture)
        var syn = clientFrame(port: 1, flags: TCPHeader.syn)
        var ack = clientFrame(port: 1, flags: TCPHeader.ack)
        #expect(withFrame(&syn) { pt.handle($0) } == .transmit)
        #expect(withFrame(&ack) { pt.handle($0) } == .transmit)
        let natPort = TestFrames.fields(syn).sport
        func fromServer(_ flags: UInt8) -> PacketVerdict {
            var f = TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: Self.nat, sport: 8080, dport: natPort, flags: flags,
                                       payload: [1, 2, 3])
            return withFrame(&f) { pt.handle($0) }
        }
        var fin = clientFrame(port: 1, flags: TCPHeader.fin | TCPHeader.ack)
        #expect(withFrame(&fin) { pt.handle($0) } == .transmit)
        #expect(pt.counters.snapshot().flowsClosing == 0, "one FIN is a half-close")
        for _ in 0..<2 { pt.beginBatch(now: 16 * second) }
        #expect(pt.flowCount == 1)
        #expect(fromServer(TCPHeader.ack | 0x08) == .transmit, "the answer 15 s later still goes through")
        #expect(fromServer(TCPHeader.fin | TCPHeader.ack) == .transmit)
        for _ in 0..<2 { pt.beginBatch(now: 19 * second) }  // a full sweep sees the backend's FIN
        #expect(pt.counters.snapshot().flowsClosing == 1, "both sides have finished")
        for _ in 0..<2 { pt.beginBatch(now: 30 * second) }
        #expect(pt.flowCount == 0 && pt.counters.snapshot().flowsEnded == 1)

        // The other order: the backend's FIN first, the client still sending, then its FIN.
        var syn2 = clientFrame(port: 2, flags: TCPHeader.syn)
        var ack2 = clientFrame(port: 2, flags: TCPHeader.ack)
        #expect(withFrame(&syn2) { pt.handle($0) } == .transmit)
        #expect(withFrame(&ack2) { pt.handle($0) } == .transmit)
        var serverFin = TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: Self.nat, sport: 8080, dport: TestFrames.fields(syn2).sport,
                                           flags: TCPHeader.fin | TCPHeader.ack)
        #expect(withFrame(&serverFin) { pt.handle($0) } == .transmit)
        for _ in 0..<2 { pt.beginBatch(now: 45 * second) }
        var late = clientFrame(port: 2, flags: TCPHeader.ack, payload: [9])
        #expect(withFrame(&late) { pt.handle($0) } == .transmit, "the client may still send after the backend's FIN")
        var fin2 = clientFrame(port: 2, flags: TCPHeader.fin | TCPHeader.ack)
        #expect(withFrame(&fin2) { pt.handle($0) } == .transmit)
        #expect(pt.counters.snapshot().flowsClosing == 1)
    }

    @Test func aBackendsRSTStartsTheClosingTimeoutEvenWhenAnotherWorkerSawIt() {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        let map = NATReverseMap()
        var w0 = Self.forwarder(fixture, ports: 61000...61010, worker: 0, of: 2, map: map)
        var w1 = Self.forwarder(fixture, ports: 61000...61010, worker: 1, of: 2, map: map)
        var syn = clientFrame(port: 1, flags: TCPHeader.syn)
        var ack = clientFrame(port: 1, flags: TCPHeader.ack)
        #expect(withFrame(&syn) { w0.handle($0) } == .transmit)
        #expect(withFrame(&ack) { w0.handle($0) } == .transmit)
        let natPort = TestFrames.fields(syn).sport
        var rst = TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: Self.nat, sport: 8080, dport: natPort, flags: TCPHeader.rst)
        #expect(withFrame(&rst) { w1.handle($0) } == .transmit)
        // Two batches 2 s later sweep the whole table (1024 slots a batch): the mark is seen,
        // the flow is closing, 10 s from its last packet.
        for _ in 0..<2 { w0.beginBatch(now: 3 * second) }
        #expect(w0.flowCount == 1)
        // Established would last 300 s; closing ends now.
        for _ in 0..<2 { w0.beginBatch(now: 20 * second) }
        #expect(w0.flowCount == 0)
        #expect(w0.counters.snapshot().flowsEnded == 1, "a closed flow ends, it does not expire")
        #expect(map.entry(forPort: natPort) == nil)
    }

    @Test func anIPv6FrameToNoVIPIsDroppedAsNotForUs() {
        var pt = Self.forwarder(RoutesFixture(balance: .wrr, count: 1))
        var f = TestFrames.ipv6TCP(src: [UInt8](repeating: 0xfd, count: 16), dst: [UInt8](repeating: 1, count: 16),
                                   sport: 1, dport: 80, flags: TCPHeader.syn)
        #expect(withFrame(&f) { pt.handle($0) } == .drop)
        #expect(pt.counters.snapshot().drops(.notForUs) == 1)
    }

    /// An IPv6 segment to the IPv4 VIP's mapped form (::ffff:10.77.0.100) is refused, not
    /// tracked under the IPv4 frontend.
    @Test func anIPv6FrameToAnIPv4MappedVIPIsMalformedAndStartsNoFlow() {
        var pt = Self.forwarder(RoutesFixture(balance: .wrr, count: 1))
        var f = TestFrames.ipv6TCP(src: [UInt8](repeating: 0xfd, count: 16),
                                   dst: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 100],
                                   sport: 1, dport: 80, flags: TCPHeader.syn)
        #expect(withFrame(&f) { pt.handle($0) } == .drop)
        #expect(pt.counters.snapshot().drops(.malformed) == 1)
        #expect(pt.flowCount == 0)
    }

    @Test func anIPv6ConnectionIsRewrittenBothWaysWithValidChecksums() {
        func v6(_ text: String) -> IPAddress { IPAddress(text)! }
        let vip = Endpoint(address: v6("fd77::100"), port: 80)
        let backend = Endpoint(address: v6("fd77::21"), port: 8080)
        let config = ConveyConfig(frontends: [FrontendConfig(name: "web6", listen: vip, pool: "pool")],
                                  pools: [PoolConfig(name: "pool", servers: [ServerConfig(name: "b", address: backend)])])
        let runtime = BalancerRuntime(config: config)
        let publisher = PacketRoutesPublisher()
        publisher.publish(snapshot: runtime.snapshots.load().value,
                          backendMACs: [backend.address: MACAddress(rawValue: RoutesFixture.backendMAC(1))],
                          interfaceMAC: RoutesFixture.interfaceMAC)
        var settings = ForwarderSettings(capacity: 64, natAddress: .v4(Self.nat), natPorts: 61000...61099)
        settings.natAddressV6 = v6("fd77::2")
        var pt = PassthroughForwarder(settings: settings, routes: publisher, reverseMap: NATReverseMap())
        pt.beginBatch(now: second)
        let client = v6("fd77::10").networkBytes
        // A SYN, or a SYN-ACK, whose checksum was left for offload to finish opens nothing.
        var unfinished = SYNChecksumTests.unfinished(TestFrames.ipv6TCP(src: client, dst: vip.address.networkBytes,
                                                                        sport: 40_000, dport: 80, flags: TCPHeader.syn))
        #expect(withFrame(&unfinished) { pt.handle($0) } == .drop)
        #expect(pt.counters.snapshot().drops(.unfinishedChecksum) == 1 && pt.counters.snapshot().flowsCreated == 0)
        var out = TestFrames.ipv6TCP(src: client, dst: vip.address.networkBytes, sport: 40_000, dport: 80,
                                     flags: TCPHeader.syn, payload: Array("GET /".utf8))
        #expect(withFrame(&out) { pt.handle($0) } == .transmit)
        #expect(Array(out[22..<38]) == v6("fd77::2").networkBytes)
        #expect(Array(out[38..<54]) == backend.address.networkBytes)
        let natPort = UInt16(out[54]) << 8 | UInt16(out[55])
        #expect((61000...61099).contains(natPort) && out[56] == 0x1f && out[57] == 0x90)
        #expect(TestFrames.storedTCP6Checksum(out) == TestFrames.recomputedTCP6Checksum(out))
        var reply = TestFrames.ipv6TCP(src: backend.address.networkBytes, dst: v6("fd77::2").networkBytes,
                                       sport: 8080, dport: natPort, flags: TCPHeader.syn | TCPHeader.ack,
                                       payload: Array("200".utf8))
        var unfinishedReply = SYNChecksumTests.unfinished(reply)
        #expect(withFrame(&unfinishedReply) { pt.handle($0) } == .drop)
        #expect(pt.counters.snapshot().drops(.unfinishedChecksum) == 2)
        #expect(withFrame(&reply) { pt.handle($0) } == .transmit)
        #expect(Array(reply[22..<38]) == vip.address.networkBytes && Array(reply[38..<54]) == client)
        #expect(reply[54] == 0 && reply[55] == 80 && UInt16(reply[56]) << 8 | UInt16(reply[57]) == 40_000)
        #expect(TestFrames.storedTCP6Checksum(reply) == TestFrames.recomputedTCP6Checksum(reply))
        #expect(TestFrames.fields(reply).dstMAC == TestFrames.clientMAC)
        // A spoofed IPv6 reply (another source) is refused.
        var spoofed = TestFrames.ipv6TCP(src: v6("fd77::22").networkBytes, dst: v6("fd77::2").networkBytes,
                                         sport: 8080, dport: natPort, flags: TCPHeader.ack)
        #expect(withFrame(&spoofed) { pt.handle($0) } == .drop)
        #expect(pt.counters.snapshot().drops(.unknownReply) == 1)
        // An IPv6 SYN from an IPv4-mapped source (invalid on the wire) opens nothing: the parser
        // refuses it, so it cannot pass for the IPv4 client in allow/deny lists and hashes.
        let mappedSource: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 10]
        var mapped = TestFrames.ipv6TCP(src: mappedSource, dst: vip.address.networkBytes,
                                        sport: 40_001, dport: 80, flags: TCPHeader.syn)
        #expect(withFrame(&mapped) { pt.handle($0) } == .drop)
        #expect(pt.counters.snapshot().drops(.malformed) == 1, "\(pt.counters.snapshot().drops)")
        // The port's entry has no IPv4 rewrite: no IPv4 frame matches it, whatever its source
        // (0.0.0.0:0 included).
        for (src, sport) in [(UInt32(0), UInt16(0)), (0x0A4D_0015, 8080)] {
            var v4 = TestFrames.ipv4TCP(src: src, dst: Self.nat, sport: sport, dport: natPort, flags: TCPHeader.ack)
            #expect(withFrame(&v4) { pt.handle($0) } == .drop)
            var batch = TestFrames.ipv4TCP(src: src, dst: Self.nat, sport: sport, dport: natPort, flags: TCPHeader.ack)
            #expect(handleAsBatch(&batch, &pt) == .drop)
        }
        #expect(pt.counters.snapshot().drops(.unknownReply) == 5)
    }
}
