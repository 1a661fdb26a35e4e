import Balancer
import Testing
@testable import XSK

/// A SYN whose checksum its sender left for offload to finish (a veth peer with TX checksum
/// offload on) was forwarded and dropped as corrupt by every backend (seen in the lab:
/// `TcpInCsumErrors` at the backend, connections that never opened, nothing counted here).
@Suite("SYN checksums: unfinished (offloaded) and wrong ones open no flow and are counted")
struct SYNChecksumTests {
    /// `frame` (Ethernet + IPv4 or IPv6 + TCP) with the TCP checksum field as a sender with
    /// TX checksum offload leaves it: the pseudo-header's sum, not complemented.
    static func unfinished(_ frame: [UInt8]) -> [UInt8] {
        var f = frame
        let tcpStart: Int
        let pseudo: [UInt8]
        if f[12] == 0x86 {
            let length = Int(f[18]) << 8 | Int(f[19])
            tcpStart = 54
            pseudo = Array(f[22..<54]) + TestFrames.be32(UInt32(length)) + [0, 0, 0, 6]
        } else {
            let ihl = Int(f[14] & 0x0f) * 4
            let total = Int(f[16]) << 8 | Int(f[17])
            tcpStart = 14 + ihl
            pseudo = Array(f[26..<34]) + [0, 6] + TestFrames.be16(UInt16(total - ihl))
        }
        let partial = ~TestFrames.checksum(pseudo)
        f[tcpStart + 16] = UInt8(partial >> 8)
        f[tcpStart + 17] = UInt8(partial & 0xff)
        return f
    }

    /// `frame` with one payload or header byte changed and the checksum left as it was.
    static func corrupted(_ frame: [UInt8]) -> [UInt8] {
        var f = frame
        f[f.count - 1] ^= 0x5A
        return f
    }

