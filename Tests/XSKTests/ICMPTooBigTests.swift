import Balancer
import Testing
@testable import XSK

/// ICMP "fragmentation needed" / ICMPv6 "packet too big" about a VIP's segment: read from the
/// quote, and passed by DSR to the backend that holds the connection.
@Suite("ICMP too big: parsed from its quote, forwarded by DSR to the connection's backend")
struct ICMPTooBigTests {
    static let router: UInt32 = 0x0A4D_0001
    static let vip: UInt32 = 0x0A4D_0064
    static let client: UInt32 = 0x0A4D_000A

    /// Ethernet + IPv4 (router → `destination`) + ICMP `type`/`code` (next-hop MTU 1280) quoting
    /// an IPv4 header from `quotedSource` to the client and the first 8 bytes of its TCP header.
    static func tooBig4(clientPort: UInt16, vipPort: UInt16 = 80, type: UInt8 = 3, code: UInt8 = 4,
                        destination: UInt32 = vip, quotedSource: UInt32 = vip, quotedProto: UInt8 = 6,
                        fragment: UInt16 = 0x4000) -> [UInt8] {
        var quote = [0x45, 0] + TestFrames.be16(1500) + TestFrames.be16(7) + TestFrames.be16(0x4000) + [64, quotedProto, 0, 0]
            + TestFrames.be32(quotedSource) + TestFrames.be32(client)
        let q = TestFrames.checksum(quote)
        quote[10] = UInt8(q >> 8)
        quote[11] = UInt8(q & 0xff)
        quote += TestFrames.be16(vipPort) + TestFrames.be16(clientPort) + TestFrames.be32(4242)
        var icmp: [UInt8] = [type, code, 0, 0, 0, 0] + TestFrames.be16(1280) + quote
        let c = TestFrames.checksum(icmp)
        icmp[2] = UInt8(c >> 8)
        icmp[3] = UInt8(c & 0xff)
        var ip = [0x45, 0] + TestFrames.be16(UInt16(20 + icmp.count)) + TestFrames.be16(9) + TestFrames.be16(fragment)
            + [64, 1, 0, 0] + TestFrames.be32(router) + TestFrames.be32(destination)
        let h = TestFrames.checksum(ip)
        ip[10] = UInt8(h >> 8)
        ip[11] = UInt8(h & 0xff)
        return TestFrames.mac(TestFrames.lbMAC) + TestFrames.mac(0x02_00_00_00_00_01) + [0x08, 0x00] + ip + icmp
    }

    static let vip6: [UInt8] = [0xfd, 0x77] + [UInt8](repeating: 0, count: 12) + [0x01, 0x00]
    static let client6: [UInt8] = [0xfd, 0x77] + [UInt8](repeating: 0, count: 12) + [0x00, 0x0a]

    /// Ethernet + IPv6 + ICMPv6 "packet too big" (`type`) quoting an IPv6 header from
    /// `quotedSource` to client6 and 8 bytes of TCP (the checksum is not checked by the parser).
    static func tooBig6(clientPort: UInt16, type: UInt8 = 2, quotedSource: [UInt8] = vip6) -> [UInt8] {
        let quote = [0x60, 0, 0, 0] + TestFrames.be16(1440) + [6, 64] + quotedSource + client6
            + TestFrames.be16(80) + TestFrames.be16(clientPort) + TestFrames.be32(4242)
        let icmp: [UInt8] = [type, 0, 0, 0] + TestFrames.be32(1280) + quote
        let router6: [UInt8] = [0xfd, 0x77] + [UInt8](repeating: 0, count: 13) + [1]
        let ip: [UInt8] = [0x60, 0, 0, 0] + TestFrames.be16(UInt16(icmp.count)) + [58, 64] + router6 + vip6
        return TestFrames.mac(TestFrames.lbMAC) + TestFrames.mac(0x02_00_00_00_00_01) + [0x86, 0xDD] + ip + icmp
    }

    static func parse(_ frame: [UInt8]) -> ICMPTooBig? {
        var f = frame
        return f.withUnsafeMutableBytes { ICMPTooBig.parse($0.baseAddress!, length: $0.count) }
    }

