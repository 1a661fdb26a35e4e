import TOMLKit

/// Reads typed fields out of one TOML table, recording every problem with its file, line and
/// dotted key instead of stopping at the first, and noticing keys nobody asked for.
///
/// One reader per table: ask for each known key with the typed accessors, then call
/// `reportUnknownKeys()`; whatever was not asked for becomes a warning.
final class TableReader {
    let table: TOMLTable
    let path: [String]
    private let context: LoadContext
    var loadContext: LoadContext { context }
    private var seen: Set<String> = []

    init(_ table: TOMLTable, path: [String], context: LoadContext) {
        self.table = table
        self.path = path
        self.context = context
    }

    var dottedPath: String { path.joined(separator: ".") }

    /// Records an error about `key` (or the table itself when nil).
    func fail(_ key: String?, _ message: String) {
        context.problem(path: key.map { path + [$0] } ?? path, message)
    }

    /// Records that `key`'s host name did not resolve (see `ConfigProblem.isLookupFailure`).
    func failLookup(_ key: String, _ message: String) {
        context.problem(path: path + [key], message, isLookupFailure: true)
    }

    /// Records a warning about `key`.
    func warn(_ key: String?, _ message: String) {
        context.warning(path: key.map { path + [$0] } ?? path, message)
    }

    private func value(_ key: String) -> TOMLValueConvertible? {
        seen.insert(key)
        return table.contains(key: key) ? table[key] as TOMLValueConvertible? : nil
    }

    /// Whether the table holds `key` (of any type).
    func has(_ key: String) -> Bool { table.contains(key: key) }

    /// A string; `nil` when absent (and an error when `required`).
    func string(_ key: String, required: Bool = false) -> String? {
        guard let v = value(key) else {
            if required { fail(key, "is required") }
            return nil
        }
        guard let s = v.string else {
            fail(key, "must be a string (in quotes), found \(v.type)")
            return nil
        }
        return s
    }

    /// A string, or an integer read as its digits (`key = 200` or `key = "200-299"`); `nil`
    /// when absent or neither.
    func stringOrInteger(_ key: String) -> String? {
        guard let v = value(key) else { return nil }
        if let i = v.int { return String(i) }
        guard let s = v.string else {
            fail(key, "must be a string or an integer, found \(v.type)")
            return nil
        }
        return s
    }

    /// One string or an array of strings (`key = "a"` or `key = ["a", "b"]`); `nil` when
    /// absent or wrong.
    func strings(_ key: String) -> [String]? {
        guard let v = value(key) else { return nil }
        if let s = v.string { return [s] }
        guard let array = v.array else {
            fail(key, "must be a string or an array of strings, found \(v.type)")
            return nil
        }
        var out: [String] = []
        for element in array {
            guard let s = element.string else {
                fail(key, "must be a string or an array of strings, found an array holding \(element.type)")
                return nil
            }
            out.append(s)
        }
        return out
    }

    /// A boolean (`true` or `false`, unquoted); `nil` when absent or wrong.
    func bool(_ key: String) -> Bool? {
        guard let v = value(key) else { return nil }
        guard let b = v.bool else {
            let hint = v.string.map { ["true", "false"].contains($0.lowercased()) ? " (write it without quotes: \($0.lowercased()))" : "" } ?? ""
            fail(key, "must be true or false, found \(v.type)" + hint)
            return nil
        }
        return b
    }

    /// An integer in `range`; `nil` when absent or wrong.
    func int(_ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let v = value(key) else { return nil }
        guard let i = v.int else {
            fail(key, "must be an integer, found \(v.type)")
            return nil
        }
        guard range.contains(i) else {
            fail(key, "\(i) is out of range (\(range.lowerBound)-\(range.upperBound))")
            return nil
        }
        return i
    }

    /// An integer that the seed wrote as a string (`port = "7000"`) or as a number.
    func intOrNumericString(_ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let v = value(key) else { return nil }
        if let s = v.string {
            guard let i = Int(s.trimmingSpaces()) else {
                fail(key, "'\(s)' is not a number")
                return nil
            }
            guard range.contains(i) else {
                fail(key, "\(i) is out of range (\(range.lowerBound)-\(range.upperBound))")
                return nil
            }
            return i
        }
        seen.remove(key)
        return int(key, in: range)
    }

