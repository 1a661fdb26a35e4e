#if canImport(Glibc)
import Glibc
#endif

/// One named measurement: `sample()` runs the workload once and returns one value in `unit`;
/// the harness repeats it and reports the median and the spread.
///
/// Add a benchmark by building one of these in a `...Benchmarks.swift` file and listing it in
/// `main.swift`. Keep setup out of `sample` so only the workload is measured: cheap setup may
/// happen when the benchmark is built; costly or privileged setup (a namespace lab, a
/// traffic generator) belongs in `setUp`, which runs only when the benchmark is chosen, with
/// `tearDown` run afterwards whatever happened. `setUp` throws `BenchError.skipped` when the
/// benchmark cannot run here (no root, no XDP), which skips it with the reason on stderr.
///
/// Reference figures measured in the same run are `contenders`: the harness samples the
/// benchmark and each contender alternately (rotating who goes first), so a slow phase of a
/// shared machine hits all of them alike. The first contender is the anchor of the main row;
/// every contender also gets a row of its own, named `<name>_<contender>`.
struct Benchmark {
    var name: String
    var unit: String
    /// Samples taken per series (after one unrecorded warm-up run when `warmUp`).
    var repetitions: Int
    /// A reference figure measured elsewhere (e.g. earlier, by hand), with its name; nil when
    /// there is none. A first contender, measured in this run, takes precedence.
    var anchor: (name: String, value: Double)? = nil
    /// What the median should achieve; shown in the table as met or MISSED.
    var goal: Goal? = nil
    /// Further goals (e.g. against two contenders); `goal` and these are all checked.
    var goals: [Goal] = []
    /// Reference series measured in the same run, alternately with `sample`; the first is the
    /// anchor.
    var contenders: [Contender] = []
    /// One unrecorded run of each series first (off for long external samples that ramp up
    /// by themselves).
    var warmUp: Bool = true
    /// Rough seconds one sample of one series takes, for the time-left estimate (0: unknown).
    var secondsPerSample: Double = 0
    var setUp: () throws -> Void = {}
    var tearDown: () -> Void = {}
    var sample: () throws -> Double

    /// `goal` and `goals` together.
    var allGoals: [Goal] { (goal.map { [$0] } ?? []) + goals }

    /// Samples the harness will take, warm-ups included, for the time-left estimate.
    var plannedSamples: Int { (repetitions + (warmUp ? 1 : 0)) * (1 + contenders.count) }
}

/// A reference series sampled alternately with a benchmark (e.g. HAProxy beside convey).
struct Contender {
    /// Short name; the row is `<benchmark>_<name>`.
    var name: String
    var sample: () throws -> Double
}

/// A target for a benchmark's median.
enum Goal {
    /// Strictly under the bound (e.g. a time budget).
    case below(Double)
    /// At most the bound (e.g. 0 allocations).
    case atMost(Double)
    /// At least `factor` times the median of the contender named (higher is better:
    /// throughput against a reference measured in the same run).
    case atLeastTimes(Double, of: String)

    /// Whether `result` meets the goal; nil when it cannot tell (the contender failed).
    func isMet(by result: BenchmarkResult) -> Bool? {
        switch self {
        case .below(let bound): return result.median < bound
        case .atMost(let bound): return result.median <= bound
        case .atLeastTimes(let factor, let contender):
            guard let reference = result.contenderMedians[contender], reference > 0 else { return nil }
            return result.median >= factor * reference
        }
    }

    var description: String {
        switch self {
        case .below(let bound): return "< " + Harness.format(bound)
        case .atMost(let bound): return "<= " + Harness.format(bound)
        case .atLeastTimes(let factor, let contender): return ">= " + Harness.format(factor) + "x " + contender
        }
    }
}

/// What a benchmark measured.
struct BenchmarkResult {
    var name: String
    var unit: String
    var samples: [Double]
    var anchor: (name: String, value: Double)?
    /// The anchor's own spread in percent when it was measured in this run.
    var anchorSpreadPercent: Double? = nil
    var goals: [Goal] = []
    /// Medians of the contenders measured beside this benchmark, by name.
    var contenderMedians: [String: Double] = [:]

