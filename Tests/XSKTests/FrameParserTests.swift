import Testing
@testable import XSK

@Suite("Frame parsing: every header checked against the frame, never a crash")
struct FrameParserTests {
    @Test func anIPv4TCPFrameIsFound() {
        var f = TestFrames.ipv4TCP(src: 0x0A00_0001, dst: 0x0A00_0002, sport: 1234, dport: 80, flags: TCPHeader.syn,
                                   payload: [1, 2, 3])
        let c = withFrame(&f) { FrameParser.classify($0) }
        #expect(c == .tcp(TCPFrame(ipOffset: 14, tcpOffset: 34, ipEnd: f.count, isIPv6: false)))
    }

    @Test func ipv4OptionsMoveTheTCPHeaderByIHL() {
        var f = TestFrames.ipv4TCP(src: 1, dst: 2, sport: 1, dport: 2, flags: TCPHeader.ack,
                                   ipOptions: [1, 1, 1, 0, 0x94, 4, 0, 0])
        let c = withFrame(&f) { FrameParser.classify($0) }
        #expect(c == .tcp(TCPFrame(ipOffset: 14, tcpOffset: 42, ipEnd: f.count, isIPv6: false)))
    }

    @Test func ethernetPaddingAfterThePacketIsAllowed() {
        var f = TestFrames.ipv4TCP(src: 1, dst: 2, sport: 1, dport: 2, flags: TCPHeader.ack, padding: 6)
        let c = withFrame(&f) { FrameParser.classify($0) }
        #expect(c == .tcp(TCPFrame(ipOffset: 14, tcpOffset: 34, ipEnd: f.count - 6, isIPv6: false)))
    }

    @Test func anIPv6TCPFrameIsFound() {
        let a = [UInt8](repeating: 0xfd, count: 16), b = [UInt8](repeating: 0x77, count: 16)
        var f = TestFrames.ipv6TCP(src: a, dst: b, sport: 5, dport: 80, flags: TCPHeader.syn)
        let c = withFrame(&f) { FrameParser.classify($0) }
        #expect(c == .tcp(TCPFrame(ipOffset: 14, tcpOffset: 54, ipEnd: f.count, isIPv6: true)))
    }

