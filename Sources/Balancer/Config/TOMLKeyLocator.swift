/// Finds the line on which a TOML key or table is written.
///
/// TOMLKit (toml++) reports lines for syntax errors but not for the keys of a parsed document,
/// and an operator needs "line 12" for a bad weight too. This scanner follows table headers
/// (`[a.b]`, `[[a]]`) and `key = value` lines, including dotted and quoted keys, and records the
/// first line each full dotted path appears on. It only runs after toml++ accepted the file,
/// so it may be simple: it never decides what is valid.
struct TOMLKeyLocator: Sendable, Equatable {
    private var lines: [String: Int] = [:]

    init(source: String) {
        var table: [String] = []
        var lineNumber = 0
        for rawLine in source.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Substring(Self.stripComment(rawLine).trimmingSpaces())
            if line.isEmpty { continue }
            if line.hasPrefix("[") {
                let inner = line.drop { $0 == "[" }.prefix { $0 != "]" }
                table = Self.splitKey(String(inner))
                record(table, lineNumber)
                continue
            }
            guard let eq = Self.indexOfAssignment(line) else { continue }
            let key = Self.splitKey(String(line[..<eq]))
            guard !key.isEmpty else { continue }
            record(table + key, lineNumber)
        }
    }

    /// The line of `path` (e.g. `["backends", "web", "servers", "a", "weight"]`), or of the
    /// nearest enclosing table that has one.
    func line(of path: [String]) -> Int? {
        var path = path
        while !path.isEmpty {
            if let line = lines[path.joined(separator: "\u{1F}")] { return line }
            path.removeLast()
        }
        return nil
    }

    private mutating func record(_ path: [String], _ line: Int) {
        for end in 1...max(path.count, 1) where end <= path.count {
            let key = path.prefix(end).joined(separator: "\u{1F}")
            if lines[key] == nil { lines[key] = line }
        }
    }

    /// Removes a `#` comment that is not inside a quoted string.
    private static func stripComment(_ line: Substring) -> Substring {
        var quote: Character? = nil
        var index = line.startIndex
        while index < line.endIndex {
            let c = line[index]
            if let q = quote {
                if c == "\\" && q == "\"" { index = line.index(after: index) }
                else if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "#" {
                return line[..<index]
            }
            if index < line.endIndex { index = line.index(after: index) }
        }
        return line
    }

    /// The index of the `=` that ends the key of a `key = value` line.
    private static func indexOfAssignment(_ line: Substring) -> Substring.Index? {
        var quote: Character? = nil
        for index in line.indices {
            let c = line[index]
            if let q = quote {
                if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "=" {
                return index
            }
        }
        return nil
    }

    /// Splits a possibly dotted, possibly quoted key into its parts.
    static func splitKey(_ text: String) -> [String] {
        var parts: [String] = []
        var current = ""
        var quote: Character? = nil
        for c in text {
            if let q = quote {
                if c == q { quote = nil } else { current.append(c) }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "." {
                parts.append(current.trimmingSpaces())
                current = ""
            } else {
                current.append(c)
            }
        }
        let last = current.trimmingSpaces()
        if !last.isEmpty || !parts.isEmpty { parts.append(last) }
        return parts
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs.
    func trimmingSpaces() -> String {
        let chars = Array(self)
        var start = 0, end = chars.count
        while start < end, chars[start] == " " || chars[start] == "\t" || chars[start] == "\r" { start += 1 }
        while end > start, chars[end - 1] == " " || chars[end - 1] == "\t" || chars[end - 1] == "\r" { end -= 1 }
        return String(chars[start..<end])
    }
}
