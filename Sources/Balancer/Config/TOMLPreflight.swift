/// Checks a TOML source for the few inputs the TOML parser cannot be handed, before it is.
///
/// - A table header whose name starts with a character no key may start with (`[\`, `[!`,
///   `[é]`): toml++ (under TOMLKit) asserts on it instead of reporting an error, which aborts
///   the process: `--check` would crash, and a live reload would take the balancer down.
/// - A NUL byte anywhere: the text reaches the parser as a C string, which would end there.
/// - A NUL character in a string (`"\u0000"`): the parser keeps it, but the value reaches Swift
///   through a C string and is silently cut there (`"10.0.0.1:80\u0000x"` read as
///   `10.0.0.1:80`).
///
/// - A dotted key (or table name) of very many parts: toml++ takes time quadratic in their
///   number (16 000 parts, a 32 KB file, took 14 s, and a reload holding it delayed a
///   SIGTERM as long). Convey's deepest key has five parts; more than `maxKeyParts` is refused.
///
/// The scan follows TOML's lexical structure just far enough to know where a line starts a
/// table header: it skips comments and strings (basic, literal and their multi-line forms) and
/// counts brackets and braces, so a line that starts with `[` inside an array value is not
/// taken for a header. Anything else is left to the parser.
enum TOMLPreflight {
    /// The most parts a dotted key or table name may have.
    static let maxKeyParts = 32