    /// ::ffff:a.b.c.d never appears on the wire (RFC 4291 §2.5.5.2), and would otherwise reach
    /// an IPv4 VIP's frontend with an IPv6 header.
    @Test func ipv4MappedIPv6AddressesAreMalformed() {
        let mapped: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 100]
        let other = [UInt8](repeating: 0xfd, count: 16)
        var nearMiss = mapped
        nearMiss[9] = 1  // ::1:ffff:a.b.c.d is an ordinary address
        var toMapped = TestFrames.ipv6TCP(src: other, dst: mapped, sport: 5, dport: 80, flags: TCPHeader.syn)
        var fromMapped = TestFrames.ipv6TCP(src: mapped, dst: other, sport: 5, dport: 80, flags: TCPHeader.ack)
        var ordinary = TestFrames.ipv6TCP(src: other, dst: nearMiss, sport: 5, dport: 80, flags: TCPHeader.syn)
        #expect(withFrame(&toMapped) { FrameParser.classify($0) } == .malformed)
        #expect(withFrame(&fromMapped) { FrameParser.classify($0) } == .malformed)
        #expect(withFrame(&ordinary) { FrameParser.classify($0) } == .tcp(TCPFrame(ipOffset: 14, tcpOffset: 54,
                                                                                       ipEnd: ordinary.count, isIPv6: true)))
    }

    @Test func fragmentsAndExtensionHeadersAndOtherProtocolsAreUnsupported() {
        let moreFragments = TestFrames.ipv4TCP(src: 1, dst: 2, sport: 1, dport: 2, flags: 0, fragment: 0x2000)
        let offset = TestFrames.ipv4TCP(src: 1, dst: 2, sport: 1, dport: 2, flags: 0, fragment: 0x0010)
        let ext = TestFrames.ipv6TCP(src: [UInt8](repeating: 1, count: 16), dst: [UInt8](repeating: 2, count: 16),
                                     sport: 1, dport: 2, flags: 0, nextHeader: 0)
        var udp = TestFrames.ipv4TCP(src: 1, dst: 2, sport: 1, dport: 2, flags: 0)
        udp[23] = 17
        var arp = [UInt8](repeating: 0, count: 42)
        arp[12] = 0x08; arp[13] = 0x06
        var vlan = TestFrames.ipv4TCP(src: 1, dst: 2, sport: 1, dport: 2, flags: 0)
        vlan[12] = 0x81; vlan[13] = 0x00
        for var f in [moreFragments, offset, ext, udp, arp, vlan] {
            #expect(withFrame(&f) { FrameParser.classify($0) } == .unsupported)
        }
    }

    @Test func truncatedOrLyingHeadersAreMalformed() {
        let good = TestFrames.ipv4TCP(src: 1, dst: 2, sport: 1, dport: 2, flags: 0, payload: [9, 9, 9, 9])
        // Every truncation inside the headers, or of the payload the IP length claims.
        for n in [0, 5, 13, 14, 20, 33, 34, 40, 53, 57] {
            var f = Array(good.prefix(n))
            let c = withFrame(&f) { FrameParser.classify($0) }
            #expect(c == .malformed, "length \(n): \(c)")
        }
        var ihlTooSmall = good; ihlTooSmall[14] = 0x44
        var ihlTooBig = good; ihlTooBig[14] = 0x4f
        var totalTooBig = good; totalTooBig[16] = 0x10
        var totalTooSmall = good; totalTooSmall[16] = 0; totalTooSmall[17] = 30
        var tcpOffsetTooSmall = good; tcpOffsetTooSmall[46] = 0x40
        var tcpOffsetTooBig = good; tcpOffsetTooBig[46] = 0xf0
        var wrongVersion = good; wrongVersion[14] = 0x65
        for var f in [ihlTooSmall, ihlTooBig, totalTooBig, totalTooSmall, tcpOffsetTooSmall, tcpOffsetTooBig, wrongVersion] {
            #expect(withFrame(&f) { FrameParser.classify($0) } == .malformed)
        }
        var v6 = TestFrames.ipv6TCP(src: [UInt8](repeating: 1, count: 16), dst: [UInt8](repeating: 2, count: 16),
                                    sport: 1, dport: 2, flags: 0)
        v6[19] = 0xff  // payload length beyond the frame
        #expect(withFrame(&v6) { FrameParser.classify($0) } == .malformed)
    }

    @Test func anEmptyBufferIsMalformed() {
        let empty = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        #expect(FrameParser.classify(empty) == .malformed)
    }

    /// Mutated and truncated frames through the parser and both forwarders (bounded: 20 000
    /// mutations): whatever the bytes, no crash, and a `.tcp` verdict only with headers inside
    /// the frame. Each case is copied into an exact-size allocation, so an overread would hit
    /// the allocation's end (and Address Sanitizer, when enabled).
    @Test func fuzzedFramesNeverCrashTheParserOrTheForwarders() {
        var rng = TestRandom(seed: 0xF00D)
        let fixture = RoutesFixture(balance: .maglev)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 64), routes: fixture.publisher)
        var nat = PassthroughForwarder(settings: ForwarderSettings(capacity: 64, natAddress: .v4(0x0A4D_0002),
                                                                   natPorts: 61000...61010),
                                       routes: fixture.publisher, reverseMap: NATReverseMap())
        dsr.beginBatch(now: second)
        nat.beginBatch(now: second)
        let seeds: [[UInt8]] = [
            clientFrame(port: 1000, flags: TCPHeader.syn, payload: [1, 2, 3]),
            clientFrame(port: 1001, flags: TCPHeader.ack, ipOptions: [1, 1, 1, 0]),
            TestFrames.ipv6TCP(src: [UInt8](repeating: 0xfd, count: 16), dst: [UInt8](repeating: 1, count: 16),
                               sport: 1, dport: 80, flags: TCPHeader.syn),
            TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: 0x0A4D_0002, sport: 8080, dport: 61000, flags: TCPHeader.ack),
        ]
        var tcpSeen = 0
        for n in 0..<20_000 {
            var f = seeds[n % seeds.count]
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                f[Int.random(in: 0..<f.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            if Bool.random(using: &rng) { f = Array(f.prefix(Int.random(in: 0...f.count, using: &rng))) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: f.count, alignment: 1)
            defer { buffer.deallocate() }
            buffer.copyBytes(from: f)
            if case .tcp(let t) = FrameParser.classify(buffer) {
                tcpSeen += 1
                #expect(t.tcpOffset + 20 <= t.ipEnd && t.ipEnd <= f.count)
            }
            // The shortcut for plain IPv4 frames never accepts what the full checks refuse.
            if let base = buffer.baseAddress, let fast = FrameParser.plainIPv4TCP(base, length: f.count) {
                #expect(FrameParser.classifyFully(base, length: f.count) == .tcp(fast))
            }
            _ = dsr.handle(buffer)
            buffer.copyBytes(from: f)
            _ = nat.handle(buffer)
        }
        #expect(tcpSeen > 1000)
        #expect(dsr.counters.snapshot().rxPackets == 20_000)
    }
}