    /// Seconds as an integer or a decimal number, at least `minimum`.
    func seconds(_ key: String, minimum: Double = 0) -> Duration? {
        guard let v = value(key) else { return nil }
        let number: Double
        if let i = v.int { number = Double(i) } else if let d = v.double { number = d } else {
            fail(key, "must be a number of seconds, found \(v.type)")
            return nil
        }
        guard number >= minimum, number <= 86_400 * 365 else {
            fail(key, "\(number) seconds is out of range (\(minimum) to 31536000, a year)")
            return nil
        }
        // Durations are kept in milliseconds: a positive value that would round to zero
        // (which some keys read as "the default") is refused rather than changed silently.
        if number > 0 && number < 0.001 {
            fail(key, "\(number) seconds is below a millisecond, the smallest duration convey keeps")
            return nil
        }
        return .milliseconds(Int64((number * 1000).rounded()))
    }

    /// One of an enumeration's raw values.
    func choice<E: RawRepresentable & CaseIterable>(_ key: String, _ type: E.Type) -> E? where E.RawValue == String {
        guard let s = string(key) else { return nil }
        guard let e = E(rawValue: s) else {
            fail(key, "'\(s)' is not one of: \(E.allCases.map(\.rawValue).joined(separator: ", "))")
            return nil
        }
        return e
    }

    /// A sub-table; an error when the key holds something else.
    func table(_ key: String, required: Bool = false) -> TableReader? {
        guard let v = value(key) else {
            if required { fail(key, "is required") }
            return nil
        }
        guard let t = v.table else {
            fail(key, "must be a table ([\((path + [key]).joined(separator: "."))]), found \(v.type)")
            return nil
        }
        return TableReader(t, path: path + [key], context: context)
    }

    /// Every key of this table, each as a sub-table (for `[frontends.NAME]`-style maps).
    func namedTables() -> [(name: String, reader: TableReader)] {
        table.keys.sorted().compactMap { name in
            guard !name.isEmpty else {
                seen.insert(name)
                fail(name, "an empty name: give this table a name")
                return nil
            }
            guard let reader = table(name) else { return nil }
            return (name, reader)
        }
    }

    /// Warns about every key of this table that no accessor asked for.
    /// `elsewhere`: keys that belong in another table (or are another program's names), with
    /// where they go.
    func reportUnknownKeys(elsewhere: [String: String] = [:]) {
        for key in table.keys.sorted() where !seen.contains(key) {
            if key.isEmpty {
                fail(key, "an empty key")
            } else if let hint = elsewhere[key] {
                warn(key, "unknown key here: \(hint)")
            } else if let meant = KeySuggestion.closest(to: key, among: seen.filter { !table.contains(key: $0) }) {
                warn(key, "unknown key: did you mean \(meant)?")
            } else {
                warn(key, "unknown key")
            }
        }
    }
}

/// Collects problems and warnings for one load, locating each on its line.
final class LoadContext {
    let file: String
    let locator: TOMLKeyLocator
    private(set) var problems: [ConfigProblem] = []
    private(set) var warnings: [ConfigProblem] = []

    /// Looks up servers' host names.
    let resolver: HostNameResolver

    init(file: String, source: String, resolver: HostNameResolver = .system) {
        self.file = file
        self.locator = TOMLKeyLocator(source: source)
        self.resolver = resolver
    }

    func problem(path: [String], _ message: String, isLookupFailure: Bool = false) {
        var problem = ConfigProblem(file: file, line: locator.line(of: path),
                                    key: path.isEmpty ? nil : path.joined(separator: "."), message: message)
        problem.isLookupFailure = isLookupFailure
        problems.append(problem)
    }

    func warning(path: [String], _ message: String) {
        warnings.append(ConfigProblem(file: file, line: locator.line(of: path),
                                      key: path.isEmpty ? nil : path.joined(separator: "."), message: message))
    }
}
