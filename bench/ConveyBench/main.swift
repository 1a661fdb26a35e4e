#if canImport(Glibc)
import Glibc
#endif

// ConveyBench: `swift run -c release ConveyBench [name-prefix ...]`.
// Prints a table on stdout, progress on stderr, and writes bench/results/latest.json.
// BENCH_QUICK=1 makes every benchmark brief; BENCH_RESULTS=<path> writes the JSON elsewhere.
// A filtered run writes only the rows it ran. Exit status 1 when a benchmark failed.

// `--packet-loop MODE FLOWS PACKETS`: one run of the packet path for bench/packet-callgrind.sh.
if CommandLine.arguments.count > 1, CommandLine.arguments[1] == "--packet-loop" {
    exit(PacketBenchmarks.loopMode(Array(CommandLine.arguments.dropFirst(2))))
}

let benchmarks: [Benchmark] = SchedulerBenchmarks.all + PacketBenchmarks.all + TakeoverBenchmarks.all + ProxyBenchmarks.all + XDPBenchmarks.all

#if DEBUG
Harness.progress("warning: a debug build; measure with `swift run -c release ConveyBench`")
#endif
let (results, failures) = Harness.run(benchmarks, filters: Array(CommandLine.arguments.dropFirst()))
print(Harness.table(results))
let path = Harness.resultsPath()
do {
    try Harness.write(Harness.json(results), to: path)
    Harness.progress("wrote \(path)")
} catch {
    Harness.progress("ConveyBench: \(error)")
    exit(1)
}
if failures > 0 {
    Harness.progress("ConveyBench: \(failures) benchmark(s) failed")
    exit(1)
}
