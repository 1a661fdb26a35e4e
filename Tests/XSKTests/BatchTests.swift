import Balancer
import Testing
@testable import XSK

/// The worker hands frames over in batches, and the forwarders handle a batch in two passes
/// (lookups first, so their cache misses overlap; see `FrameLookup`). These tests hold the
/// batch path to the frame-by-frame path: two forwarders on the same routes get the same
/// frames, one per frame and one in batches of random sizes (across the 64-frame pass size),
/// and every verdict, every output byte and every counter must agree.
@Suite("Batches: two passes give exactly what frame-by-frame handling gives")
struct BatchTests {
    static let nat: UInt32 = 0x0A4D_0002
    static let vip: UInt32 = 0x0A4D_0064

    /// Runs `frames` through `single` one by one and through `batched` in batches whose sizes
    /// come from `rng`, and checks the two agree frame for frame. Returns the outputs.
    static func compare<H: PacketHandler>(_ frames: [[UInt8]], single: inout H, batched: inout H,
                                          rng: inout TestRandom,
                                          sourceLocation: SourceLocation = #_sourceLocation) -> [[UInt8]] {
        var one = frames
        var verdictsOne: [PacketVerdict] = []
        for i in one.indices { verdictsOne.append(withFrame(&one[i]) { single.handle($0) }) }

        var many = frames
        var verdictsMany: [PacketVerdict] = []
        var start = 0
        while start < many.count {
            let n = min(many.count - start, Int.random(in: 1...150, using: &rng))
            // Copy the batch's frames into one buffer, as frames in a UMEM.
            let sizes = many[start..<(start + n)].map(\.count)
            let area = UnsafeMutableRawPointer.allocate(byteCount: n * 2048, alignment: 64)
            defer { area.deallocate() }
            var packetFrames: [PacketFrame] = []
            for (k, frame) in many[start..<(start + n)].enumerated() {
                frame.withUnsafeBytes { (area + k * 2048).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                packetFrames.append(PacketFrame(base: area + k * 2048, length: sizes[k]))
            }
            var verdicts = [PacketVerdict](repeating: .drop, count: n)
            packetFrames.withUnsafeBufferPointer { f in
                verdicts.withUnsafeMutableBufferPointer { batched.handle(batch: f, verdicts: $0.baseAddress!) }
            }
            verdictsMany += verdicts
            for k in 0..<n {
                many[start + k] = Array(UnsafeRawBufferPointer(start: area + k * 2048, count: sizes[k]))
            }
            start += n
        }
        #expect(verdictsOne.count == verdictsMany.count, sourceLocation: sourceLocation)
        for i in verdictsOne.indices where verdictsOne[i] != verdictsMany[i] {
            Issue.record("frame \(i): \(verdictsMany[i]) in the batch, \(verdictsOne[i]) frame by frame",
                         sourceLocation: sourceLocation)
            break
        }
        for i in one.indices where one[i] != many[i] {
            Issue.record("frame \(i): the batch wrote \(many[i]), frame by frame gave \(one[i])",
                         sourceLocation: sourceLocation)
            break
        }
        return one
    }

    /// Frames no fast path takes: IPv6, IPv4 with options, a fragment, UDP-like garbage, a
    /// truncated frame, a frame to no VIP.
    static func oddFrames(_ rng: inout TestRandom) -> [[UInt8]] {
        let v6a: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [0x0a]
        let v6b: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [0x64]
        var truncated = clientFrame(port: 7, flags: TCPHeader.ack)
        truncated.removeLast(10)
        return [
            TestFrames.ipv6TCP(src: v6a, dst: v6b, sport: 5, dport: 80, flags: TCPHeader.syn),
            clientFrame(port: UInt16.random(in: 1...65535, using: &rng), flags: TCPHeader.ack, ipOptions: [1, 1, 1, 0]),
            TestFrames.ipv4TCP(src: 0x0B00_0001, dst: vip, sport: 9, dport: 80, flags: TCPHeader.ack, fragment: 0x2000),
            [UInt8](repeating: 0xAB, count: 60),
            truncated,
            TestFrames.ipv4TCP(src: 0x0B00_0001, dst: 0x0A4D_0099, sport: 9, dport: 80, flags: TCPHeader.ack),
            [],
        ]
    }

    /// Client segments of `flows` flows, in a random order mixed with odd frames.
    static func clientRound(_ flows: [(UInt32, UInt16)], flags: (Int) -> UInt8, rng: inout TestRandom) -> [[UInt8]] {
        var frames = flows.enumerated().map { i, f in
            TestFrames.ipv4TCP(src: f.0, dst: vip, sport: f.1, dport: 80, flags: flags(i),
                               payload: [UInt8](repeating: UInt8(i & 0xff), count: i % 7 * 50))
        }
        frames += oddFrames(&rng)
        frames.shuffle(using: &rng)
        return frames
    }

    static func randomFlows(_ count: Int, _ rng: inout TestRandom) -> [(UInt32, UInt16)] {
        var seen = Set<UInt64>()
        var flows: [(UInt32, UInt16)] = []
        while flows.count < count {
            let client = UInt32.random(in: 0x0B00_0000...0x0BFF_FFFF, using: &rng)
            let port = UInt16.random(in: 1024...65535, using: &rng)
            if seen.insert(UInt64(client) << 16 | UInt64(port)).inserted { flows.append((client, port)) }
        }
        return flows
    }

    @Test("sequence windows: segments that move the window on (past half of it), fall behind it, jump out of it, and RSTs and FINs in and out of it give the same verdicts, bytes and counters in batches as frame by frame",
          arguments: [false, true])
    func sequenceWindowsMatchFrameByFrame(passthrough: Bool) {
        let fixture = RoutesFixture(balance: .wrr, count: 3)
        var rng = TestRandom(seed: 23)
        let flows = Self.randomFlows(200, &rng)
        let isn = flows.map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) }
        var sequence = isn
        func segments(_ flags: (Int) -> UInt8, advance: (Int) -> UInt32) -> [[UInt8]] {
            var frames = flows.enumerated().map { i, f in
                TestFrames.ipv4TCP(src: f.0, dst: Self.vip, sport: f.1, dport: 80, flags: flags(i),
                                   payload: [UInt8](repeating: 1, count: i % 5 * 100), seq: sequence[i])
            }
            for i in flows.indices { sequence[i] &+= advance(i) }
            frames.shuffle(using: &rng)
            return frames
        }
        let steps: [(Int) -> UInt32] = [
            { _ in 1 }, { i in UInt32(i % 3) * 300_000 }, { i in i % 4 == 0 ? 600_000 : 1400 },
            { i in i % 5 == 0 ? 3_000_000 : 0 }, { i in i % 6 == 0 ? UInt32.max - 100_000 : 0 }, { _ in 0 },
        ]
        func check<H: PacketHandler>(_ single: inout H, _ batched: inout H, counters: (H) -> ForwarderStats) {
            single.beginBatch(now: second)
            batched.beginBatch(now: second)
            for i in flows.indices { sequence[i] = isn[i] }
            _ = Self.compare(segments({ _ in TCPHeader.syn }, advance: { _ in 1 }), single: &single, batched: &batched, rng: &rng)
            for step in steps {
                _ = Self.compare(segments({ _ in TCPHeader.ack }, advance: step), single: &single, batched: &batched, rng: &rng)
            }
            // RSTs and FINs: some at the client's number, some far from it.
            _ = Self.compare(segments({ i in i % 3 == 0 ? TCPHeader.rst : i % 3 == 1 ? TCPHeader.fin | TCPHeader.ack : TCPHeader.ack },
                                   advance: { _ in 0 }), single: &single, batched: &batched, rng: &rng)
            for i in flows.indices where i % 2 == 0 { sequence[i] &+= 0x4000_0000 }
            _ = Self.compare(segments({ i in i % 4 < 2 ? TCPHeader.rst : TCPHeader.fin | TCPHeader.ack }, advance: { _ in 0 }),
                             single: &single, batched: &batched, rng: &rng)
            let a = counters(single), b = counters(batched)
            #expect(a == b)
            #expect(a.closesOutOfWindow > 0 && a.flowsClosing > 0, "\(a)")
        }
        if passthrough {
            let settings = ForwarderSettings(capacity: 4096, natAddress: .v4(Self.nat), natPorts: 61000...64999)
            var single = PassthroughForwarder(settings: settings, routes: fixture.publisher, reverseMap: NATReverseMap())
            var batched = PassthroughForwarder(settings: settings, routes: fixture.publisher, reverseMap: NATReverseMap())
            check(&single, &batched) { $0.counters.snapshot() }
        } else {
            let settings = ForwarderSettings(capacity: 4096)
            var single = DSRForwarder(settings: settings, routes: fixture.publisher)
            var batched = DSRForwarder(settings: settings, routes: fixture.publisher)
            check(&single, &batched) { $0.counters.snapshot() }
        }
    }

    @Test(arguments: [BalanceAlgorithm.maglev, .wrr])
    func dsrBatchesMatchFrameByFrame(balance: BalanceAlgorithm) {
        let fixture = RoutesFixture(balance: balance, count: 3)
        let settings = ForwarderSettings(capacity: 4096)
        var single = DSRForwarder(settings: settings, routes: fixture.publisher)
        var batched = DSRForwarder(settings: settings, routes: fixture.publisher)
        var rng = TestRandom(seed: 11)
        let flows = Self.randomFlows(300, &rng)
        single.beginBatch(now: second)
        batched.beginBatch(now: second)
        // SYNs; ACKs (established); data, with FINs and RSTs from some flows; new SYNs on the
        // closed tuples; data after a backend lost its MAC; data after the flows expired.
        _ = Self.compare(Self.clientRound(flows, flags: { _ in TCPHeader.syn }, rng: &rng),
                         single: &single, batched: &batched, rng: &rng)
        _ = Self.compare(Self.clientRound(flows, flags: { _ in TCPHeader.ack }, rng: &rng),
                         single: &single, batched: &batched, rng: &rng)
        _ = Self.compare(Self.clientRound(flows, flags: { i in
                             i % 17 == 0 ? TCPHeader.fin | TCPHeader.ack : i % 19 == 0 ? TCPHeader.rst : TCPHeader.ack
                         }, rng: &rng), single: &single, batched: &batched, rng: &rng)
        _ = Self.compare(Self.clientRound(flows, flags: { i in i % 17 == 0 ? TCPHeader.syn : TCPHeader.ack }, rng: &rng),
                         single: &single, batched: &batched, rng: &rng)
        var lost = fixture
        lost.macs.removeValue(forKey: RoutesFixture.backendAddress(2).address)
        lost.republish()
        single.beginBatch(now: 2 * second)
        batched.beginBatch(now: 2 * second)
        _ = Self.compare(Self.clientRound(flows, flags: { _ in TCPHeader.ack }, rng: &rng),
                         single: &single, batched: &batched, rng: &rng)
        single.beginBatch(now: 4000 * second)
        batched.beginBatch(now: 4000 * second)
        _ = Self.compare(Self.clientRound(flows, flags: { _ in TCPHeader.ack }, rng: &rng),
                         single: &single, batched: &batched, rng: &rng)
        #expect(single.counters.snapshot() == batched.counters.snapshot())
        #expect(single.flowCount == batched.flowCount)
        let stats = batched.counters.snapshot()
        #expect(stats.flowsCreated > 300 && stats.flowsEnded > 0, "closed tuples were placed afresh")
        #expect(stats.txPackets > 1300, "the rounds exercised the steady path")
    }

    @Test func passthroughBatchesMatchFrameByFrame() {
        let fixture = RoutesFixture(balance: .maglev, count: 3)
        let settings = ForwarderSettings(capacity: 4096, natAddress: .v4(Self.nat), natPorts: 61000...61999)
        var single = PassthroughForwarder(settings: settings, routes: fixture.publisher, reverseMap: NATReverseMap())
        var batched = PassthroughForwarder(settings: settings, routes: fixture.publisher, reverseMap: NATReverseMap())
        var rng = TestRandom(seed: 12)
        let flows = Self.randomFlows(300, &rng)
        single.beginBatch(now: second)
        batched.beginBatch(now: second)
        let syns = Self.compare(Self.clientRound(flows, flags: { _ in TCPHeader.syn }, rng: &rng),
                                single: &single, batched: &batched, rng: &rng)
        _ = Self.compare(Self.clientRound(flows, flags: { _ in TCPHeader.ack }, rng: &rng),
                         single: &single, batched: &batched, rng: &rng)
        // The backends' replies to what left (same NAT ports on both sides), mixed with the
        // clients' next segments, replies with a wrong source port, and replies to unused ports.
        var mixed = syns.filter { $0.count >= 54 && $0[12] == 0x08 && $0[26..<30] == [10, 77, 0, 2] }.map { out in
            let o = TestFrames.fields(out)
            return TestFrames.ipv4TCP(src: o.dst, dst: o.src, sport: o.dport, dport: o.sport,
                                      flags: TCPHeader.syn | TCPHeader.ack, srcMAC: RoutesFixture.backendMAC(1))
        }
        #expect(mixed.count == flows.count)
        mixed += mixed.prefix(20).map { r in var f = r; f[35] ^= 1; return f }
        mixed += mixed.prefix(5).map { SYNChecksumTests.unfinished($0) }  // a backend that offloads its checksums
        mixed += (0..<10).map { i in
            TestFrames.ipv4TCP(src: 0x0A4D_0015, dst: Self.nat, sport: 8080, dport: 61990 + UInt16(i), flags: TCPHeader.ack)
        }
        mixed += Self.clientRound(flows, flags: { i in i % 13 == 0 ? TCPHeader.rst : TCPHeader.ack }, rng: &rng)
        mixed.shuffle(using: &rng)
        _ = Self.compare(mixed, single: &single, batched: &batched, rng: &rng)
        _ = Self.compare(Self.clientRound(flows, flags: { _ in TCPHeader.ack }, rng: &rng),
                         single: &single, batched: &batched, rng: &rng)
        #expect(single.counters.snapshot() == batched.counters.snapshot())
        let stats = batched.counters.snapshot()
        #expect(stats.drops(.unknownReply) == 30, "20 spoofed source ports and 10 unused NAT ports")
        #expect(stats.drops(.unfinishedChecksum) == 5)
        #expect(stats.txPackets > 1200, "the rounds exercised the steady path and the replies")
        #expect(batched.flowCount == single.flowCount)
    }
}
