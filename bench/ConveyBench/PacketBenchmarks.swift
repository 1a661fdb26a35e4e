import Balancer
import XSK
#if canImport(Glibc)
import Glibc
#endif

/// Benchmarks of the AF_XDP packet path in userspace: parse, flow lookup, rewrite and checksum
/// update per frame, on frames in memory (no socket), with a full flow table.
///
/// - DSR: 1 000 000 established flows in a table of capacity 1 000 000.
/// - Passthrough: as many established flows as one NAT address has ports (1024–65535: 64 512),
///   in a table of capacity 1 000 000 — a NAT address cannot carry more flows at once.
/// - Reply: the same passthrough flows, the frames being the backends' ACKs to the NAT address
///   (checked against, and rewritten from, the shared reverse map).
///
/// Each sample sends `packets` frames, each an ACK of a random established flow (a 60-byte
/// frame), so flow-table reads miss the cache as they would under real load. Passthrough
/// rewrites addresses, so each frame is restored from its pristine template (64 bytes) 256
/// frames ahead of its turn (`packet_frame_copy_ns` measures that copy alone, which the
/// passthrough rows include); DSR's rewrite is idempotent and runs in place.
enum PacketBenchmarks {
    static var all: [Benchmark] {
        [cost(.passthrough), cost(.dsr), cost(.reply), cost(.passthrough, hot: true), cost(.dsr, hot: true),
         allocations(.passthrough), allocations(.dsr), allocations(.reply), frameCopy()]
    }

    /// `reply`: passthrough, the backends' replies to the NAT address (the reverse map's path).
    enum Mode: String {
        case dsr, passthrough, reply
        var flows: Int { self == .dsr ? 1_000_000 : 64_512 }
    }

    /// A forwarder with its table filled and a ring of established-flow frames.
    final class Setup {
        var dsr: DSRForwarder?
        var passthrough: PassthroughForwarder?
        /// `frameCount` frames of `frameSize` bytes, back to back.
        let frames: UnsafeMutableRawPointer
        let templates: UnsafeMutableRawPointer
        static let frameSize = 64
        static let frameCount = 1 << 16
        let publisher: PacketRoutesPublisher
        let runtime: BalancerRuntime
        /// The forwarder's settings (a takeover's next forwarder is made alike).
        let settings: ForwarderSettings
        /// Flows actually in the table.
        var flowsHeld = 0
        /// One batch's frames and verdicts (allocated once: the loop allocates nothing).
        let batchFrames = UnsafeMutablePointer<PacketFrame>.allocate(capacity: PacketBenchmarks.batch)
        let batchVerdicts = UnsafeMutablePointer<PacketVerdict>.allocate(capacity: PacketBenchmarks.batch)