    static let v6Client: [UInt8] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a]
    static let v6VIP: [UInt8] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64]

    static func classify(_ frame: [UInt8]) -> SegmentChecksum? {
        var f = frame
        return f.withUnsafeMutableBytes { buffer -> SegmentChecksum? in
            guard case .tcp(let parsed) = FrameParser.classify(buffer.baseAddress!, length: buffer.count) else { return nil }
            return SegmentChecksum.classify(buffer.baseAddress!, parsed)
        }
    }

    @Test("valid, unfinished and wrong checksums are told apart, IPv4 (with options and data) and IPv6")
    func classification() {
        let frames = [
            clientFrame(port: 40_000, flags: TCPHeader.syn),
            clientFrame(port: 40_001, flags: TCPHeader.syn, payload: Array("fast open data".utf8), ipOptions: [0x94, 4, 0, 0]),
            TestFrames.ipv6TCP(src: Self.v6Client, dst: Self.v6VIP, sport: 40_002, dport: 80, flags: TCPHeader.syn,
                               payload: [1, 2, 3]),
        ]
        for frame in frames {
            #expect(Self.classify(frame) == .valid)
            #expect(Self.classify(Self.unfinished(frame)) == .unfinished)
            #expect(Self.classify(Self.corrupted(frame)) == .wrong)
            #expect(Self.classify(Self.corrupted(Self.unfinished(frame))) == .unfinished,
                    "unfinished is told by the field alone: the data is not yet summed")
        }
    }

    @Test("a SYN with an unfinished or a wrong checksum is dropped and counted, opening no flow", arguments: ImplausibleSYNTests.Mode.allCases)
    func synsAreChecked(mode: ImplausibleSYNTests.Mode) {
        let syn = clientFrame(port: 40_000, flags: TCPHeader.syn)
        let (sentUnfinished, unfinishedStats) = ImplausibleSYNTests.run(mode, Self.unfinished(syn))
        #expect(!sentUnfinished)
        #expect(unfinishedStats.drops(.unfinishedChecksum) == 1 && unfinishedStats.flowsCreated == 0)
        let (sentWrong, wrongStats) = ImplausibleSYNTests.run(mode, Self.corrupted(syn))
        #expect(!sentWrong)
        #expect(wrongStats.drops(.badChecksum) == 1 && wrongStats.flowsCreated == 0)
        let (sent, stats) = ImplausibleSYNTests.run(mode, syn)
        #expect(sent && stats.flowsCreated == 1 && stats.drops(.badChecksum) == 0 && stats.drops(.unfinishedChecksum) == 0)
        // Only SYNs to a VIP are looked at: another destination is not_for_us whatever its checksum.
        let elsewhere = Self.unfinished(TestFrames.ipv4TCP(src: 0x0A4D_000A, dst: 0x0A4D_0099, sport: 40_000, dport: 80,
                                                           flags: TCPHeader.syn))
        let other = ImplausibleSYNTests.run(mode, elsewhere)
        #expect(other.stats.drops(.notForUs) == 1 && other.stats.drops(.unfinishedChecksum) == 0)
    }

    /// A passthrough forwarder (and the routes it forwards by) that has sent a client's SYN
    /// on; the NAT port it gave the flow.
    static func passthroughWithAFlow() -> (RoutesFixture, PassthroughForwarder, UInt16) {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var pt = PassthroughForwarderTests.forwarder(fixture)
        var syn = clientFrame(client: PassthroughForwarderTests.client, port: 40_000, flags: TCPHeader.syn)
        #expect(withFrame(&syn) { pt.handle($0) } == .transmit)
        return (fixture, pt, TestFrames.fields(syn).sport)
    }

    @Test("passthrough: a backend's SYN-ACK with an unfinished checksum is dropped and counted; the valid one goes back")
    func synAckIsChecked() {
        var (fixture, pt, natPort) = Self.passthroughWithAFlow()
        defer { withExtendedLifetime(fixture) {} }
        let synAck = TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: PassthroughForwarderTests.nat, sport: 8080, dport: natPort,
                                        flags: TCPHeader.syn | TCPHeader.ack, srcMAC: RoutesFixture.backendMAC(1))
        var bad = Self.unfinished(synAck)
        #expect(withFrame(&bad) { pt.handle($0) } == .drop)
        #expect(pt.counters.snapshot().drops(.unfinishedChecksum) == 1)
        var good = synAck
        #expect(withFrame(&good) { pt.handle($0) } == .transmit)
        PassthroughForwarderTests.expectValidChecksums(good)
    }

    @Test("what is refused anyway is counted as what it is, unsummed: SYN+FIN as malformed, an impossible source as bad_source", arguments: ImplausibleSYNTests.Mode.allCases)
    func cheapRefusalsComeFirst(mode: ImplausibleSYNTests.Mode) {
        let synFin = Self.corrupted(clientFrame(port: 40_000, flags: TCPHeader.syn | TCPHeader.fin))
        let a = ImplausibleSYNTests.run(mode, synFin).stats
        #expect(a.drops(.malformed) == 1 && a.drops(.badChecksum) == 0)
        let loopback = Self.unfinished(clientFrame(client: 0x7F00_0001, port: 40_000, flags: TCPHeader.syn))
        let b = ImplausibleSYNTests.run(mode, loopback).stats
        #expect(b.drops(.badSource) == 1 && b.drops(.unfinishedChecksum) == 0)
    }

    @Test("a SYN longer than the full-check limit is summed only when its field looks unfinished")
    func longSYNs() {
        let long = clientFrame(port: 40_000, flags: TCPHeader.syn, payload: [UInt8](repeating: 7, count: 400))
        #expect(Self.classify(long) == .valid)
        #expect(Self.classify(Self.unfinished(long)) == .unfinished)
        #expect(Self.classify(Self.corrupted(long)) == .valid, "not summed: passes")
        let short = clientFrame(port: 40_000, flags: TCPHeader.syn, payload: [UInt8](repeating: 7, count: 100))
        #expect(Self.classify(Self.corrupted(short)) == .wrong)
    }

    @Test("passthrough: a SYN-ACK from another source than the port's backend is unknown_reply, whatever its checksum")
    func spoofedSynAckIsUnknownReply() {
        var (fixture, pt, natPort) = Self.passthroughWithAFlow()
        defer { withExtendedLifetime(fixture) {} }
        var spoofed = Self.unfinished(TestFrames.ipv4TCP(src: 0x0A4D_0016, dst: PassthroughForwarderTests.nat, sport: 8080,
                                                         dport: natPort, flags: TCPHeader.syn | TCPHeader.ack))
        #expect(withFrame(&spoofed) { pt.handle($0) } == .drop)
        let stats = pt.counters.snapshot()
        #expect(stats.drops(.unknownReply) == 1 && stats.drops(.unfinishedChecksum) == 0)
        #expect(pt.counters.dropped(.unknownReply) == 1)
    }
}
