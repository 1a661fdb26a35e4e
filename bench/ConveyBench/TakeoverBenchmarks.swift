#if canImport(Glibc)
import Glibc
#endif
import Balancer
import XSK

/// The CPU a takeover of an AF_XDP worker costs while the running convey is paused, apart
/// from the kernel's part: the running convey exports its forwarder's flows and free NAT
/// ports and writes the hand-over document (`WorkerDocument`) into a memfd; the next one reads it and
/// enters the flows into its own table, made beforehand (`importFlows`). Frames arriving
/// meanwhile wait in the worker's RX ring (4096 by default) and beyond that are dropped, so
/// this figure bounds how long a takeover of a full table pauses forwarding.
///
/// The tables are the packet benchmarks': passthrough with the 64 512 flows one NAT address
/// carries, DSR with 1 000 000, both in tables of capacity 1 000 000.
enum TakeoverBenchmarks {
    static var all: [Benchmark] { [handover(.passthrough), handover(.dsr)] }

    static func handover(_ mode: PacketBenchmarks.Mode) -> Benchmark {
        var setup: PacketBenchmarks.Setup?
        let name = "takeover_handover_ms_" + mode.rawValue
        let flows = Harness.quick ? min(mode.flows, 65_536) : mode.flows
        return Benchmark(name: name, unit: "ms", repetitions: Harness.quick ? 3 : 7,
                         setUp: { setup = PacketBenchmarks.Setup(mode: mode, flows: flows) },
                         tearDown: { setup = nil }) {
            guard let s = setup else { throw BenchError.failed(benchmark: name, reason: "no setup") }
            // The next convey's forwarder is made before the pause (its table allocated).
            var next: any FlowCarrying = s.dsr != nil
                ? DSRForwarder(settings: s.settings, routes: s.publisher)
                : PassthroughForwarder(settings: s.settings, routes: s.publisher, reverseMap: NATReverseMap())
            let running: any FlowCarrying = s.dsr ?? s.passthrough!
            // A worker's frames: half of 8192 free, as under load.
            let worker = XSKWorkerHandover(queue: 0, frameCount: 8192, frameSize: 2048, fillSize: 4096, completionSize: 4096,
                                           rxSize: 4096, txSize: 4096, freeFrames: (0..<4096).map { UInt64($0 * 2 * 2048) },
                                           txOutstanding: 0)
            var carried = FlowImportResult()
            var failure: String?
            let seconds = Measure.cpuSeconds {
                // The running convey, its worker stopped.
                do {
                    let memfd = try WorkerDocument.write(worker, running.exportHandover())
                    defer { close(memfd) }
                    // The next convey.
                    let (_, forwarder) = try WorkerDocument.decode(WorkerDocument.read(memfd: memfd))
                    carried = next.importFlows(forwarder, now: 2_000_000_000)
                } catch {
                    failure = "\(error)"
                }
            }
            if let failure { throw BenchError.failed(benchmark: name, reason: "the document does not read back: \(failure)") }
            // Bounded probing may refuse a rare flow in another table's order (about 1 in 10^6).
            guard carried.imported > s.flowsHeld - s.flowsHeld / 10_000, carried.leftOut == carried.tableFull else {
                throw BenchError.failed(benchmark: name, reason: "\(carried.imported) of \(s.flowsHeld) flows carried (\(carried))")
            }
            return seconds * 1000
        }
    }
}
