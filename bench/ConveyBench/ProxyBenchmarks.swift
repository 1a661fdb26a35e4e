#if canImport(Glibc)
import Glibc
#endif

/// Proxy mode against HAProxy, nginx stream and a direct connection, on loopback in one
/// network namespace (`bench/proxy/proxy-lab.sh`), all proxies with 2 threads, sampled
/// alternately in the same run so every figure sees the same machine.
enum ProxyBenchmarks {
    static var all: [Benchmark] { [throughput(), connectionRate(), limitedConnectionRate()] }

    /// Seconds one sample runs its load.
    static let loadSeconds = Harness.quick ? 2 : 5
    static let repetitions = Harness.quick ? 1 : 5

    /// `proxy_gbps`: iperf3 (4 streams) through the proxy to an iperf3 server, Gbit/s.
    static func throughput() -> Benchmark {
        benchmark(name: "proxy_gbps", unit: "Gbit/s", kind: "bulk", goal: 1.2)
    }

    /// `proxy_conn_per_s`: new connections per second (connect, 16-byte request, 64-byte
    /// reply, server closes) by `bench/tools/cps` (4 threads) through the proxy to `rrserver`.
    static func connectionRate() -> Benchmark {
        benchmark(name: "proxy_conn_per_s", unit: "conn/s", kind: "cps", goal: 1.0)
    }

    /// `proxy_conn_per_s_server_limit`: the same with 16 client threads through a server
    /// limited to 8 connections at once (convey's `max_connections`, HAProxy's server
    /// `maxconn`; each queues the rest). nginx is left out: its open-source stream module
    /// refuses past `max_conns` rather than queue.
    static func limitedConnectionRate() -> Benchmark {
        benchmark(name: "proxy_conn_per_s_server_limit", unit: "conn/s", kind: "cps-limited", goal: 1.0,
                  contenders: ["haproxy"])
    }

    static func benchmark(name: String, unit: String, kind: String, goal: Double,
                          contenders: [String] = ["haproxy", "nginx", "direct"]) -> Benchmark {
        let root = Harness.packageRoot()
        let script = root + "/bench/proxy/proxy-lab.sh"
        let prefix = "cv\(getpid())\(kind)"
        let seconds = loadSeconds
        func series(_ target: String) -> () throws -> Double {
            { try External.sample([script, kind, prefix, target, String(seconds)], timeout: seconds + 40) }
        }
        return Benchmark(
            name: name, unit: unit, repetitions: repetitions,
            goals: [.atLeastTimes(goal, of: "haproxy")],
            contenders: contenders.map { Contender(name: $0, sample: series($0)) },
            warmUp: false, secondsPerSample: Double(seconds) + 1,
            setUp: {
                try External.requireRoot(name)
                _ = try External.run([root + "/bench/build-tools.sh"], timeout: 120)
                let convey = root + "/.build/release/convey"
                guard access(convey, X_OK) == 0 else {
                    throw BenchError.failed(benchmark: name, reason: "\(convey) is missing: swift build -c release --product convey")
                }
                Harness.progress("  starting the proxy lab \(prefix)-px (convey, haproxy, nginx, iperf3 -s, rrserver)")
                do {
                    _ = try External.run([script, "up", prefix, convey], timeout: 90)
                } catch {
                    External.runIgnoringFailure([script, "down", prefix], timeout: 30)
                    throw error
                }
            },
            tearDown: { External.runIgnoringFailure([script, "down", prefix], timeout: 30) },
            sample: series("convey"))
    }
}
