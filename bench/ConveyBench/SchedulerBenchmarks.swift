import Balancer

/// Benchmarks of `Balancer/Schedulers`: Maglev table build and the per-connection `pick`.
///
/// All are single-threaded and CPU-bound, so they are timed in thread CPU time
/// (`Measure.cpuSeconds`): the figure stays meaningful while other work shares the machine.
enum SchedulerBenchmarks {
    static var all: [Benchmark] {
        var list = [maglevBuild()]
        for algorithm in [BalanceAlgorithm.wrr, .maglev, .leastconn, .source] {
            list.append(pickCost(algorithm))
        }
        for algorithm in [BalanceAlgorithm.wrr, .maglev, .leastconn, .source] {
            list.append(pickAllocations(algorithm))
        }
        return list
    }

    /// Servers in the pools the pick benchmarks use (a mid-sized pool; leastconn is O(n)).
    static let poolSize = 16

    /// `maglev_build_ms_n1000`: building the table for 1000 servers of weight 1, M = 65537.
    static func maglevBuild() -> Benchmark {
        let backends = (0..<1000).map { i in ("10.77.\(i / 250 + 1).\(i % 250 + 1):80", 1) }
        return Benchmark(name: "maglev_build_ms_n1000", unit: "ms", repetitions: Harness.quick ? 5 : 21,
                         goal: .below(5)) {
            var table: MaglevTable?
            let seconds = Measure.cpuSeconds { table = MaglevTable(backends: backends, size: 65_537) }
            blackHole(table)
            return seconds * 1e3
        }
    }

    /// `scheduler_pick_ns_<algorithm>`: nanoseconds per `Scheduler.pick` over distinct flows.
    static func pickCost(_ algorithm: BalanceAlgorithm) -> Benchmark {
        let route = makeRoute(algorithm)
        let flows = makeFlows()
        let picks = Harness.quick ? 200_000 : 2_000_000
        return Benchmark(name: "scheduler_pick_ns_\(algorithm.rawValue)", unit: "ns/pick",
                         repetitions: Harness.quick ? 5 : 15) {
            // A local (not captured) scheduler: a captured var would add exclusivity checks.
            var scheduler = Scheduler(route: route)
            var sum = 0
            let seconds = Measure.cpuSeconds {
                for n in 0..<picks {
                    sum &+= scheduler.pick(for: flows[n & (flows.count - 1)], in: route) ?? -1
                }
            }
            blackHole(sum)
            return seconds * 1e9 / Double(picks)
        }
    }

    /// `scheduler_pick_allocs_<algorithm>`: heap allocations per `Scheduler.pick` (must be 0).
    static func pickAllocations(_ algorithm: BalanceAlgorithm) -> Benchmark {
        let route = makeRoute(algorithm)
        let flows = makeFlows()
        let picks = Harness.quick ? 20_000 : 200_000
        let name = "scheduler_pick_allocs_\(algorithm.rawValue)"
        return Benchmark(name: name, unit: "allocs/pick", repetitions: Harness.quick ? 3 : 5, goal: .atMost(0),
                         setUp: {
                             guard Measure.allocationCounterWorks() else {
                                 throw BenchError.failed(benchmark: name, reason: "the counting allocator is not in place")
                             }
                         }) {
            var scheduler = Scheduler(route: route)
            var sum = 0
            let allocations = Measure.allocations {
                for n in 0..<picks {
                    sum &+= scheduler.pick(for: flows[n & (flows.count - 1)], in: route) ?? -1
                }
            }
            blackHole(sum)
            return Double(allocations) / Double(picks)
        }
    }

    /// A route as the runtime builds it: `poolSize` servers of weights 1...4, all up, with
    /// some open connections, and the Maglev table for the hashing algorithms.
    static func makeRoute(_ algorithm: BalanceAlgorithm) -> FrontendRoute {
        let servers = (0..<poolSize).map { i in
            let counters = ServerCounters()
            for _ in 0..<(i * 7 % 5) { counters.connectionOpened() }
            return ServerRoute(id: ServerID(pool: "bench", name: "s\(i)"),
                               address: Endpoint(address: .v4(0x0A4D_0100 + UInt32(i + 1)), port: 80),
                               weight: i % 4 + 1, state: .up, counters: counters)
        }
        let selectable = Array(servers.indices)
        let hashing = algorithm == .maglev || algorithm == .source
        let table = hashing
            ? MaglevTable(backends: selectable.map { (servers[$0].address.description, servers[$0].weight) })
            : nil
        let vip = Endpoint(address: .v4(0x0A4D_0064), port: 80)
        return FrontendRoute(config: FrontendConfig(name: "bench", listen: vip, pool: "bench", balance: algorithm),
                             pool: PoolConfig(name: "bench", servers: []), servers: servers,
                             selectable: selectable, maglev: table, counters: FrontendCounters())
    }

    /// 4096 distinct connections (a power of two, so the loop indexes by mask).
    static func makeFlows() -> [FlowKey] {
        let vip = Endpoint(address: .v4(0x0A4D_0064), port: 80)
        return (0..<4096).map { i in
            FlowKey(client: Endpoint(address: .v4(0x0A4D_0000 | UInt32(i % 509 + 2)), port: UInt16(32768 + i)),
                    vip: vip)
        }
    }
}
