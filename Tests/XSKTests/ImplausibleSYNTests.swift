import Balancer
import Testing
@testable import XSK

/// Found by fuzzing the lab: SYNs no host would take a connection from were placed and
/// forwarded (passthrough even rewrote the backends' SYN-ACKs out towards 127.0.0.1 and the
/// broadcast address), each holding a flow and a NAT port until `syn_timeout`.
@Suite("What opens no flow: impossible sources, SYN with FIN or RST")
struct ImplausibleSYNTests {
    enum Mode: CaseIterable { case dsr, passthrough }

    /// Sends `frame` through a fresh forwarder of `mode`; returns whether it left, the drop
    /// counts and the flows created.
    static func run(_ mode: Mode, _ frame: [UInt8]) -> (sent: Bool, stats: ForwarderStats) {
        let fixture = RoutesFixture(balance: .wrr)
        var f = frame
        switch mode {
        case .dsr:
            var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 64), routes: fixture.publisher)
            dsr.beginBatch(now: second)
            let verdict = withFrame(&f) { dsr.handle($0) }
            return (verdict == .transmit, dsr.counters.snapshot())
        case .passthrough:
            var pt = PassthroughForwarderTests.forwarder(fixture)
            let verdict = withFrame(&f) { pt.handle($0) }
            return (verdict == .transmit, pt.counters.snapshot())
        }
    }

    @Test("a SYN from an address no client can have is dropped as bad_source", arguments: Mode.allCases)
    func impossibleSources(mode: Mode) {
        for source: UInt32 in [0x7F00_0001, 0x0000_0000, 0x0012_3456, 0xFFFF_FFFF, 0xE000_0001, 0xF000_0001, 0x0A4D_0064] {
            let (sent, stats) = Self.run(mode, clientFrame(client: source, port: 40_000, flags: TCPHeader.syn))
            #expect(!sent, "source \(source)")
            #expect(stats.drops(.badSource) == 1 && stats.flowsCreated == 0 && stats.resetsSent == 0, "source \(source)")
        }
        // A real client still gets through.
        #expect(Self.run(mode, clientFrame(client: 0x0A4D_000A, port: 40_000, flags: TCPHeader.syn)).sent)
    }

    @Test("passthrough: a SYN from the NAT address itself is bad_source")
    func fromTheNATAddress() {
        let (sent, stats) = Self.run(.passthrough, clientFrame(client: PassthroughForwarderTests.nat, port: 40_000, flags: TCPHeader.syn))
        #expect(!sent && stats.drops(.badSource) == 1 && stats.flowsCreated == 0)
    }

    @Test("SYN+FIN and SYN+RST open nothing: dropped as malformed", arguments: Mode.allCases)
    func synWithFinOrRst(mode: Mode) {
        for flags in [TCPHeader.syn | TCPHeader.fin, TCPHeader.syn | TCPHeader.rst] {
            let (sent, stats) = Self.run(mode, clientFrame(port: 40_000, flags: flags))
            #expect(!sent)
            #expect(stats.drops(.malformed) == 1 && stats.flowsCreated == 0)
        }
    }

    /// Group-addressed frames are left to the kernel by the steering program (BadFrameTests,
    /// in the lab). Another unicast MAC may be this host's own (a VRRP virtual MAC, a
    /// macvlan): its SYNs must still open flows.
    @Test("a SYN to another unicast MAC of this host still opens a flow", arguments: Mode.allCases)
    func otherUnicastMAC(mode: Mode) {
        let frame = TestFrames.ipv4TCP(src: 0x0A4D_000A, dst: 0x0A4D_0064, sport: 40_000, dport: 80,
                                       flags: TCPHeader.syn, dstMAC: 0x0000_5E00_0101)
        let (sent, stats) = Self.run(mode, frame)
        #expect(sent && stats.flowsCreated == 1)
    }

    @Test("IPv6: ::, ::1 and multicast sources, and the VIP's own address, are implausible; others are fine")
    func ipv6Sources() {
        let vip = (hi: UInt64(0xFD77_0000_0000_0000), lo: UInt64(0x100))
        #expect(!ForwarderCore.isPlausibleClient(hi: 0, lo: 0, vipHi: vip.hi, vipLo: vip.lo))
        #expect(!ForwarderCore.isPlausibleClient(hi: 0, lo: 1, vipHi: vip.hi, vipLo: vip.lo))
        #expect(!ForwarderCore.isPlausibleClient(hi: 0xFF02_0000_0000_0000, lo: 1, vipHi: vip.hi, vipLo: vip.lo))
        #expect(!ForwarderCore.isPlausibleClient(hi: vip.hi, lo: vip.lo, vipHi: vip.hi, vipLo: vip.lo))
        #expect(ForwarderCore.isPlausibleClient(hi: 0xFD77_0000_0000_0000, lo: 0xA, vipHi: vip.hi, vipLo: vip.lo))
        #expect(ForwarderCore.isPlausibleClient(hi: 0x2001_0DB8_0000_0000, lo: 1, vipHi: vip.hi, vipLo: vip.lo))
    }
}
