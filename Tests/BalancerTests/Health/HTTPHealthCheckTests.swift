import Balancer
#if canImport(FoundationEssentials)
import FoundationEssentials
#endif
import Foundation
import Testing

/// `health_check_http`: the status-line reader on bytes, the request, the configuration keys,
/// and checks of loopback servers, one of them Python's own HTTP server.
@Suite("HTTP health checks")
struct HTTPHealthCheckTests {
    static func target(_ name: String, port: Int, _ http: HTTPHealthCheck, fall: Int = 1) -> HealthTarget {
        HealthTarget(id: ServerID(pool: "web_pool", name: name), address: .loopback(port),
                     check: HealthCheckConfig(interval: .milliseconds(50), timeout: .milliseconds(500), fall: fall, http: http))
    }

    @Test("the status line is read whole before a verdict: every prefix of one is incomplete")
    func statusLinePrefixes() {
        let reply = Array("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".utf8)
        let lineEnd = reply.firstIndex(of: UInt8(ascii: "\n"))!
        for n in 0...lineEnd {
            #expect(HTTPHealthCheck.verdict(Array(reply.prefix(n))) == .incomplete, "\(n) bytes")
        }
        #expect(HTTPHealthCheck.verdict(Array(reply.prefix(lineEnd + 1)))
                == .status(503, line: Array("HTTP/1.1 503 Service Unavailable".utf8)))
        #expect(HTTPHealthCheck.verdict(Array("HTTP/1.0 200\n".utf8)) == .status(200, line: Array("HTTP/1.0 200".utf8)),
                "no reason phrase, a bare LF")
    }

    @Test("a reply that is not HTTP is said so as soon as its first bytes differ, or its first line is malformed")
    func notHTTP() {
        for text in ["SSH-2.0-OpenSSH_9.2\r\n", "HTTP/2 200\r\n", "HTTP/1.1 20\r\n", "HTTP/1.1 2000 OK\r\n",
                     "HTTP/1.1  200 OK\r\n", "HTTP/1.1 abc OK\r\n", "HTTP/1.x 200 OK\r\n", "+PONG\r\n"] {
            #expect(HTTPHealthCheck.verdict(Array(text.utf8)) == .notHTTP, "\(text)")
        }
        #expect(HTTPHealthCheck.verdict(Array("x".utf8)) == .notHTTP, "wrong from the first byte")
        let endless = Array("HTTP/1.1 200 ".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: HTTPHealthCheck.statusLineLimit)
        #expect(HTTPHealthCheck.verdict(endless) == .notHTTP, "a first line past the limit")
    }

    @Test("the request: GET of the path over HTTP/1.1, Host the address checked unless set, Connection: close")
    func request() throws {
        let v4 = HTTPHealthCheck(path: "/healthz?full=1").request(checking: try Endpoint(parsing: "10.0.0.5:8080"))
        #expect(String(decoding: v4, as: UTF8.self) == "GET /healthz?full=1 HTTP/1.1\r\nHost: 10.0.0.5:8080\r\n"
                + "User-Agent: convey-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        let v6 = HTTPHealthCheck(path: "/").request(checking: try Endpoint(parsing: "[fd00::5]:80"))
        #expect(String(decoding: v6, as: UTF8.self).contains("\r\nHost: [fd00::5]:80\r\n"))
        let named = HTTPHealthCheck(path: "/", host: "www.example.com").request(checking: try Endpoint(parsing: "10.0.0.5:80"))
        #expect(String(decoding: named, as: UTF8.self).contains("\r\nHost: www.example.com\r\n"))
    }

    static let head = "[frontends.web]\nlisten_addr = \"127.0.0.1:80\"\nbackend = \"pool\"\n[backends.pool]\n"
    static let servers = "[backends.pool.servers.a]\naddr = \"127.0.0.1:81\"\n"

    @Test("the keys: path, host and status read; a status may be a number or a range; defaults 200-399")
    func keys() throws {
        let full = try ConfigLoader.load(source: Self.head + "health_check_http = \"/healthz\"\nhealth_check_http_host = \"app.example\"\n"
                                         + "health_check_http_status = \"200-299\"\n" + Self.servers, file: "t.toml")
        #expect(full.warnings.isEmpty)
        #expect(full.config.pools[0].health.http == HTTPHealthCheck(path: "/healthz", host: "app.example", statuses: 200...299))
        let number = try ConfigLoader.load(source: Self.head + "health_check_http = \"/\"\nhealth_check_http_status = 204\n" + Self.servers,
                                           file: "t.toml")
        #expect(number.config.pools[0].health.http?.statuses == 204...204)
        let plain = try ConfigLoader.load(source: Self.head + "health_check_http = \"/\"\n" + Self.servers, file: "t.toml")
        #expect(plain.config.pools[0].health.http == HTTPHealthCheck(path: "/", host: nil, statuses: 200...399))
    }

    @Test("wrong keys are refused, each naming its line and what to write")
    func wrongKeys() throws {
        func problem(_ lines: String) -> [String] { problems(Self.head + lines + Self.servers).map(\.description) }
        #expect(problem("health_check_http = \"healthz\"\n")
                == ["test.toml:5: backends.pool.health_check_http: 'healthz' is not a path: it must start with '/' (as /healthz)"])
        #expect(problem("health_check_http = \"/a b\"\n")
                == ["test.toml:5: backends.pool.health_check_http: \"/a b\" holds a space, a control or a non-ASCII character: write it percent-encoded (%20)"])
        #expect(problem("health_check_http = \"/\"\nhealth_check_http_host = \"a\\r\\nX-Evil: 1\"\n")
                == [#"test.toml:6: backends.pool.health_check_http_host: "a\r\nX-Evil: 1" holds a space, a control or a non-ASCII character"#])
        #expect(problem("health_check_http = \"/\"\nhealth_check_http_status = \"2xx\"\n")
                == ["test.toml:6: backends.pool.health_check_http_status: '2xx' is not a status code or a range of them within 100-599 (as \"200\" or \"200-299\")"])
        #expect(problem("health_check_http = \"/\"\nhealth_check_http_status = \"399-200\"\n").count == 1)
        #expect(problem("health_check_http = \"/\"\nhealth_check_send = \"PING\\r\\n\"\n")
                == ["test.toml:5: backends.pool.health_check_http: sends its own request and judges the reply by its status: "
                    + "remove health_check_send and health_check_expect, or health_check_http"])
        #expect(problem("health_check_http = 1\nhealth_check_http_status = 200\n")
                == ["test.toml:5: backends.pool.health_check_http: must be a string (in quotes), found integer"],
                "one error, naming the key")
        let orphan = try ConfigLoader.load(source: Self.head + "health_check_http_status = 200\n" + Self.servers, file: "t.toml")
        #expect(orphan.warnings.map(\.description)
                == ["t.toml:5: backends.pool.health_check_http_status: has no effect without health_check_http (the path each check requests)"])
    }

    @Test("a server answering a status in range is up; the request reached it whole", arguments: [
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n",
    ])
    func statusInRangeIsUp(reply: String) async throws {
        let backend = try await LoopbackServer.start(.reply(Array(reply.utf8)))
        defer { Task { try await backend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: backend.port, HTTPHealthCheck(path: "/healthz"))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)
        try await whileRunning(checker) {
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 3 })
        }
        #expect(checker.status(of: a.id)?.lastResult == .passed && recorder.all.isEmpty)
        let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:\(backend.port)\r\n"
        #expect(String(decoding: backend.receivedBytes, as: UTF8.self).hasPrefix(request), "\(String(decoding: backend.receivedBytes, as: UTF8.self))")
    }

    @Test("a server answering another status, or no HTTP, or hanging up, goes down saying why", arguments: [
        (LoopbackServer.Behaviour.reply(Array("HTTP/1.1 503 Service Unavailable\r\n\r\n".utf8)),
         ["HTTP status 503, not 200-399: \"HTTP/1.1 503 Service Unavailable\""]),
        (.banner(Array("SSH-2.0-OpenSSH_9.2\r\n".utf8)), ["not an HTTP reply: got \"SSH-2.0-OpenSSH_9.2\\r\\n\""]),
        // The request may reach the closed socket first: then the server's kernel resets.
        (.hangUp, ["connection closed before an HTTP reply", "reading the reply failed: Connection reset by peer"]),
        (.reply(Array("HTTP/1.1 2".utf8)), ["timeout after 500ms waiting for a reply (10 bytes received)"]),
    ])
    func badRepliesGoDown(behaviour: LoopbackServer.Behaviour, reasons: [String]) async throws {
        let backend = try await LoopbackServer.start(behaviour)
        defer { Task { try await backend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, lines) = CapturingLogHandler.logger()
        let a = Self.target("a", port: backend.port, HTTPHealthCheck(path: "/"))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)
        try await whileRunning(checker) {
            #expect(await eventually { recorder.of(a.id).count == 1 })
        }
        #expect(recorder.of(a.id).first?.isUp == false)
        let reason = recorder.of(a.id).first?.lastResultText ?? ""
        #expect(reasons.contains(reason), "\(reason)")
        #expect(lines.all.contains { $0.level == .notice && $0.message.contains("is down: \(reason)") })
    }

    /// Python's `http.server` on a free loopback port: a real HTTP server, not a canned reply.
    @Test("against Python's http.server: an existing path passes, a missing one fails with its 404")
    func realHTTPServer() async throws {
        let port = try await LoopbackServer.closedPorts(1)[0]
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("convey-httpcheck-\(port)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data("ok\n".utf8).write(to: directory.appendingPathComponent("healthz"))
        defer { try? FileManager.default.removeItem(at: directory) }
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", directory.path, "\(port)"]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        // SIGKILL: a child of the test runner inherits its blocked SIGTERM. Foundation reaps it;
        // its exit is waited for with a bound (waitUntilExit was seen to miss a child's exit).
        defer {
            kill(server.processIdentifier, SIGKILL)
            for _ in 0..<500 where server.isRunning { usleep(10_000) }
        }

        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let good = Self.target("good", port: port, HTTPHealthCheck(path: "/healthz", statuses: 200...200))
        let missing = Self.target("missing", port: port, HTTPHealthCheck(path: "/nothing-here"), fall: 2)
        let checker = HealthChecker(targets: [good, missing], logger: logger, onChange: recorder.handler)
        try await whileRunning(checker) {
            // The server may still be starting: wait for good's first pass, then missing's verdict.
            #expect(await eventually { checker.status(of: good.id)?.lastResult == .passed })
            #expect(await eventually {
                guard case .failed(.httpStatus(404, _, _))? = checker.status(of: missing.id)?.lastResult else { return false }
                return checker.status(of: missing.id)?.isUp == false
            }, "\(String(describing: checker.status(of: missing.id)))")
            #expect(await eventually { checker.status(of: good.id)?.isUp == true })
        }
        #expect(checker.status(of: missing.id)?.lastResultText.hasPrefix("HTTP status 404, not 200-399: \"HTTP/1.0 404 ") == true,
                "\(checker.status(of: missing.id)?.lastResultText ?? "")")
    }
}