    @Test func theQuoteNamesTheConnection() throws {
        let v4 = try #require(Self.parse(Self.tooBig4(clientPort: 40_000)))
        #expect(v4 == ICMPTooBig(clientHi: 0, clientLo: 0xffff_0000_0000 | UInt64(Self.client), clientPort: 40_000,
                                 vipHi: 0, vipLo: 0xffff_0000_0000 | UInt64(Self.vip), vipPort: 80))
        let v6 = try #require(Self.parse(Self.tooBig6(clientPort: 40_001)))
        #expect(v6.clientPort == 40_001 && v6.vipPort == 80)
        #expect(v6.vipHi == 0xfd77_0000_0000_0000 && v6.vipLo == 0x100 && v6.clientLo == 0x0a)
    }

    @Test func otherMessagesAndBadQuotesAreNotIt() {
        #expect(Self.parse(Self.tooBig4(clientPort: 1, code: 3)) == nil, "port unreachable")
        #expect(Self.parse(Self.tooBig4(clientPort: 1, type: 11, code: 0)) == nil, "time exceeded")
        #expect(Self.parse(Self.tooBig4(clientPort: 1, quotedSource: 0x0A4D_0063)) == nil, "quotes another host's segment")
        #expect(Self.parse(Self.tooBig4(clientPort: 1, quotedProto: 17)) == nil, "quotes UDP")
        #expect(Self.parse(Self.tooBig4(clientPort: 1, fragment: 0x2000)) == nil, "a fragment")
        #expect(Self.parse(Self.tooBig6(clientPort: 1, type: 1)) == nil, "ICMPv6 destination unreachable")
        #expect(Self.parse(Self.tooBig6(clientPort: 1, quotedSource: Self.client6)) == nil)
        // An IPv4-mapped VIP (::ffff:10.77.0.100) would match the IPv4 VIP's flows.
        let mapped: [UInt8] = [UInt8](repeating: 0, count: 10) + [0xff, 0xff, 10, 77, 0, 100]
        var frame = Self.tooBig6(clientPort: 1, quotedSource: mapped)
        frame.replaceSubrange(38..<54, with: mapped)  // the outer destination too
        #expect(Self.parse(frame) == nil, "IPv4-mapped addresses are refused")
        #expect(Self.parse(TestFrames.ipv4TCP(src: Self.client, dst: Self.vip, sport: 1, dport: 80, flags: TCPHeader.syn)) == nil)
    }

    @Test func everyTruncationIsRefusedWithoutReadingPastTheFrame() {
        for frame in [Self.tooBig4(clientPort: 9), Self.tooBig6(clientPort: 9)] {
            for n in 0..<frame.count {
                // A fresh allocation of exactly n bytes, so a read past it would be caught by
                // the address sanitizer and, here, reads nothing of the rest.
                let cut = Array(frame[0..<n])
                #expect(Self.parse(cut) == nil, "\(n) of \(frame.count) bytes")
            }
            #expect(Self.parse(frame) != nil)
        }
    }

    @Test func dsrPassesItToTheTrackedFlowsBackend() throws {
        let fixture = RoutesFixture(balance: .wrr)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 64), routes: fixture.publisher)
        dsr.beginBatch(now: second)
        var syn = clientFrame(port: 1234, flags: TCPHeader.syn)
        #expect(withFrame(&syn) { dsr.handle($0) } == .transmit)
        let backendMAC = EthernetHeader(syn.withUnsafeMutableBytes { $0.baseAddress! }).destination
        for batch in [false, true] {
            var message = Self.tooBig4(clientPort: 1234)
            let original = message
            let verdict = batch ? handleAsBatch(&message, &dsr) : withFrame(&message) { dsr.handle($0) }
            #expect(verdict == .transmit)
            #expect(Array(message[0..<6]) == TestFrames.mac(backendMAC), "to the flow's backend")
            #expect(Array(message[6..<12]) == TestFrames.mac(TestFrames.lbMAC))
            #expect(Array(message[12...]) == Array(original[12...]), "IP and ICMP untouched")
        }
        let stats = dsr.counters.snapshot()
        #expect(stats.icmpForwarded == 2 && dsr.flowCount == 1)
        // No flow, and wrr cannot say where the connection went: dropped and counted.
        var stray = Self.tooBig4(clientPort: 999)
        #expect(withFrame(&stray) { dsr.handle($0) } == .drop)
        #expect(dsr.counters.snapshot().drops(.icmpNoFlow) == 1)
        #expect(dsr.counters.snapshot().drops(.unsupported) == 0)
        // About another VIP port: not ours.
        var other = Self.tooBig4(clientPort: 1234, vipPort: 81)
        #expect(withFrame(&other) { dsr.handle($0) } == .drop)
        #expect(dsr.counters.snapshot().drops(.notForUs) == 1)
    }

    @Test func dsrWithMaglevFindsTheBackendByHashWithoutAFlow() throws {
        let fixture = RoutesFixture(balance: .maglev)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 64), routes: fixture.publisher)
        dsr.beginBatch(now: second)
        for port in UInt16(2000)..<2020 {
            var message = Self.tooBig4(clientPort: port)
            #expect(withFrame(&message) { dsr.handle($0) } == .transmit)
            #expect(dsr.flowCount == 0, "a message opens no flow")
            var syn = clientFrame(port: port, flags: TCPHeader.syn)
            var fresh = DSRForwarder(settings: ForwarderSettings(capacity: 64), routes: fixture.publisher)
            fresh.beginBatch(now: second)
            #expect(withFrame(&syn) { fresh.handle($0) } == .transmit)
            #expect(Array(message[0..<6]) == Array(syn[0..<6]), "the backend the connection's SYN went to")
        }
        #expect(dsr.counters.snapshot().icmpForwarded == 20)
    }
}
