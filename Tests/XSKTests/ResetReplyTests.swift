import Balancer
import Testing
@testable import XSK

/// The reset a forwarder answers a segment of no connection with, built in place.
@Suite("ResetReply: the reset a host owes a segment of no connection (RFC 9293 3.10.7.1)")
struct ResetReplyTests {
    static let client: UInt32 = 0x0A4D_000A
    static let vip: UInt32 = 0x0A4D_0064

    static func rewrite(_ frame: inout [UInt8]) -> Bool {
        frame.withUnsafeMutableBytes { raw in
            guard case .tcp(let parsed) = FrameParser.classify(raw.baseAddress!, length: raw.count) else { return false }
            return ResetReply.rewrite(raw.baseAddress!, parsed)
        }
    }

    static func u32(_ f: [UInt8], _ o: Int) -> UInt32 { f[o..<(o + 4)].reduce(0) { $0 << 8 | UInt32($1) } }

    @Test("a segment that acknowledges: back to its sender, sequence = its acknowledgment, RST alone, valid checksums, padding kept")
    func acknowledgingSegment() {
        var f = TestFrames.ipv4TCP(src: Self.client, dst: Self.vip, sport: 40_000, dport: 80, flags: TCPHeader.ack | 0x08,
                                   ttl: 50, payload: [UInt8](repeating: 7, count: 100), seq: 5000)
        let length = f.count
        #expect(Self.rewrite(&f))
        #expect(f.count == length)
        let r = TestFrames.fields(f)
        #expect(r == TestFrames.V4(dstMAC: TestFrames.clientMAC, srcMAC: TestFrames.lbMAC, src: Self.vip, dst: Self.client,
                                   sport: 80, dport: 40_000, ttl: 64))
        #expect(Self.u32(f, 38) == 5077, "the segment's acknowledgment (seq + 77 in these frames)")
        #expect(f[46] == 5 << 4 && f[47] == TCPHeader.rst)
        #expect(f[16] == 0 && f[17] == 40, "IP total length: headers only")
        #expect(f[54...].allSatisfy { $0 == 0 }, "none of the segment's payload is echoed back")
        #expect(TestFrames.storedIPv4Checksum(f) == TestFrames.recomputedIPv4Checksum(f))
        #expect(TestFrames.storedTCPChecksum(f) == TestFrames.recomputedTCPChecksum(f))
    }

    @Test("a segment without ACK: sequence 0, RST|ACK acknowledging its payload and FIN")
    func segmentWithoutAcknowledgment() {
        var f = TestFrames.ipv4TCP(src: Self.client, dst: Self.vip, sport: 40_000, dport: 80, flags: TCPHeader.fin,
                                   payload: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], seq: 1000)
        #expect(Self.rewrite(&f))
        #expect(Self.u32(f, 38) == 0 && Self.u32(f, 42) == 1011)
        #expect(f[47] == TCPHeader.rst | TCPHeader.ack)
        #expect(TestFrames.storedTCPChecksum(f) == TestFrames.recomputedTCPChecksum(f))
    }

    @Test("IPv6: addresses swapped, payload length 20, valid checksum")
    func ipv6() {
        let client: [UInt8] = [0xfd, 0x77] + [UInt8](repeating: 0, count: 13) + [0x10]
        let vip: [UInt8] = [0xfd, 0x77] + [UInt8](repeating: 0, count: 13) + [0x64]
        var f = TestFrames.ipv6TCP(src: client, dst: vip, sport: 40_000, dport: 80, flags: TCPHeader.ack, payload: [9, 9, 9])
        #expect(Self.rewrite(&f))
        #expect(Array(f[22..<38]) == vip && Array(f[38..<54]) == client)
        #expect(f[18] == 0 && f[19] == 20 && f[21] == 64)
        #expect(f[54] == 0 && f[55] == 80 && f[67] == TCPHeader.rst)
        #expect(TestFrames.storedTCP6Checksum(f) == TestFrames.recomputedTCP6Checksum(f))
    }

    @Test("no answer to a reset, nor (left unchanged) to a segment with IPv4 options")
    func notAnswered() {
        for frame in [TestFrames.ipv4TCP(src: Self.client, dst: Self.vip, sport: 1, dport: 80, flags: TCPHeader.rst),
                      TestFrames.ipv4TCP(src: Self.client, dst: Self.vip, sport: 1, dport: 80, flags: TCPHeader.ack,
                                         ipOptions: [1, 1, 1, 0])] {
            var f = frame
            #expect(!Self.rewrite(&f))
            #expect(f == frame)
        }
    }

    @Test("DSR: a segment of a flow it does not carry (wrr cannot place it) is answered with a reset to the client")
    func forwarderAnswers() {
        let fixture = RoutesFixture(balance: .wrr, count: 2)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 64), routes: fixture.publisher)
        dsr.beginBatch(now: second)
        var f = clientFrame(client: Self.client, port: 40_000, flags: TCPHeader.ack, payload: [1, 2, 3])
        #expect(withFrame(&f) { dsr.handle($0) } == .transmit)
        let r = TestFrames.fields(f)
        #expect(r.dst == Self.client && r.dport == 40_000 && r.dstMAC == TestFrames.clientMAC && f[47] == TCPHeader.rst)
        let stats = dsr.counters.snapshot()
        #expect(stats.resetsSent == 1 && stats.drops(.noFlow) == 1 && stats.flowsCreated == 0)
        var reset = clientFrame(client: Self.client, port: 40_000, flags: TCPHeader.rst)
        #expect(withFrame(&reset) { dsr.handle($0) } == .drop, "a reset is never answered")
    }
}
