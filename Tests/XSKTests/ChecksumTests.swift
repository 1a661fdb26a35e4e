import Testing
@testable import XSK

@Suite("Checksums: RFC 1624 incremental updates equal a full recomputation")
struct ChecksumTests {
    @Test func theRFC1071ExampleSums() {
        let bytes: [UInt8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
        #expect(bytes.withUnsafeBytes { Checksum.fold(Checksum.sum($0)) } == 0xddf2)
    }

    /// Random IPv4/TCP frames (random options, payload lengths, addresses, ports), then random
    /// address and port rewrites through the incremental updates: both checksums must equal
    /// the ones computed from scratch over the rewritten bytes.
    @Test func incrementalUpdatesMatchFullRecomputationOverRandomPackets() {
        var rng = TestRandom(seed: 42)
        for _ in 0..<5_000 {
            let optionWords = Int.random(in: 0...10, using: &rng)
            let options = (0..<(optionWords * 4)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let payload = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var f = TestFrames.ipv4TCP(src: .random(in: 0...UInt32.max, using: &rng),
                                       dst: .random(in: 0...UInt32.max, using: &rng),
                                       sport: .random(in: 0...UInt16.max, using: &rng),
                                       dport: .random(in: 0...UInt16.max, using: &rng),
                                       flags: .random(in: 0...255, using: &rng), ipOptions: options, payload: payload)
            let newSrc = UInt32.random(in: 0...UInt32.max, using: &rng)
            let newDst = UInt32.random(in: 0...UInt32.max, using: &rng)
            let newSport = UInt16.random(in: 0...UInt16.max, using: &rng)
            let newDport = UInt16.random(in: 0...UInt16.max, using: &rng)
            f.withUnsafeMutableBytes { raw in
                guard case .tcp(let t) = FrameParser.classify(raw) else { Issue.record("not TCP"); return }
                let ip = IPv4Header(raw.baseAddress! + t.ipOffset)
                let tcp = TCPHeader(raw.baseAddress! + t.tcpOffset)
                let ipDelta = Checksum.delta(ip.source, newSrc) &+ Checksum.delta(ip.destination, newDst)
                ip.checksum = Checksum.adjust(ip.checksum, delta: ipDelta)
                tcp.checksum = Checksum.adjust(tcp.checksum, delta: ipDelta
                                                   &+ Checksum.delta(tcp.sourcePort, newSport)
                                                   &+ Checksum.delta(tcp.destinationPort, newDport))
                ip.source = newSrc
                ip.destination = newDst
                tcp.sourcePort = newSport
                tcp.destinationPort = newDport
                #expect(ip.checksum == ip.computedChecksum())
            }
            #expect(TestFrames.storedIPv4Checksum(f) == TestFrames.recomputedIPv4Checksum(f))
            #expect(TestFrames.storedTCPChecksum(f) == TestFrames.recomputedTCPChecksum(f))
        }
    }

    /// The per-flow form (folded difference, both values in memory order) gives what RFC 1624
    /// eq. 3 gives, byte-swapped, for every checksum and difference.
    @Test func storedFormMatchesTheHostOrderUpdate() {
        var rng = TestRandom(seed: 9)
        for n in 0..<200_000 {
            let checksum = n < 4 ? [0, 0xffff, 1, 0xfffe][n] : UInt16.random(in: 0...UInt16.max, using: &rng)
            let delta = Checksum.delta(UInt32.random(in: 0...UInt32.max, using: &rng),
                                       UInt32.random(in: 0...UInt32.max, using: &rng))
                &+ Checksum.delta(UInt16.random(in: 0...UInt16.max, using: &rng), UInt16.random(in: 0...UInt16.max, using: &rng))
            let stored = Checksum.adjustStored(checksum.bigEndian, storedDelta: Checksum.storedDelta(delta))
            #expect(UInt16(bigEndian: stored) == Checksum.adjust(checksum, delta: delta))
        }
    }

    /// `adjustStored`'s subtraction form is RFC 1624 eq. 3 exactly, including which zero it
    /// gives: every checksum against differences at the edges (0, 1, 0xfffe, 0xffff, the
    /// checksum itself and its neighbours) and random ones.
    @Test func storedFormIsEquationThreeForEveryChecksum() {
        func equationThree(_ stored: UInt16, _ delta: UInt16) -> UInt16 {
            let s = UInt32(~stored) &+ UInt32(delta)
            return ~UInt16(truncatingIfNeeded: (s & 0xffff) &+ (s >> 16))
        }
        var rng = TestRandom(seed: 11)
        let randomDeltas = (0..<24).map { _ in UInt16.random(in: 0...UInt16.max, using: &rng) }
        var mismatches = 0
        var checked = 0
        for stored in 0...UInt32(UInt16.max) {
            let s = UInt16(stored)
            for delta in [0, 1, 0xfffe, 0xffff, s, s &+ 1, s &- 1] + randomDeltas {
                if Checksum.adjustStored(s, storedDelta: delta) != equationThree(s, delta) { mismatches += 1 }
                checked += 1
            }
        }
        #expect(checked == 65_536 * 31)
        #expect(mismatches == 0)
    }

    @Test func ethernetAddressesAreTheHeaderBytes() {
        var frame = [UInt8](repeating: 0xEE, count: 14)
        frame.withUnsafeMutableBytes { raw in
            let eth = EthernetHeader(raw.baseAddress!)
            eth.store(EthernetAddresses(destination: 0x0A0B_0C0D_0E0F, source: 0x1112_1314_1516))
            #expect(eth.destination == 0x0A0B_0C0D_0E0F && eth.source == 0x1112_1314_1516)
        }
        #expect(frame == [0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0xEE, 0xEE])
    }

    @Test func sixteenBitUpdateMatchesRecomputation() {
        var rng = TestRandom(seed: 7)
        for _ in 0..<10_000 {
            var words = (0..<8).map { _ in UInt16.random(in: 0...UInt16.max, using: &rng) }
            let bytes = words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
            let before = TestFrames.checksum(bytes)
            let i = Int.random(in: 0..<8, using: &rng)
            let new = UInt16.random(in: 0...UInt16.max, using: &rng)
            let updated = Checksum.update(before, old: words[i], new: new)
            words[i] = new
            let after = TestFrames.checksum(words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] })
            #expect(updated == after)
        }
    }
}