    var sorted: [Double] { samples.sorted() }
    var median: Double {
        let s = sorted
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    var minimum: Double { sorted.first ?? .nan }
    var maximum: Double { sorted.last ?? .nan }
    /// (max - min) / median, in percent: how much to trust the median. 0 when the median is 0.
    var spreadPercent: Double { median == 0 ? 0 : (maximum - minimum) / median * 100 }
    var ratio: Double? { anchor.map { $0.value == 0 ? .nan : median / $0.value } }
}

/// Runs benchmarks, prints the table on stdout, progress on stderr, and writes the JSON rows.
enum Harness {
    /// `BENCH_QUICK=1`: fewer repetitions and smaller workloads, for a smoke run.
    static let quick: Bool = {
        guard let value = getenv("BENCH_QUICK") else { return false }
        let text = String(cString: value)
        return !text.isEmpty && text != "0"
    }()

    /// Writes a progress line to stderr.
    static func progress(_ message: String) {
        var line = message + "\n"
        line.withUTF8 { _ = Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    /// Runs `benchmarks` whose name starts with one of `filters` (all when empty). A benchmark
    /// that fails is reported on stderr and left out of the results; the others still run.
    /// When only the main series fails, its contenders' rows are still kept (the anchors were
    /// measured) and the benchmark counts as failed.
    static func run(_ benchmarks: [Benchmark], filters: [String]) -> (results: [BenchmarkResult], failures: Int) {
        let chosen = benchmarks.filter { b in filters.isEmpty || filters.contains { b.name.hasPrefix($0) } }
        var results: [BenchmarkResult] = []
        var failures = 0
        let clock = ContinuousClock()
        let start = clock.now
        for (n, benchmark) in chosen.enumerated() {
            let left = chosen[n...].reduce(0.0) { $0 + $1.secondsPerSample * Double($1.plannedSamples) }
            let series = benchmark.contenders.isEmpty ? "" : " (alternating with " + benchmark.contenders.map(\.name).joined(separator: ", ") + ")"
            progress("[\(n + 1)/\(chosen.count)] \(benchmark.name)\(series): "
                     + (benchmark.warmUp ? "warm-up + " : "") + "\(benchmark.repetitions) runs"
                     + (left > 0 ? ", about \(Int(left.rounded())) s left in the bench" : "")
                     + ", \(Int(seconds(clock.now - start))) s elapsed")
            do {
                let measured = try measure(benchmark)
                results.append(contentsOf: measured.rows)
                if let error = measured.mainError {
                    progress("  FAILED: \(error)")
                    failures += 1
                }
            } catch BenchError.skipped(let reason) {
                progress("  skipped: \(reason)")
            } catch {
                progress("  FAILED: \(error)")
                failures += 1
            }
        }
        return (results, failures)
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
    }

    /// Measures `benchmark` and its contenders, alternating. Returns the rows measured (the
    /// main row first when it succeeded) and the error that stopped the main series, if any.
    /// A series that throws stops; the others go on.
    static func measure(_ benchmark: Benchmark) throws -> (rows: [BenchmarkResult], mainError: Error?) {
        try benchmark.setUp()
        defer { benchmark.tearDown() }
        let names = [benchmark.name] + benchmark.contenders.map(\.name)
        let samplers = [benchmark.sample] + benchmark.contenders.map(\.sample)
        var samples = [[Double]](repeating: [], count: samplers.count)
        var errors = [Error?](repeating: nil, count: samplers.count)
        let clock = ContinuousClock()
        let rounds = benchmark.repetitions + (benchmark.warmUp ? 1 : 0)
        for round in 0..<rounds {
            let recorded = !benchmark.warmUp || round > 0
            for k in 0..<samplers.count {
                let s = (k + round) % samplers.count  // rotate who goes first
                guard errors[s] == nil else { continue }
                let began = clock.now
                let verbose = samplers.count > 1 || benchmark.secondsPerSample >= 1
                let label = names[s] + (recorded ? " run \(samples[s].count + 1)/\(benchmark.repetitions)" : " warm-up")
                // Announced first: an external sample's own diagnostics (CPU per process,
                // offered vs delivered) follow on stderr and belong to it.
                if verbose { progress("  \(label)...") }
                do {
                    let value = try samplers[s]()
                    if recorded { samples[s].append(value) }
                    if verbose {
                        progress("  \(label): \(format(value)) \(benchmark.unit) (\(format(seconds(clock.now - began))) s)")
                    }
                } catch {
                    errors[s] = error
                    if s > 0 { progress("  contender \(names[s]) FAILED: \(error)") }
                }
            }
        }
        if samplers.count == 1, let error = errors[0] { throw error }
        var medians: [String: Double] = [:]
        var contenderRows: [BenchmarkResult] = []
        for k in 1..<max(1, samplers.count) where errors[k] == nil {
            let row = BenchmarkResult(name: benchmark.name + "_" + names[k], unit: benchmark.unit, samples: samples[k])
            medians[names[k]] = row.median
            contenderRows.append(row)
        }
        // The anchor: the first contender, when it was measured; else the fixed anchor.
        var anchor = benchmark.anchor
        var anchorSpread: Double? = nil
        if let first = benchmark.contenders.first {
            if errors[1] == nil {
                anchor = (first.name, medians[first.name] ?? .nan)
                anchorSpread = contenderRows.first?.spreadPercent
            } else {
                anchor = nil
            }
        }
        // Contender rows compare with the anchor too (nginx vs HAProxy, direct vs HAProxy).
        for i in contenderRows.indices where anchor != nil && contenderRows[i].name != benchmark.name + "_" + (anchor?.name ?? "") {
            contenderRows[i].anchor = anchor
            contenderRows[i].anchorSpreadPercent = anchorSpread
        }
        guard errors[0] == nil else { return (contenderRows, errors[0]) }
        let main = BenchmarkResult(name: benchmark.name, unit: benchmark.unit, samples: samples[0], anchor: anchor,
                                   anchorSpreadPercent: anchorSpread, goals: benchmark.allGoals, contenderMedians: medians)
        return ([main] + contenderRows, nil)
    }

    /// The results as a fixed-width table.
    static func table(_ results: [BenchmarkResult]) -> String {
        let header = ["benchmark", "unit", "median", "min", "max", "spread", "goal", "anchor ratio"]
        let rows = results.map { r -> [String] in
            let goal = r.goals.isEmpty ? "-" : r.goals.map { g in
                g.description + (g.isMet(by: r) == nil ? " n/a" : g.isMet(by: r)! ? " met" : " MISSED")
            }.joined(separator: ", ")
            let anchor = r.anchor.map { a in
                "\(format(r.ratio ?? .nan))x \(a.name)" + (r.anchorSpreadPercent.map { " (±" + format($0 / 2) + "%)" } ?? "")
            } ?? "-"
            return [r.name, r.unit, format(r.median), format(r.minimum), format(r.maximum),
                    format(r.spreadPercent) + "%", goal, anchor]
        }
        let widths = header.indices.map { c in ([header] + rows).map { $0[c].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { c, cell in
                c == 0 ? cell.padding(toLength: widths[c]) : cell.leftPadding(toLength: widths[c])
            }.joined(separator: "  ")
        }
        return ([line(header), String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1))]
                + rows.map(line)).joined(separator: "\n")
    }

    /// The results as JSON rows `{"name","unit","value","anchor","anchor_value","ratio",
    /// "spread_percent","anchor_spread_percent","samples"}`, value being the median; anchor
    /// fields are null when there is no anchor.
    static func json(_ results: [BenchmarkResult]) -> String {
        let rows = results.map { r in
            "  {\"name\": \(quoted(r.name)), \"unit\": \(quoted(r.unit)), \"value\": \(number(r.median)), "
                + "\"anchor\": \(r.anchor.map { quoted($0.name) } ?? "null"), "
                + "\"anchor_value\": \(r.anchor.map { number($0.value) } ?? "null"), "
                + "\"ratio\": \(r.ratio.map(number) ?? "null"), "
                + "\"spread_percent\": \(number(r.spreadPercent)), "
                + "\"anchor_spread_percent\": \(r.anchorSpreadPercent.map(number) ?? "null"), "
                + "\"samples\": \(r.samples.count)}"
        }
        return "[\n" + rows.joined(separator: ",\n") + "\n]\n"
    }

    /// Writes `text` to `path`, creating the parent directory when missing.
    static func write(_ text: String, to path: String) throws(BenchError) {
        if let slash = path.lastIndex(of: "/") {
            let directory = String(path[..<slash])
            if !directory.isEmpty, mkdir(directory, 0o755) != 0, errno != EEXIST {
                throw .cannotWrite(path: path, errno: errno)
            }
        }
        guard let file = fopen(path, "w") else { throw .cannotWrite(path: path, errno: errno) }
        defer { fclose(file) }
        var text = text
        let written = text.withUTF8 { fwrite($0.baseAddress, 1, $0.count, file) }
        guard written == text.utf8.count else { throw .cannotWrite(path: path, errno: errno) }
    }

    /// `bench/results/latest.json` under the package root, or `$BENCH_RESULTS` when set.
    static func resultsPath() -> String {
        if let override = getenv("BENCH_RESULTS") { return String(cString: override) }
        return packageRoot() + "/bench/results/latest.json"
    }

    /// The package root: the nearest directory upward from the current one holding
    /// Package.swift ("." when there is none).
    static func packageRoot() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        var directory = getcwd(&buffer, buffer.count).map { _ in
            String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        } ?? "."
        while !directory.isEmpty {
            if access(directory + "/Package.swift", F_OK) == 0 { return directory }
            guard let slash = directory.lastIndex(of: "/") else { break }
            directory = String(directory[..<slash])
        }
        return "."
    }