    /// The first such problem, with its 1-based line, or nil when the parser may have the text.
    static func problem(in source: String) -> (line: Int, message: String)? {
        let s = Array(source.utf8)
        // A raw NUL byte (TOML allows none) would end the C string the parser is handed: the
        // rest of the file would silently be gone, and a valid prefix applied.
        if let nul = s.firstIndex(of: 0) {
            return (s[..<nul].reduce(1) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) },
                    "a NUL byte: a TOML file holds none (the parser would lose everything after it)")
        }
        // A UTF-8 byte-order mark, which toml++ skips: the first header follows it.
        var i = s.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        var line = 1
        var depth = 0  // open [ and { of values
        var atLineStart = true
        var dots = 0  // in the current run of key parts (or a number's digits)
        func tooDeep() -> (line: Int, message: String) {
            (line, "a key of more than \(maxKeyParts) dotted parts: convey's keys have at most five")
        }

        func at(_ k: Int) -> UInt8? { k < s.count ? s[k] : nil }
        func starts(_ text: String, _ k: Int) -> Bool {
            let t = Array(text.utf8)
            return k + t.count <= s.count && Array(s[k..<k + t.count]) == t
        }

        while i < s.count {
            let c = s[i]
            if c == UInt8(ascii: "\n") {
                line += 1
                i += 1
                atLineStart = true
                dots = 0
                continue
            }
            if atLineStart && (c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\r")) {
                i += 1
                continue
            }
            if atLineStart && depth == 0 && c == UInt8(ascii: "[") {
                // A table header: `[` or `[[`, optional blanks, then the first key's first character.
                var k = i + 1
                if at(k) == UInt8(ascii: "[") { k += 1 }
                while let b = at(k), b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") { k += 1 }
                if let b = at(k), !isKeyStart(b) {
                    return (line, "TOML syntax error: a table name starts with a letter, digit, '_', '-' or a quote, "
                            + "not \(describe(s, at: k))")
                }
                if at(k) == nil || at(k) == UInt8(ascii: "\n") {
                    return (line, "TOML syntax error: a table header ends before its name")
                }
                // The rest of the header line is the parser's: skip to its end, minding quoted names.
                atLineStart = false
                i = k
                var headerDots = 0
                while let b = at(i), b != UInt8(ascii: "\n") {
                    if b == UInt8(ascii: "\"") || b == UInt8(ascii: "'") {
                        let start = i
                        i = skipString(s, from: i, line: &line)
                        if b == UInt8(ascii: "\""), nulEscape(s, start..<i) != nil {
                            return (line, "a NUL character (\\u0000) in a name: convey's names cannot hold one")
                        }
                    } else if b == UInt8(ascii: ".") {
                        headerDots += 1
                        if headerDots >= maxKeyParts { return tooDeep() }
                        i += 1
                    } else if b == UInt8(ascii: "#") {
                        while let e = at(i), e != UInt8(ascii: "\n") { i += 1 }
                    } else {
                        i += 1
                    }
                }
                continue
            }
            atLineStart = false
            switch c {
            case UInt8(ascii: "."):
                dots += 1
                if dots >= maxKeyParts { return tooDeep() }
                i += 1
            case UInt8(ascii: " "), UInt8(ascii: "\t"):
                i += 1
            case UInt8(ascii: "#"):
                while let b = at(i), b != UInt8(ascii: "\n") { i += 1 }
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                let start = i
                let startLine = line
                i = skipString(s, from: i, line: &line)
                if c == UInt8(ascii: "\""), let nul = nulEscape(s, start..<i) {
                    return (startLine + nul, "a NUL character (\\u0000) in a string: convey's strings cannot hold one")
                }
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                dots = 0
                i += 1
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                depth = max(0, depth - 1)
                dots = 0
                i += 1
            default:
                if !isKeyStart(c) { dots = 0 }  // '=', ',' and the like end a run of parts
                i += 1
            }
        }
        return nil
    }

    /// A bare key character (`A-Za-z0-9_-`) or a quote.
    private static func isKeyStart(_ b: UInt8) -> Bool {
        (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
            || b == UInt8(ascii: "_") || b == UInt8(ascii: "-") || b == UInt8(ascii: "\"") || b == UInt8(ascii: "'")
    }

    private static func describe(_ s: [UInt8], at k: Int) -> String {
        let b = s[k]
        if b >= 0x21 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
        if b >= 0x80 {
            // The whole character, if it is valid UTF-8.
            var end = k + 1
            while end < s.count, end - k < 4, s[end] & 0xC0 == 0x80 { end += 1 }
            if let text = String(validating: s[k..<end], as: UTF8.self) { return "'\(text)' (bare names are ASCII: quote it)" }
        }
        return "the byte 0x" + String(b, radix: 16, uppercase: true)
    }

    /// The index just past the string that opens at `i` (`"`, `'`, `"""` or `'''`), counting
    /// the newlines of a multi-line one; the end of the text for one never closed (the parser
    /// reports that).
    private static func skipString(_ s: [UInt8], from i: Int, line: inout Int) -> Int {
        let quote = s[i]
        let triple = i + 2 < s.count && s[i + 1] == quote && s[i + 2] == quote
        var k = i + (triple ? 3 : 1)
        while k < s.count {
            let b = s[k]
            if b == UInt8(ascii: "\\") && quote == UInt8(ascii: "\"") {
                if k + 1 < s.count, s[k + 1] == UInt8(ascii: "\n") { line += 1 }
                k += 2
                continue
            }
            if b == UInt8(ascii: "\n") {
                if !triple { return k }  // the parser reports the unterminated string
                line += 1
            }
            if b == quote {
                if !triple { return k + 1 }
                if k + 2 < s.count && s[k + 1] == quote && s[k + 2] == quote {
                    // Up to two more quotes may close the string as part of its content.
                    var end = k + 3
                    while end < s.count && end < k + 5 && s[end] == quote { end += 1 }
                    return end
                }
            }
            k += 1
        }
        return k
    }

    /// Lines into the basic string `range` where a `\u0000` / `\U00000000` escape sits, or nil.
    private static func nulEscape(_ s: [UInt8], _ range: Range<Int>) -> Int? {
        var k = range.lowerBound
        var lines = 0
        while k < range.upperBound {
            if s[k] == UInt8(ascii: "\n") { lines += 1 }
            if s[k] == UInt8(ascii: "\\"), k + 1 < range.upperBound {
                let kind = s[k + 1]
                if kind == UInt8(ascii: "\n") { lines += 1 }
                let digits = kind == UInt8(ascii: "u") ? 4 : kind == UInt8(ascii: "U") ? 8 : 0
                if digits > 0, k + 2 + digits <= range.upperBound,
                   s[(k + 2)..<(k + 2 + digits)].allSatisfy({ $0 == UInt8(ascii: "0") }) {
                    return lines
                }
                k += 2
                continue
            }
            k += 1
        }
        return nil
    }
}
