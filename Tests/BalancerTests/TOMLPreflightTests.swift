@testable import Balancer
import Testing

@Suite("What the TOML parser is never handed")
struct TOMLPreflightTests {
    /// toml++ asserts (aborting the process) on these instead of reporting an error; found by
    /// fuzzing `convey --check` and a live reload.
    @Test("a table header whose name starts with a character no key may start with is a syntax error on its line",
          arguments: ["[\\", "[é]", "[!", "[[!]]", "a = 1\n[ \\", "[ ]", "[", "[[", "# c\n\n  [\t!x]\n"])
    func badHeaderStart(source: String) throws {
        #expect(throws: ConfigError.self) { try ConfigLoader.load(source: source, file: "f.toml") }
        let found = try #require(TOMLPreflight.problem(in: source))
        #expect(found.message.hasPrefix("TOML syntax error: a table "))
        #expect(found.line == source.prefix { $0 != "[" }.filter { $0 == "\n" }.count + 1)
    }

    /// Found in review: toml++ skips a byte-order mark, so the header after one was not checked.
    @Test("a header after a UTF-8 byte-order mark is checked too; a NUL escape in a quoted table name is refused")
    func byteOrderMarkAndQuotedNames() {
        #expect(TOMLPreflight.problem(in: "\u{FEFF}[!]\n")?.message.contains("not '!'") == true)
        #expect(TOMLPreflight.problem(in: "\u{FEFF}[ok]\n") == nil)
        #expect(TOMLPreflight.problem(in: "[frontends.\"web\\u0000x\"]\n")?.message.contains("NUL") == true)
        #expect(TOMLPreflight.problem(in: "s = \"\"\"a\\\n\\u0000\"\"\"")?.line == 2)
    }

    @Test("brackets inside values, strings and comments are not headers", arguments: [
        "x = [\n  [{a = 1}],\n]\n[ok]\n",
        "x = \"\"\"\n[\\\\\n\"\"\"\n",
        "x = '''\n[!\n'''\n",
        "x = { a = [\n[1]] }\n",
        "# [!\n[\"quoted name\"]\n[ 'lit' ]\n[a.\"\"]\n",
        "x = \"\\\"[\"\n[-dash]\n[_u]\n[9]\n",
    ])
    func notHeaders(source: String) {
        #expect(TOMLPreflight.problem(in: source) == nil)
    }

    /// Found by fuzzing a live reload: a NUL byte in a comment cut the file there, and the
    /// valid prefix (one frontend fewer) was applied.
    @Test("a raw NUL byte anywhere is refused on its line")
    func rawNUL() throws {
        let source = "[frontends.web]\n# edited by ops \u{0}\n[frontends.second]\n"
        #expect(TOMLPreflight.problem(in: source)?.line == 2)
        #expect(throws: ConfigError.self) { try ConfigLoader.load(source: source, file: "f.toml") }
    }

    /// Found by fuzzing: toml++ parses a dotted key in time quadratic in its parts (16 000
    /// parts: 14 s, during which a reload also held up SIGTERM).
    @Test("a dotted key or table name of more than 32 parts is refused; convey's own keys and numbers pass")
    func deepDottedKeys() {
        let deep = (0..<16_000).map { "a\($0)" }.joined(separator: ".")
        #expect(TOMLPreflight.problem(in: "x = 1\n\(deep) = 1\n")?.line == 2)
        #expect(TOMLPreflight.problem(in: "[\(deep)]\n")?.message.contains("more than 32 dotted parts") == true)
        #expect(TOMLPreflight.problem(in: "x = { \(deep) = 1 }\n") != nil)
        #expect(TOMLPreflight.problem(in: "backends.pool.servers.a.addr = \"10.0.0.1:80\"\nx = 1.5\n[a.\"b.c\".d]\n") == nil)
        let parts32 = (0..<32).map { "k\($0)" }.joined(separator: ".")
        #expect(TOMLPreflight.problem(in: "\(parts32) = 1\n") == nil)
    }

    @Test("a NUL escape in a basic string is refused on its line; an escaped backslash before u0000 is not one")
    func nulEscapes() {
        #expect(TOMLPreflight.problem(in: "a = 1\ns = \"10.0.0.1:80\\u0000x\"\n")?.line == 2)
        #expect(TOMLPreflight.problem(in: "s = \"\\U00000000\"")?.message.contains("NUL") == true)
        #expect(TOMLPreflight.problem(in: "s = \"\"\"\nab\n\\u0000\"\"\"")?.line == 3)
        #expect(TOMLPreflight.problem(in: "s = \"\\\\u0000\"") == nil)
        #expect(TOMLPreflight.problem(in: "s = '\\u0000'") == nil)  // literal: backslash and text
        #expect(TOMLPreflight.problem(in: "s = \"\\u0001\"") == nil)
    }
}