    static func format(_ value: Double) -> String {
        guard value.isFinite else { return "n/a" }
        if value == 0 { return "0" }
        let magnitude = abs(value)
        // Tiny but non-zero (say 1 allocation in 200000 picks) must not print as 0.
        if magnitude != 0 && magnitude < 0.001 { return "\(value)" }
        let decimals = magnitude >= 100 ? 0 : magnitude >= 10 ? 1 : magnitude >= 1 ? 2 : 3
        return String(fixed: value, decimals: decimals)
    }

    /// A JSON number: 4 decimals, or Swift's shortest exact form for tiny values (`5e-06`),
    /// so a rare non-zero never reads as 0.
    static func number(_ value: Double) -> String {
        guard value.isFinite else { return "null" }
        return value != 0 && abs(value) < 0.001 ? "\(value)" : String(fixed: value, decimals: 4)
    }

    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case _ where scalar.value < 0x20:
                out += "\\u" + String(scalar.value, radix: 16).leftPadding(toLength: 4, with: "0")
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// Why the bench could not finish.
enum BenchError: Error, CustomStringConvertible {
    case cannotWrite(path: String, errno: Int32)
    case failed(benchmark: String, reason: String)
    /// The benchmark cannot run on this machine or with these privileges; not a failure.
    case skipped(reason: String)
    /// An external program exited with a non-zero status (its stderr went to ours).
    case commandFailed(command: String, status: Int32, output: String)
    /// An external program succeeded but printed no `key=<number>` line.
    case noFigure(command: String, key: String, output: String)

