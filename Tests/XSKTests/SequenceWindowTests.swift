import Balancer
import Testing
@testable import XSK

/// A RST or FIN closes a flow only near the client's own sequence numbers: one forged by
/// someone who knows the addresses and ports but not the connection's sequence numbers is
/// forwarded for the backend to judge, and the balancer's flow stays as it was.
@Suite("Sequence window: a forged RST or FIN cannot close a flow in the AF_XDP modes")
struct SequenceWindowTests {
    static let isn: UInt32 = 0xFFFF_F000  // wraps during the tests

    /// A DSR forwarder (wrr: no mid-flow adoption to mend a lost flow) with one established
    /// flow from client port 7: SYN at `isn`, then 100 bytes through the batch path.
    static func established() -> DSRForwarder {
        let fixture = RoutesFixture(balance: .wrr, count: 2)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 1024), routes: fixture.publisher)
        dsr.beginBatch(now: second)
        var syn = clientFrame(port: 7, flags: TCPHeader.syn, seq: isn)
        var ack = clientFrame(port: 7, flags: TCPHeader.ack, seq: isn &+ 1)
        var data = clientFrame(port: 7, flags: TCPHeader.ack, payload: Array(repeating: 1, count: 100), seq: isn &+ 1)
        #expect(withFrame(&syn) { dsr.handle($0) } == .transmit)
        #expect(withFrame(&ack) { dsr.handle($0) } == .transmit)
        #expect(handleAsBatch(&data, &dsr) == .transmit)
        return dsr
    }

    static func send(_ flags: UInt8, seq: UInt32, _ dsr: inout DSRForwarder, batch: Bool = false) -> PacketVerdict {
        var f = clientFrame(port: 7, flags: flags, seq: seq)
        return batch ? handleAsBatch(&f, &dsr) : withFrame(&f) { dsr.handle($0) }
    }

    @Test("a RST or FIN far from the client's sequence numbers is forwarded and counted, and the flow stays open; the client's own RST closes it")
    func aForgedResetClosesNothing() {
        var dsr = Self.established()
        let next = Self.isn &+ 101
        for (flags, seq) in [(TCPHeader.rst, next &+ 5_000_000), (TCPHeader.rst | TCPHeader.ack, next &- 3_000_000),
                             (TCPHeader.fin | TCPHeader.ack, next &+ 0x8000_0000), (TCPHeader.rst, next &+ (1 << 20) &+ 1)] {
            #expect(Self.send(flags, seq: seq, &dsr) == .transmit, "the backend judges it")
        }
        var stats = dsr.counters.snapshot()
        #expect(stats.closesOutOfWindow == 4)
        #expect(stats.flowsClosing == 0 && dsr.flowCount == 1)
        // The flow is still established: its next segment takes the steady (batch) path.
        #expect(Self.send(TCPHeader.ack, seq: next, &dsr, batch: true) == .transmit)
        // Past the closing timeout a forged RST would have ended it; it is still there.
        for _ in 0..<2 { dsr.beginBatch(now: 30 * second) }
        #expect(dsr.flowCount == 1 && dsr.counters.snapshot().flowsExpired == 0)

        #expect(Self.send(TCPHeader.rst, seq: next, &dsr) == .transmit)
        stats = dsr.counters.snapshot()
        #expect(stats.flowsClosing == 1 && stats.closesOutOfWindow == 4)
    }

    @Test("the window follows the client's segments (through the batch and the per-frame paths) but not a segment far from it, and takes a FIN or RST a little behind (a retransmission)")
    func theWindowFollowsTheClient() {
        var dsr = Self.established()
        // 4 MiB in 1400-byte segments, alternating the paths: far past the first window.
        var seq = Self.isn &+ 101
        for i in 0..<3000 {
            #expect(Self.send(TCPHeader.ack, seq: seq, &dsr, batch: i % 2 == 0) == .transmit)
            seq &+= 1400
        }
        // A forged segment far ahead (no RST or FIN: it misses the steady path's test and
        // takes the full path) moves nothing, so a RST next to it is still outside.
        let forged = seq &+ 100_000_000
        #expect(Self.send(TCPHeader.ack, seq: forged, &dsr, batch: true) == .transmit)
        #expect(Self.send(TCPHeader.rst, seq: forged &+ 1, &dsr) == .transmit)
        #expect(dsr.counters.snapshot().closesOutOfWindow == 1 && dsr.counters.snapshot().flowsClosing == 0)
        // The client's FIN, 1400 bytes on from its last segment, then the same FIN again after
        // the client's final ACK (one byte behind it): both in the window.
        #expect(Self.send(TCPHeader.fin | TCPHeader.ack, seq: seq, &dsr) == .transmit)
        #expect(Self.send(TCPHeader.ack, seq: seq &+ 1, &dsr) == .transmit)
        #expect(Self.send(TCPHeader.fin | TCPHeader.ack, seq: seq, &dsr) == .transmit)
        let stats = dsr.counters.snapshot()
        #expect(stats.flowsClosing == 1 && stats.closesOutOfWindow == 1)
    }

    @Test("the window's edges: a RST 1 MiB ahead of the anchor or 64 KiB behind it closes the flow, one a byte further does not")
    func theWindowsEdges() {
        // The anchor is the data segment's sequence number, isn + 1.
        let anchor = Self.isn &+ 1
        for (offset, closes) in [(Int64(1 << 20), true), (Int64(1 << 20) + 1, false),
                                 (-Int64(1 << 16), true), (-Int64(1 << 16) - 1, false), (-60_000, true)] {
            var dsr = Self.established()
            let seq = UInt32(truncatingIfNeeded: Int64(anchor) + offset)
            #expect(Self.send(TCPHeader.rst, seq: seq, &dsr) == .transmit)
            let stats = dsr.counters.snapshot()
            #expect(stats.flowsClosing == (closes ? 1 : 0) && stats.closesOutOfWindow == (closes ? 0 : 1),
                    "RST at anchor \(offset >= 0 ? "+" : "")\(offset)")
        }
    }

    @Test("a forged RST does not refresh its flow: the flow still expires on time")
    func aForgedResetDoesNotRefresh() {
        var dsr = Self.established()  // last segment at 1 s; established_timeout is 300 s
        dsr.beginBatch(now: 290 * second)
        #expect(Self.send(TCPHeader.rst, seq: Self.isn &+ 0x4000_0000, &dsr) == .transmit)
        for _ in 0..<2 { dsr.beginBatch(now: 305 * second) }
        #expect(dsr.flowCount == 0 && dsr.counters.snapshot().flowsExpired == 1)
    }

    @Test("a segment far from the window (a burst lost before the balancer) still keeps its flow alive, changing nothing else; the client's retransmissions then carry the window on to it")
    func aFarSegmentKeepsItsFlow() {
        var dsr = Self.established()
        let far = Self.isn &+ 101 &+ 3_000_000
        dsr.beginBatch(now: 200 * second)
        #expect(Self.send(TCPHeader.ack, seq: far, &dsr, batch: true) == .transmit)
        for _ in 0..<2 { dsr.beginBatch(now: 400 * second) }
        #expect(dsr.flowCount == 1, "refreshed at 200 s: established_timeout (300 s) has not passed since")
        #expect(Self.send(TCPHeader.rst, seq: far, &dsr) == .transmit)
        #expect(dsr.counters.snapshot().closesOutOfWindow == 1)
        // The lost bytes come again, 1400 at a time; the window follows them to `far`.
        var seq = Self.isn &+ 101
        while seq &- (Self.isn &+ 101) < 3_000_000 {
            #expect(Self.send(TCPHeader.ack, seq: seq, &dsr, batch: true) == .transmit)
            seq &+= 1400
        }
        #expect(Self.send(TCPHeader.rst, seq: far, &dsr) == .transmit)
        let stats = dsr.counters.snapshot()
        #expect(stats.flowsClosing == 1 && stats.closesOutOfWindow == 1)
    }

    @Test("a client that sends its SYN again with a new initial sequence number moves the window to it; an ACK far from it does not establish the flow")
    func aRepeatedSYNMovesTheWindow() {
        let fixture = RoutesFixture(balance: .wrr, count: 2)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 1024), routes: fixture.publisher)
        dsr.beginBatch(now: second)
        #expect(Self.send(TCPHeader.syn, seq: 1, &dsr) == .transmit)
        #expect(Self.send(TCPHeader.syn, seq: 3_000_000_000, &dsr) == .transmit)
        #expect(Self.send(TCPHeader.ack, seq: 2, &dsr) == .transmit)
        // Still in SYN state: gone after the 5 s SYN timeout (not 300 s).
        for _ in 0..<2 { dsr.beginBatch(now: 10 * second) }
        #expect(dsr.flowCount == 0 && dsr.counters.snapshot().flowsExpired == 1)

        #expect(Self.send(TCPHeader.syn, seq: 1, &dsr) == .transmit)
        #expect(Self.send(TCPHeader.syn, seq: 3_000_000_000, &dsr) == .transmit)
        #expect(Self.send(TCPHeader.ack, seq: 3_000_000_001, &dsr) == .transmit)
        for _ in 0..<2 { dsr.beginBatch(now: 20 * second) }
        #expect(dsr.flowCount == 1, "established by the ACK of the second SYN")
    }

    @Test("passthrough: a forged client RST or FIN neither closes the flow nor frees its NAT port; the client's own FIN half-closes it as before")
    func passthroughKeepsItsFlow() {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var pt = PassthroughForwarderTests.forwarder(fixture)
        var syn = clientFrame(port: 9, flags: TCPHeader.syn, seq: 500)
        var ack = clientFrame(port: 9, flags: TCPHeader.ack, seq: 501)
        #expect(withFrame(&syn) { pt.handle($0) } == .transmit)
        #expect(withFrame(&ack) { pt.handle($0) } == .transmit)
        let natPort = TestFrames.fields(syn).sport
        var rst = clientFrame(port: 9, flags: TCPHeader.rst, seq: 501 &+ 40_000_000)
        var fin = clientFrame(port: 9, flags: TCPHeader.fin | TCPHeader.ack, seq: 501 &- 70_000)
        #expect(withFrame(&rst) { pt.handle($0) } == .transmit)
        #expect(withFrame(&fin) { pt.handle($0) } == .transmit)
        var stats = pt.counters.snapshot()
        #expect(stats.closesOutOfWindow == 2 && stats.flowsClosing == 0)
        #expect(pt.natPort(client: Endpoint(address: .v4(PassthroughForwarderTests.client), port: 9),
                           vip: RoutesFixture.vip) == natPort)
        // The backend's FIN and the client's own: the connection is over.
        var serverFin = TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: PassthroughForwarderTests.nat, sport: 8080, dport: natPort,
                                           flags: TCPHeader.fin | TCPHeader.ack)
        #expect(withFrame(&serverFin) { pt.handle($0) } == .transmit)
        var clientFin = clientFrame(port: 9, flags: TCPHeader.fin | TCPHeader.ack, seq: 501)
        #expect(withFrame(&clientFin) { pt.handle($0) } == .transmit)
        stats = pt.counters.snapshot()
        #expect(stats.flowsClosing == 1 && stats.closesOutOfWindow == 2)
    }
}
