#if canImport(Glibc)
import Glibc
#endif

/// The AF_XDP data path in a namespace lab (`lab/lab.sh` through `bench/xsk/xdp-lab.sh`): a
/// live-frames XDP generator in the client offers TCP frames to the VIP, XDP sinks count what
/// arrives at the backends (or back at the client, for reflectors). Figures are delivered
/// Mpps; the script prints offered vs delivered on stderr, so a generator limit shows.
///
/// convey's AF_XDP modes run as `convey --dsr|--passthrough --iface veth0 --config <toml>`
/// in the lb namespace; until they are integrated those series fail with the reason and the
/// anchors (C reflector, in-kernel XDP forwarder, nftables, direct) are still reported.
enum XDPBenchmarks {
    static var all: [Benchmark] {
        [reflector(), packets(name: "dsr_mpps", mode: "convey-dsr", frame: 64, withForwarder: true),
         packets(name: "passthrough_mpps", mode: "convey-passthrough", frame: 64, withForwarder: false),
         packets(name: "dsr_mpps_1500b", mode: "convey-dsr", frame: 1514, withForwarder: true),
         tcp(name: "xdp_tcp_gbps_dsr", mode: "convey-dsr"),
         tcp(name: "xdp_tcp_gbps_passthrough", mode: "convey-passthrough")]
    }

    static let loadSeconds = Harness.quick ? 2 : 5
    static let repetitions = Harness.quick ? 1 : 5
    static var root: String { Harness.packageRoot() }
    static var script: String { root + "/bench/xsk/xdp-lab.sh" }

    /// `xsk_reflector_mpps`: the Swift `XSKReflect` against the C reflector, one queue, copy
    /// mode, 64-byte frames reflected back to the client's sink.
    static func reflector() -> Benchmark {
        lab(name: "xsk_reflector_mpps", unit: "Mpps", goals: [.atLeastTimes(0.95, of: "c_reflector")],
            main: "swift-reflector", kind: "packets", frame: 64,
            contenders: [("c_reflector", "c-reflector")])
    }

    /// `dsr_mpps` / `passthrough_mpps` (and `_1500b`): convey with one worker, counted at the
    /// backend sinks, beside the C reflector (the AF_XDP ceiling), nftables DNAT, and for DSR
    /// the in-kernel XDP forwarder (the XDP ceiling) and the direct path (the generator's
    /// delivery without a balancer).
    static func packets(name: String, mode: String, frame: Int, withForwarder: Bool) -> Benchmark {
        var contenders = [("c_reflector", "c-reflector"), ("nftables", "nft")]
        if withForwarder { contenders += [("xdp_fwd", "xdp-fwd"), ("direct", "direct")] }
        return lab(name: name, unit: "Mpps",
                   goals: [.atLeastTimes(0.9, of: "c_reflector"), .atLeastTimes(2, of: "nftables")],
                   main: mode, kind: "packets", frame: frame, contenders: contenders)
    }

    /// `xdp_tcp_gbps_<mode>`: iperf3 from the client to the VIP through convey, beside
    /// nftables DNAT (full NAT) and the direct path to the backend.
    static func tcp(name: String, mode: String) -> Benchmark {
        lab(name: name, unit: "Gbit/s", goals: [], main: mode, kind: "tcp", frame: 0,
            contenders: [("nftables", "nft"), ("direct", "direct")])
    }

    static func lab(name: String, unit: String, goals: [Goal], main: String, kind: String, frame: Int,
                    contenders: [(name: String, mode: String)]) -> Benchmark {
        let prefix = "cv\(getpid())x"
        let seconds = loadSeconds
        let script = self.script, root = self.root
        func series(_ mode: String) -> () throws -> Double {
            {
                var arguments = [script, kind, prefix, mode, String(seconds)]
                if kind == "packets" { arguments.append(String(frame)) }
                return try External.sample(arguments, timeout: seconds + 60)
            }
        }
        return Benchmark(
            name: name, unit: unit, repetitions: repetitions, goals: goals,
            contenders: contenders.map { Contender(name: $0.name, sample: series($0.mode)) },
            warmUp: false, secondsPerSample: Double(seconds) + 3,
            setUp: {
                try External.requireRoot(name)
                _ = try External.run([root + "/bench/build-tools.sh"], timeout: 120)
                Harness.progress("  building the lab \(prefix) (client, lb, 3 backends)")
                do {
                    _ = try External.run([script, "up", prefix], timeout: 120)
                } catch {
                    External.runIgnoringFailure([script, "down", prefix], timeout: 60)
                    throw error
                }
            },
            tearDown: { External.runIgnoringFailure([script, "down", prefix], timeout: 60) },
            sample: series(main))
    }
}