    var description: String {
        switch self {
        case .cannotWrite(let path, let code):
            return "cannot write \(path): \(String(cString: strerror(code))) (set BENCH_RESULTS to another path)"
        case .failed(let benchmark, let reason):
            return "\(benchmark) failed: \(reason)"
        case .skipped(let reason):
            return "skipped: \(reason)"
        case .commandFailed(let command, let status, let output):
            return "`\(command)` exited with status \(status)" + (output.isEmpty ? "" : "; stdout: " + output)
        case .noFigure(let command, let key, let output):
            return "`\(command)` printed no \(key)=<number> line; stdout: " + output
        }
    }
}

extension String {
    /// `value` with exactly `decimals` digits after the point, without Foundation.
    init(fixed value: Double, decimals: Int) {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        let whole = Int(scaled / scale)
        let fraction = Int(scaled - Double(whole) * scale)
        let sign = value < 0 && scaled != 0 ? "-" : ""
        self = decimals == 0
            ? "\(sign)\(whole)"
            : "\(sign)\(whole)." + String(fraction).leftPadding(toLength: decimals, with: "0")
    }

    func padding(toLength length: Int) -> String {
        count >= length ? self : self + String(repeating: " ", count: length - count)
    }

    func leftPadding(toLength length: Int, with pad: Character = " ") -> String {
        count >= length ? self : String(repeating: pad, count: length - count) + self
    }
}
