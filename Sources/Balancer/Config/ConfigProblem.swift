/// One thing wrong with a configuration file, located as precisely as the file allows.
public struct ConfigProblem: Sendable, Equatable, CustomStringConvertible {
    /// The file the problem is in.
    public var file: String
    /// 1-based line, when known.
    public var line: Int?
    /// Dotted key path, e.g. `backends.web.servers.a.weight`; nil for file-level problems.
    public var key: String?
    /// What is wrong and, where possible, how to fix it.
    public var message: String
    /// A server's host name did not resolve: the file may be right and the resolver away for
    /// a moment (at boot, DNS may come up after convey), so a start stopped by it is retried.
    public var isLookupFailure = false

    public init(file: String, line: Int?, key: String?, message: String) {
        self.file = file
        self.line = line
        self.key = key
        self.message = message
    }

    /// `file:line: key: message`, the form compilers use so editors can jump to it. Always
    /// one line of bounded length: control and line-separator characters from the file are
    /// escaped, and a key or message that echoes a huge value is cut short.
    public var description: String {
        var out = file
        if let line { out += ":\(line)" }
        out += ": "
        if let key { out += "\(Self.printable(key, limit: 160)): " }
        return out + Self.printable(message, limit: 1000)
    }

    /// `text` with control characters, DEL and the Unicode line separators (U+0085, U+2028,
    /// U+2029) written as `\u{XX}`, cut to `limit` characters with the count of the rest.
    static func printable(_ text: String, limit: Int) -> String {
        var out = ""
        var count = 0
        for scalar in text.unicodeScalars {
            if count >= limit {
                return out + "… (\(text.unicodeScalars.count - count) more characters)"
            }
            let v = scalar.value
            if v < 0x20 || v == 0x7F || v == 0x85 || v == 0x2028 || v == 0x2029 {
                out += "\\u{" + String(v, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
            count += 1
        }
        return out
    }
}

/// A configuration file that cannot be used, with every problem found in it.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var problems: [ConfigProblem]

    public init(problems: [ConfigProblem]) { self.problems = problems }

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}