        init(mode: Mode, flows: Int) {
            let vip = Endpoint(address: .v4(0x0A4D_0064), port: 80)
            let servers = (1...8).map { i in
                ServerConfig(name: "s\(i)", address: Endpoint(address: .v4(0x0A4D_0014 + UInt32(i)), port: 8080))
            }
            let config = ConveyConfig(frontends: [FrontendConfig(name: "web", listen: vip, pool: "pool", balance: .maglev)],
                                      pools: [PoolConfig(name: "pool", servers: servers)])
            runtime = BalancerRuntime(config: config)
            publisher = PacketRoutesPublisher()
            var macs: [IPAddress: MACAddress] = [:]
            for (i, s) in servers.enumerated() { macs[s.address.address] = MACAddress(rawValue: 0x0200_0000_0020 + UInt64(i)) }
            publisher.publish(snapshot: runtime.snapshots.load().value, backendMACs: macs,
                              interfaceMAC: MACAddress(rawValue: 0x0200_0000_0002))
            settings = ForwarderSettings(capacity: 1_000_000, natAddress: .v4(0x0A4D_0002), natPorts: 1024...65535)
            frames = .allocate(byteCount: Self.frameSize * Self.frameCount, alignment: 64)
            templates = .allocate(byteCount: Self.frameSize * Self.frameCount, alignment: 64)
            let now: UInt64 = 1_000_000_000
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.frameSize, alignment: 64)
            defer { scratch.deallocate() }
            func client(_ n: Int) -> (UInt32, UInt16) { (0x0B00_0000 | UInt32(n >> 4), UInt16(10_000 + n & 15)) }
            func send(_ n: Int, flags: UInt8, into handle: (UnsafeMutableRawBufferPointer) -> Void) {
                let (addr, port) = client(n)
                Self.writeFrame(scratch.baseAddress!, client: addr, port: port, flags: flags)
                handle(UnsafeMutableRawBufferPointer(start: scratch.baseAddress, count: 60))
            }
            // Bounded probing may refuse a rare SYN (about 1 in 10^6 at this load): the ring
            // only uses flows that were created, and `flowsHeld` reports how many.
            var created = [Bool](repeating: false, count: flows)
            /// Passthrough: each flow's backend address and NAT port, read from its SYN as it left.
            var replyTo = [(backend: UInt32, natPort: UInt16)](repeating: (0, 0), count: flows)
            switch mode {
            case .dsr:
                var f = DSRForwarder(settings: settings, routes: publisher)
                f.beginBatch(now: now)
                for n in 0..<flows {
                    send(n, flags: 0x02) { created[n] = f.handle($0) == .transmit }
                    send(n, flags: 0x10) { _ = f.handle($0) }
                }
                dsr = f
            case .passthrough, .reply:
                var f = PassthroughForwarder(settings: settings, routes: publisher, reverseMap: NATReverseMap())
                f.beginBatch(now: now)
                for n in 0..<flows {
                    send(n, flags: 0x02) { frame in
                        created[n] = f.handle(frame) == .transmit
                        let out = frame.baseAddress!
                        replyTo[n] = (IPv4Header(out + 14).destination, TCPHeader(out + 34).sourcePort)
                    }
                    send(n, flags: 0x10) { _ = f.handle($0) }
                }
                passthrough = f
            }
            flowsHeld = created.reduce(0) { $0 + ($1 ? 1 : 0) }
            precondition(flowsHeld > flows - flows / 1000, "only \(flowsHeld) of \(flows) flows were created")
            // The ring: ACKs of random established flows.
            var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
            for i in 0..<Self.frameCount {
                var n = 0
                repeat {
                    seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17
                    n = Int(seed % UInt64(flows))
                } while !created[n]
                let (addr, port) = client(n)
                if mode == .reply {
                    Self.writeFrame(templates + i * Self.frameSize, source: replyTo[n].backend, sourcePort: 8080,
                                    destination: 0x0A4D_0002, destinationPort: replyTo[n].natPort, flags: 0x10)
                } else {
                    Self.writeFrame(templates + i * Self.frameSize, client: addr, port: port, flags: 0x10)
                }
            }
            frames.copyMemory(from: templates, byteCount: Self.frameSize * Self.frameCount)
        }

        deinit {
            frames.deallocate()
            templates.deallocate()
            batchFrames.deallocate()
            batchVerdicts.deallocate()
        }

        /// A 60-byte Ethernet/IPv4/TCP ACK from `client:port` to the VIP, checksums valid.
        static func writeFrame(_ p: UnsafeMutableRawPointer, client: UInt32, port: UInt16, flags: UInt8) {
            writeFrame(p, source: client, sourcePort: port, destination: 0x0A4D_0064, destinationPort: 80, flags: flags)
        }

