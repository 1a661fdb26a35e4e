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
struct Benchmark {
    var name: String
    var unit: String
    /// Samples taken (after one unrecorded warm-up run).
    var repetitions: Int
    /// A reference figure the value is compared with (e.g. a C program on the same path), with
    /// its name; nil when there is none.
    var anchor: (name: String, value: Double)? = nil
    /// What the median should achieve; shown in the table as met or MISSED.
    var goal: Goal? = nil
    var setUp: () throws -> Void = {}
    var tearDown: () -> Void = {}
    var sample: () throws -> Double
}

/// A target for a benchmark's median (lower is better for every figure so far).
enum Goal {
    /// Strictly under the bound (e.g. a time budget).
    case below(Double)
    /// At most the bound (e.g. 0 allocations).
    case atMost(Double)

    func isMet(by value: Double) -> Bool {
        switch self {
        case .below(let bound): return value < bound
        case .atMost(let bound): return value <= bound
        }
    }

    var description: String {
        switch self {
        case .below(let bound): return "< " + Harness.format(bound)
        case .atMost(let bound): return "<= " + Harness.format(bound)
        }
    }
}

/// What a benchmark measured.
struct BenchmarkResult {
    var name: String
    var unit: String
    var samples: [Double]
    var anchor: (name: String, value: Double)?
    var goal: Goal?

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
    static func run(_ benchmarks: [Benchmark], filters: [String]) -> (results: [BenchmarkResult], failures: Int) {
        let chosen = benchmarks.filter { b in filters.isEmpty || filters.contains { b.name.hasPrefix($0) } }
        var results: [BenchmarkResult] = []
        var failures = 0
        for (n, benchmark) in chosen.enumerated() {
            progress("[\(n + 1)/\(chosen.count)] \(benchmark.name): warm-up + \(benchmark.repetitions) runs")
            do {
                results.append(try measure(benchmark))
            } catch BenchError.skipped(let reason) {
                progress("  skipped: \(reason)")
            } catch {
                progress("  FAILED: \(error)")
                failures += 1
            }
        }
        return (results, failures)
    }

    static func measure(_ benchmark: Benchmark) throws -> BenchmarkResult {
        try benchmark.setUp()
        defer { benchmark.tearDown() }
        _ = try benchmark.sample()
        var samples: [Double] = []
        for _ in 0..<benchmark.repetitions { samples.append(try benchmark.sample()) }
        return BenchmarkResult(name: benchmark.name, unit: benchmark.unit, samples: samples,
                               anchor: benchmark.anchor, goal: benchmark.goal)
    }

    /// The results as a fixed-width table.
    static func table(_ results: [BenchmarkResult]) -> String {
        let header = ["benchmark", "unit", "median", "min", "max", "spread", "goal", "anchor ratio"]
        let rows = results.map { r -> [String] in
            let goal = r.goal.map { $0.description + ($0.isMet(by: r.median) ? " met" : " MISSED") } ?? "-"
            let anchor = r.anchor.map { "\(format(r.ratio ?? .nan))x \($0.name)" } ?? "-"
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

    /// The results as JSON rows `{"name","unit","value","anchor","anchor_value","ratio"}`,
    /// value being the median; anchor fields are null when there is no anchor.
    static func json(_ results: [BenchmarkResult]) -> String {
        let rows = results.map { r in
            "  {\"name\": \(quoted(r.name)), \"unit\": \(quoted(r.unit)), \"value\": \(number(r.median)), "
                + "\"anchor\": \(r.anchor.map { quoted($0.name) } ?? "null"), "
                + "\"anchor_value\": \(r.anchor.map { number($0.value) } ?? "null"), "
                + "\"ratio\": \(r.ratio.map(number) ?? "null")}"
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

    /// `bench/results/latest.json` under the package root (the nearest directory upward from
    /// the current one holding Package.swift), or `$BENCH_RESULTS` when set.
    static func resultsPath() -> String {
        if let override = getenv("BENCH_RESULTS") { return String(cString: override) }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        var directory = getcwd(&buffer, buffer.count).map { _ in
            String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        } ?? "."
        while !directory.isEmpty {
            if access(directory + "/Package.swift", F_OK) == 0 { return directory + "/bench/results/latest.json" }
            guard let slash = directory.lastIndex(of: "/") else { break }
            directory = String(directory[..<slash])
        }
        return "bench/results/latest.json"
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

    var description: String {
        switch self {
        case .cannotWrite(let path, let code):
            return "cannot write \(path): \(String(cString: strerror(code))) (set BENCH_RESULTS to another path)"
        case .failed(let benchmark, let reason):
            return "\(benchmark) failed: \(reason)"
        case .skipped(let reason):
            return "skipped: \(reason)"
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