        /// A 60-byte Ethernet/IPv4/TCP segment, checksums valid.
        static func writeFrame(_ p: UnsafeMutableRawPointer, source: UInt32, sourcePort: UInt16, destination: UInt32,
                               destinationPort: UInt16, flags: UInt8) {
            var bytes: [UInt8] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x10, 0x08, 0x00,
                                  0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]
            func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
            func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
            bytes += be32(source) + be32(destination)
            bytes += be16(sourcePort) + be16(destinationPort) + be32(1000) + be32(2000) + [0x50, flags, 0xff, 0xff, 0, 0, 0, 0]
            bytes += [UInt8](repeating: 0, count: 64 - bytes.count)
            bytes.withUnsafeMutableBytes { raw in
                let frame = raw.baseAddress!
                let ip = IPv4Header(frame + 14)
                ip.checksum = ip.computedChecksum()
                let pseudo = Checksum.words(source) &+ Checksum.words(destination) &+ 6 &+ 20
                let tcpSum = Checksum.sum(UnsafeRawBufferPointer(start: frame + 34, count: 20), initial: pseudo)
                TCPHeader(frame + 34).checksum = Checksum.finish(tcpSum)
            }
            bytes.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: 64) }
        }
    }

    /// Frames per batch, as an XSK worker hands them over (`XSKWorker.batchSize`).
    static let batch = 64

    /// Runs `packets` frames of the ring through the forwarder, a batch at a time through the
    /// same `handle(batch:verdicts:)` the worker calls. Not inlined, so callgrind and readers
    /// can find it.
    @inline(never)
    static func runPackets(_ setup: Setup, packets: Int) -> Int {
        if var f = setup.dsr {
            let sent = run(&f, setup, packets: packets, restoring: false)
            setup.dsr = f
            return sent
        }
        if var f = setup.passthrough {
            let sent = run(&f, setup, packets: packets, restoring: true)
            setup.passthrough = f
            return sent
        }
        return 0
    }

    /// The batch loop. NAT rewrites the frame, so with `restoring` each frame is restored from
    /// its template `ahead` frames before its turn, as a NIC's DMA would have written it long
    /// before: restoring it just before `handle` would make the handler's loads wait on the
    /// copy's stores (store-to-load forwarding fails across them), a cost no real frame has.
    /// DSR's rewrite is idempotent and runs in place.
    @inline(__always)
    static func run<H: PacketHandler>(_ f: inout H, _ setup: Setup, packets: Int, restoring: Bool) -> Int {
        let mask = Setup.frameCount - 1
        let ahead = 256
        let frames = setup.batchFrames
        let verdicts = setup.batchVerdicts
        var sent = 0
        f.beginBatch(now: 2_000_000_000)
        if restoring { setup.frames.copyMemory(from: setup.templates, byteCount: ahead * Setup.frameSize) }
        var n = 0
        while n < packets {
            let count = min(packets - n, batch)
            for k in 0..<count {
                let frame = (n &+ k) & mask
                if restoring {
                    let next = ((frame &+ ahead) & mask) * Setup.frameSize
                    (setup.frames + next).copyMemory(from: setup.templates + next, byteCount: 64)
                }
                frames[k] = PacketFrame(base: setup.frames + frame * Setup.frameSize, length: 60)
            }
            f.handle(batch: UnsafeBufferPointer(start: frames, count: count), verdicts: verdicts)
            for k in 0..<count where verdicts[k] == .transmit { sent &+= 1 }
            n &+= count
        }
        return sent
    }

    /// The frame copy the passthrough loop does before each packet, alone.
    @inline(never)
    static func runCopies(_ setup: Setup, packets: Int) -> Int {
        let mask = Setup.frameCount - 1
        var sum = 0
        for n in 0..<packets {
            let offset = (n & mask) * Setup.frameSize
            let p = setup.frames + offset
            p.copyMemory(from: setup.templates + offset, byteCount: 64)
            sum &+= Int(p.load(fromByteOffset: 30, as: UInt8.self))
        }
        return sum
    }

    /// `AnonHugePages` of this process (`/proc/self/smaps_rollup`), MiB; nil where unreadable.
    static func anonHugePagesMiB() -> Int? {
        guard let f = fopen("/proc/self/smaps_rollup", "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), f) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if text.hasPrefix("AnonHugePages:"), let kB = Int(text.split(separator: " ", omittingEmptySubsequences: true)[1]) {
                return kB / 1024
            }
        }
        return nil
    }

    static func name(_ mode: Mode) -> String {
        switch mode {
        case .passthrough: return "rewrite"
        case .reply: return "rewrite_reply"
        case .dsr: return "dsr"
        }
    }

    /// `rewrite_ns_per_packet` (passthrough) and `dsr_ns_per_packet`; with `hot`,
    /// `..._hot_ns_per_packet`: the same over 4096 flows, whose entries stay in cache — the
    /// path's compute cost without the DRAM miss a random flow of a big table costs.
    static func cost(_ mode: Mode, hot: Bool = false) -> Benchmark {
        var setup: Setup?
        let packets = Harness.quick ? 1_000_000 : 10_000_000
        let name = name(mode) + (hot ? "_hot" : "") + "_ns_per_packet"
        return Benchmark(name: name, unit: "ns/packet", repetitions: Harness.quick ? 3 : 9, goal: .atMost(25),
                         setUp: {
                             setup = Setup(mode: mode, flows: hot ? 4096 : mode.flows)
                             // The big table's cost depends on its TLB reach: say how much of
                             // the process's anonymous memory got huge pages this time.
                             if let huge = anonHugePagesMiB() { Harness.progress("  \(name): \(huge) MiB of anonymous memory in huge pages") }
                         },
                         tearDown: { setup = nil }) {
            guard let s = setup else { throw BenchError.failed(benchmark: name, reason: "no setup") }
            var sent = 0
            let seconds = Measure.cpuSeconds { sent = runPackets(s, packets: packets) }
            guard sent == packets else {
                throw BenchError.failed(benchmark: name, reason: "\(packets - sent) of \(packets) frames dropped")
            }
            return seconds * 1e9 / Double(packets)
        }
    }

    /// `rewrite_allocs_per_packet` and `dsr_allocs_per_packet` (must be 0).
    static func allocations(_ mode: Mode) -> Benchmark {
        var setup: Setup?
        let packets = 1_000_000
        let name = name(mode) + "_allocs_per_packet"
        return Benchmark(name: name, unit: "allocs/packet", repetitions: 3, goal: .atMost(0),
                         setUp: {
                             guard Measure.allocationCounterWorks() else {
                                 throw BenchError.failed(benchmark: name, reason: "the counting allocator is not in place")
                             }
                             setup = Setup(mode: mode, flows: Harness.quick ? min(65_536, mode.flows) : mode.flows)
                         },
                         tearDown: { setup = nil }) {
            guard let s = setup else { throw BenchError.failed(benchmark: name, reason: "no setup") }
            var sent = 0
            let count = Measure.allocations { sent = runPackets(s, packets: packets) }
            guard sent == packets else {
                throw BenchError.failed(benchmark: name, reason: "\(packets - sent) of \(packets) frames dropped")
            }
            return Double(count) / Double(packets)
        }
    }

    /// `packet_frame_copy_ns`: the 64-byte template copy included in `rewrite_ns_per_packet`.
    static func frameCopy() -> Benchmark {
        var setup: Setup?
        let packets = Harness.quick ? 1_000_000 : 10_000_000
        return Benchmark(name: "packet_frame_copy_ns", unit: "ns/packet", repetitions: Harness.quick ? 3 : 9,
                         setUp: { setup = Setup(mode: .passthrough, flows: 1024) },
                         tearDown: { setup = nil }) {
            guard let s = setup else { throw BenchError.failed(benchmark: "packet_frame_copy_ns", reason: "no setup") }
            var sum = 0
            let seconds = Measure.cpuSeconds { sum = runCopies(s, packets: packets) }
            blackHole(sum)
            return seconds * 1e9 / Double(packets)
        }
    }

    /// `ConveyBench --packet-loop MODE FLOWS PACKETS`: sets up, runs PACKETS frames once, and
    /// exits; `bench/packet-callgrind.sh` runs it under callgrind with two packet counts and
    /// divides the difference in instructions by the difference in packets.
    static func loopMode(_ arguments: [String]) -> Int32 {
        guard arguments.count == 3, let mode = Mode(rawValue: arguments[0]), let flows = Int(arguments[1]),
              let packets = Int(arguments[2]), flows > 0, packets >= 0 else {
            Harness.progress("usage: ConveyBench --packet-loop dsr|passthrough|reply FLOWS PACKETS")
            return 2
        }
        // Passthrough holds at most one NAT address's ports of flows.
        let setup = Setup(mode: mode, flows: min(flows, mode.flows))
        let sent = runPackets(setup, packets: packets)
        guard sent == packets else {
            Harness.progress("packet loop: \(packets - sent) of \(packets) frames dropped")
            return 1
        }
        return 0
    }
}
