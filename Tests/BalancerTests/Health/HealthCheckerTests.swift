import Balancer
import Logging
import ServiceLifecycle
import Testing

/// The health checker against real TCP servers on 127.0.0.1. Intervals are 50–200 ms so the
/// suite stays fast; every wait has a generous upper bound and the assertions count checks and
/// transitions, not milliseconds.
@Suite("Active health checks against loopback servers")
struct HealthCheckerTests {
    static let pool = "web_pool"

    static func check(interval: Duration = .milliseconds(50), timeout: Duration = .milliseconds(500),
                      rise: Int = 2, fall: Int = 3, send: String = "", expect: String = "") -> HealthCheckConfig {
        HealthCheckConfig(interval: interval, timeout: timeout, rise: rise, fall: fall,
                          send: Array(send.utf8), expect: Array(expect.utf8))
    }

    static func target(_ name: String, port: Int, _ check: HealthCheckConfig = check()) -> HealthTarget {
        HealthTarget(id: ServerID(pool: pool, name: name), address: .loopback(port), check: check)
    }

    @Test("a server that accepts connections stays up, check after check")
    func listeningServerStaysUp() async throws {
        let backend = try await LoopbackServer.start(.silent)
        defer { Task { try await backend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: backend.port, Self.check(fall: 1))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)

        #expect(checker.status(of: a.id) == .unchecked, "up before the first check")
        try await whileRunning(checker) {
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 5 })
        }
        let status = try #require(checker.status(of: a.id))
        #expect(status.isUp)
        #expect(status.consecutiveSuccesses == status.checks)
        #expect(status.lastResult == .passed)
        #expect(status.lastCheck != nil)
        #expect(recorder.all.isEmpty, "no transition for a healthy server")
        // The backend accepts on its own event loop, a moment after the client saw the connect.
        #expect(await eventually { backend.acceptedConnections >= 5 }, "every check is a real connection")
    }

    @Test("a closed port goes down after exactly `fall` failed checks, logged with the reason")
    func closedPortGoesDownAfterFall() async throws {
        let port = try await LoopbackServer.closedPorts(1)[0]
        let recorder = TransitionRecorder()
        let (logger, lines) = CapturingLogHandler.logger()
        let a = Self.target("a", port: port, Self.check(rise: 2, fall: 3))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)

        try await whileRunning(checker) {
            #expect(await eventually { !recorder.all.isEmpty })
        }
        let transitions = recorder.of(a.id)
        #expect(transitions.count == 1)
        let down = try #require(transitions.first)
        #expect(!down.isUp)
        #expect(down.checks == 3, "down on the third check, not before, not after")
        #expect(down.consecutiveFailures == 3)
        #expect(down.lastResult == .failed(.connectRefused))
        #expect(down.lastResultText == "connect refused")

        let notices = lines.all.filter { $0.level == .notice }
        #expect(notices.count == 1)
        #expect(notices.first?.message.contains("web_pool/a") == true)
        #expect(notices.first?.message.contains("127.0.0.1:\(port)") == true)
        #expect(notices.first?.message.contains("is down: connect refused") == true)
    }

    @Test("a down server comes back after exactly `rise` passed checks when its listener reappears")
    func comesBackAfterRise() async throws {
        let port = try await LoopbackServer.closedPorts(1)[0]
        let recorder = TransitionRecorder()
        let (logger, lines) = CapturingLogHandler.logger()
        let a = Self.target("a", port: port, Self.check(rise: 3, fall: 2))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)

        try await whileRunning(checker) {
            #expect(await eventually { recorder.of(a.id).count == 1 })
            #expect(checker.status(of: a.id)?.isUp == false)

            let backend = try await LoopbackServer.start(.silent, port: port)
            #expect(await eventually { recorder.of(a.id).count == 2 })
            try await backend.stop()
        }
        let transitions = recorder.of(a.id)
        #expect(transitions.map(\.isUp) == [false, true])
        let up = try #require(transitions.last)
        #expect(up.consecutiveSuccesses == 3, "up on the third passed check in a row")
        #expect(up.consecutiveFailures == 0)
        #expect(up.lastResult == .passed)
        #expect(lines.all.contains { $0.level == .notice && $0.message.contains("web_pool/a") && $0.message.contains("is up again") })
    }

    @Test("send/expect: a server answering the expected prefix is up, and got the send bytes")
    func expectedReplyIsUp() async throws {
        let backend = try await LoopbackServer.start(.reply(Array("+PONG\r\n".utf8)))
        defer { Task { try await backend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: backend.port, Self.check(fall: 1, send: "PING\r\n", expect: "+PONG"))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)

        try await whileRunning(checker) {
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 3 })
        }
        let status = try #require(checker.status(of: a.id))
        #expect(status.isUp)
        #expect(status.lastResult == .passed)
        #expect(recorder.all.isEmpty)
        #expect(backend.receivedBytes.starts(with: Array("PING\r\nPING\r\n".utf8)), "each check sent its bytes")
    }

    @Test("send without expect: the server is up once the bytes are written, and it receives them")
    func sendOnlyIsUp() async throws {
        let backend = try await LoopbackServer.start(.silent)
        defer { Task { try await backend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: backend.port, Self.check(fall: 1, send: "HEAD / HTTP/1.0\r\n\r\n"))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)

        try await whileRunning(checker) {
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 2 })
            #expect(await eventually { backend.receivedBytes.starts(with: Array("HEAD / HTTP/1.0\r\n\r\n".utf8)) })
        }
        #expect(checker.status(of: a.id)?.lastResult == .passed)
        #expect(recorder.all.isEmpty)
    }

    /// A server behind `proxy_protocol` (nginx `listen ... proxy_protocol`, HAProxy
    /// `accept-proxy`) wants the header on every connection, checks included.
    @Test("a PROXY header opens each check: v1 'PROXY UNKNOWN', v2 LOCAL; the send bytes follow", arguments: [
        (ProxyProtocolVersion.v1, Array("PROXY UNKNOWN\r\n".utf8)),
        (ProxyProtocolVersion.v2, [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00]),
    ])
    func proxyHeaderOpensCheck(version: ProxyProtocolVersion, header: [UInt8]) async throws {
        let backend = try await LoopbackServer.start(.reply(Array("+PONG\r\n".utf8)))
        defer { Task { try await backend.stop() } }
        let (logger, _) = CapturingLogHandler.logger()
        let a = HealthTarget(id: ServerID(pool: "p", name: "a"), address: .loopback(backend.port),
                             check: Self.check(fall: 1, send: "PING\r\n", expect: "+PONG"), proxyHeader: version)
        let checker = HealthChecker(targets: [a], logger: logger, onChange: { _, _ in })
        try await whileRunning(checker) {
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 1 })
        }
        #expect(checker.status(of: a.id)?.lastResult == .passed)
        #expect(backend.receivedBytes.starts(with: header + Array("PING\r\n".utf8)), "\(backend.receivedBytes.prefix(40))")
    }

    @Test("a pool's checks send the PROXY header its frontends send, unless the pool says otherwise or the mode sends none")
    func proxyHeaderFollowsFrontends() throws {
        let server = [ServerConfig(name: "s", address: try Endpoint(parsing: "10.77.0.21:80"))]
        func frontend(_ name: String, _ pool: String, _ v: ProxyProtocolVersion) throws -> FrontendConfig {
            FrontendConfig(name: name, listen: try Endpoint(parsing: "10.77.0.1:\(80 + name.count)"), pool: pool, proxyProtocol: v)
        }
        var explicit = HealthCheckConfig()
        explicit.proxyProtocol = ProxyProtocolVersion.none
        let config = ConveyConfig(
            frontends: [try frontend("a", "same", .v2), try frontend("bb", "same", .v2),
                        try frontend("ccc", "mixed", .v1), try frontend("dddd", "mixed", .none),
                        try frontend("eeeee", "told", .v2)],
            pools: [PoolConfig(name: "same", servers: server), PoolConfig(name: "mixed", servers: server),
                    PoolConfig(name: "told", health: explicit, servers: server), PoolConfig(name: "unused", servers: server)])
        let headers = Dictionary(uniqueKeysWithValues: HealthTarget.targets(for: config).map { ($0.id.pool, $0.proxyHeader) })
        #expect(headers == ["same": .v2, "mixed": .none, "told": .none, "unused": .none])
        let xdp = HealthTarget.targets(for: config, frontendsSendHeaders: false)
        #expect(xdp.allSatisfy { $0.proxyHeader == .none })

        // Checks on a status port (health_check_port) inherit no header; the pool may still ask.
        var statusPort = config
        let same = try #require(statusPort.pools.firstIndex { $0.name == "same" })  // its frontends send v2
        statusPort.pools[same].health.port = 8080
        #expect(HealthTarget.targets(for: statusPort).first { $0.id.pool == "same" }?.proxyHeader == ProxyProtocolVersion.none,
                "checked on 8080: no header")
        statusPort.pools[same].health.proxyProtocol = .v1
        #expect(HealthTarget.targets(for: statusPort).first { $0.id.pool == "same" }?.proxyHeader == .v1, "set on the pool: sent")
        // A server whose check port is its own port is checked as its traffic is.
        var own = config
        own.pools[same].servers = [ServerConfig(name: "s", address: try Endpoint(parsing: "10.77.0.21:80"), healthCheckPort: 80)]
        #expect(HealthTarget.targets(for: own).first { $0.id.pool == "same" }?.proxyHeader == .v2)
    }

    @Test("an IPv6 server is checked like any other")
    func ipv6Server() async throws {
        let backend = try await LoopbackServer.start(.reply(Array("+PONG\r\n".utf8)), host: "::1")
        defer { Task { try await backend.stop() } }
        let (logger, _) = CapturingLogHandler.logger()
        let a = HealthTarget(id: ServerID(pool: Self.pool, name: "v6"),
                             address: try Endpoint(parsing: "[::1]:\(backend.port)"),
                             check: Self.check(fall: 1, send: "PING\r\n", expect: "+PONG"))
        let checker = HealthChecker(targets: [a], logger: logger)

        try await whileRunning(checker) {
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 2 })
        }
        #expect(checker.status(of: a.id)?.isUp == true)
        #expect(checker.status(of: a.id)?.lastResult == .passed)
    }

    @Test("send/expect: a server answering something else goes down, saying what it answered")
    func wrongReplyGoesDown() async throws {
        let backend = try await LoopbackServer.start(.reply(Array("-ERR unknown command\r\n".utf8)))
        defer { Task { try await backend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: backend.port, Self.check(fall: 2, send: "PING\r\n", expect: "+PONG"))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)

        try await whileRunning(checker) {
            #expect(await eventually { !recorder.all.isEmpty })
        }
        let down = try #require(recorder.of(a.id).first)
        #expect(!down.isUp)
        #expect(down.checks == 2)
        guard case .failed(.unexpectedReply(let received, let expected))? = down.lastResult else {
            Issue.record("expected an unexpected-reply failure, got \(down.lastResultText)")
            return
        }
        #expect(received == Array("-ERR ".utf8), "the first expect.count bytes of the reply")
        #expect(expected == Array("+PONG".utf8))
        #expect(down.lastResultText.hasPrefix("reply did not start with expected bytes"))
    }

    @Test("send/expect: a server that accepts and never answers times out and goes down")
    func silentServerTimesOut() async throws {
        let backend = try await LoopbackServer.start(.silent)
        defer { Task { try await backend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let check = Self.check(interval: .milliseconds(100), timeout: .milliseconds(150), fall: 2,
                               send: "PING\r\n", expect: "+PONG")
        let a = Self.target("a", port: backend.port, check)
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)

        try await whileRunning(checker) {
            #expect(await eventually { !recorder.all.isEmpty })
        }
        let down = try #require(recorder.of(a.id).first)
        #expect(down.checks == 2)
        #expect(down.lastResult == .failed(.replyTimeout(.milliseconds(150), received: 0)))
        #expect(down.lastResultText == "timeout after 150ms waiting for a reply")
        #expect(await eventually { backend.acceptedConnections >= 2 }, "the connects succeeded; the reply never came")
    }

    @Test("expect without send: a server greeting with the expected banner is up")
    func bannerIsUp() async throws {
        let backend = try await LoopbackServer.start(.banner(Array("220 mail.example ESMTP\r\n".utf8)))
        defer { Task { try await backend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: backend.port, Self.check(fall: 1, expect: "220 "))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)

        try await whileRunning(checker) {
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 3 })
        }
        #expect(checker.status(of: a.id)?.lastResult == .passed)
        #expect(recorder.all.isEmpty)
        #expect(backend.receivedBytes.isEmpty, "nothing was sent")
    }

    @Test("send/expect: a server that hangs up before answering goes down")
    func hangUpGoesDown() async throws {
        let backend = try await LoopbackServer.start(.hangUp)
        defer { Task { try await backend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: backend.port, Self.check(fall: 1, expect: "220 "))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)

        try await whileRunning(checker) {
            #expect(await eventually { !recorder.all.isEmpty })
        }
        let down = try #require(recorder.of(a.id).first)
        #expect(down.lastResult == .failed(.closedBeforeReply(received: 0, expected: 4)))
    }

    @Test("a reload keeps an unchanged server's state and stops checking a removed one")
    func reloadKeepsUnchangedAndDropsRemoved() async throws {
        let closed = try await LoopbackServer.closedPorts(1)[0]
        let removedBackend = try await LoopbackServer.start(.silent)
        let addedBackend = try await LoopbackServer.start(.silent)
        defer { Task { try await removedBackend.stop(); try await addedBackend.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: closed, Self.check(fall: 2))
        let b = Self.target("b", port: removedBackend.port)
        let c = Self.target("c", port: addedBackend.port)
        let checker = HealthChecker(targets: [a, b], logger: logger, onChange: recorder.handler)

        try await whileRunning(checker) {
            #expect(await eventually { checker.status(of: a.id)?.isUp == false })
            #expect(await eventually { (checker.status(of: b.id)?.checks ?? 0) >= 2 })
            let aBefore = try #require(checker.status(of: a.id))

            checker.update(targets: [a, c])

            // a: same id, address and check: still down, its count of checks carries on.
            let aAfter = try #require(checker.status(of: a.id))
            #expect(!aAfter.isUp)
            #expect(aAfter.checks >= aBefore.checks)
            // b: gone from the view at once; c: new, up, checked soon.
            #expect(checker.status(of: b.id) == nil)
            #expect(Set(checker.allStatuses().keys) == [a.id, c.id])
            #expect(await eventually { (checker.status(of: c.id)?.checks ?? 0) >= 3 })
            #expect(checker.status(of: c.id)?.isUp == true)
            #expect((checker.status(of: a.id)?.checks ?? 0) > aBefore.checks, "a is still being checked")

            // b's backend sees no more checks. A check in flight at the reload may still be
            // accepted a moment later: let that settle, then count.
            try await Task.sleep(for: .milliseconds(150))
            let seen = removedBackend.acceptedConnections
            try await Task.sleep(for: .milliseconds(400))  // 8 intervals
            #expect(removedBackend.acceptedConnections == seen)
        }
        #expect(recorder.of(a.id).count == 1, "a went down once and the reload did not reset it")
        #expect(recorder.of(b.id).isEmpty && recorder.of(c.id).isEmpty)
    }

    @Test("a reload that changes only a down server's check settings keeps it down (no client is sent to it) until rise checks pass")
    func reloadKeepsVerdictOfRecheckedTarget() async throws {
        let closed = try await LoopbackServer.closedPorts(1)[0]
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: closed, Self.check(fall: 1))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)
        try await whileRunning(checker) {
            #expect(await eventually { checker.status(of: a.id)?.isUp == false })
            let rechecked = Self.target("a", port: closed, Self.check(timeout: .milliseconds(300), fall: 1))
            checker.update(targets: [rechecked])
            let after = try #require(checker.status(of: a.id))
            #expect(!after.isUp && after.checks == 0, "\(after)")
            #expect(after.lastResult == .failed(.connectRefused), "why it is down stays readable: \(after)")
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 3 })
            #expect(checker.status(of: a.id)?.isUp == false)
        }
        let reports = recorder.of(a.id).map(\.isUp)
        #expect(!reports.isEmpty && !reports.contains(true), "down, said again under the new check, never revived by the reload: \(reports)")
    }

    @Test("health_check_port: checks connect there, not to the server's own port, and the log names both")
    func checksUseTheCheckPort() async throws {
        let checkPort = try await LoopbackServer.start(.silent)
        defer { Task { try await checkPort.stop() } }
        let closed = try await LoopbackServer.closedPorts(2)
        let recorder = TransitionRecorder()
        let (logger, lines) = CapturingLogHandler.logger()
        // a: its own port is closed, its check port listens. b: the other way round.
        let a = HealthTarget(id: ServerID(pool: Self.pool, name: "a"), address: .loopback(closed[0]),
                             check: Self.check(fall: 1), checkPort: UInt16(checkPort.port))
        let b = HealthTarget(id: ServerID(pool: Self.pool, name: "b"), address: .loopback(checkPort.port),
                             check: Self.check(fall: 1), checkPort: UInt16(closed[1]))
        #expect(a.addressText == "127.0.0.1:\(closed[0]) (checks on port \(checkPort.port))")
        #expect(a.description == "web_pool/a (127.0.0.1:\(closed[0]), checks on port \(checkPort.port))")
        let checker = HealthChecker(targets: [a, b], logger: logger, onChange: recorder.handler)
        try await whileRunning(checker) {
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 3 && recorder.of(b.id).count == 1 })
        }
        #expect(checker.status(of: a.id)?.isUp == true && recorder.of(a.id).isEmpty, "a's checks reach its check port")
        #expect(recorder.of(b.id).first?.lastResult == .failed(.connectRefused), "b's checks go to its closed check port")
        #expect(checkPort.acceptedConnections >= 3, "only a's checks land on the listening port")
        #expect(lines.all.contains { $0.level == .notice && $0.message == "server web_pool/b at 127.0.0.1:\(checkPort.port) "
                                     + "(checks on port \(closed[1])) is down: connect refused (1 failed check)" },
                "\(lines.all.map(\.message))")
    }

    @Test("a reload that changes only a down server's check port keeps it down until rise checks pass there")
    func reloadMovingTheCheckPortKeepsVerdict() async throws {
        let closed = try await LoopbackServer.closedPorts(1)[0]
        let checkPort = try await LoopbackServer.start(.silent)
        defer { Task { try await checkPort.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: closed, Self.check(rise: 3, fall: 1))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)
        try await whileRunning(checker) {
            #expect(await eventually { checker.status(of: a.id)?.isUp == false })
            checker.update(targets: [HealthTarget(id: a.id, address: a.address, check: a.check, checkPort: UInt16(checkPort.port))])
            #expect(checker.status(of: a.id)?.isUp == false, "the same server: still down at the reload")
            #expect(await eventually { checker.status(of: a.id)?.isUp == true })
        }
        let reports = recorder.of(a.id)
        #expect(reports.map(\.isUp) == [false, false, true], "down, said again, then up: \(reports)")
        #expect(reports.last?.consecutiveSuccesses == 3, "up after rise passed checks on the new port, not at the reload")
    }

    @Test("a reload that moves only a down server's traffic port, its checks staying on the same health_check_port, keeps it down")
    func reloadMovingTheTrafficPortKeepsVerdict() async throws {
        let closed = try await LoopbackServer.closedPorts(3)
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = HealthTarget(id: ServerID(pool: Self.pool, name: "a"), address: .loopback(closed[0]), check: Self.check(fall: 1),
                             checkPort: UInt16(closed[2]))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)
        try await whileRunning(checker) {
            #expect(await eventually { checker.status(of: a.id)?.isUp == false })
            checker.update(targets: [HealthTarget(id: a.id, address: .loopback(closed[1]), check: a.check, checkPort: UInt16(closed[2]))])
            #expect(checker.status(of: a.id)?.isUp == false, "the same machine, checked at the same place: still down")
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 2 })
        }
        #expect(!recorder.of(a.id).contains { $0.isUp }, "never revived: \(recorder.of(a.id))")
    }

    @Test("a reload that moves a down server to a new address checks it afresh, starting up, and says so")
    func reloadRestartsChangedTarget() async throws {
        let closed = try await LoopbackServer.closedPorts(1)[0]
        let newHome = try await LoopbackServer.start(.silent)
        defer { Task { try await newHome.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: closed, Self.check(fall: 1))
        let checker = HealthChecker(targets: [a], logger: logger, onChange: recorder.handler)

        try await whileRunning(checker) {
            #expect(await eventually { checker.status(of: a.id)?.isUp == false })
            let moved = Self.target("a", port: newHome.port, Self.check(fall: 1))
            checker.update(targets: [moved])
            let fresh = try #require(checker.status(of: a.id))
            #expect(fresh.isUp && fresh.checks == 0 && fresh.lastResult == nil)
            #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 2 })
        }
        #expect(checker.status(of: a.id)?.isUp == true)
        #expect(checker.status(of: a.id)?.lastResult == .passed)
        #expect(await eventually { newHome.acceptedConnections >= 2 })
        // Down at the old address, then up again by the restart: the runtime hears both.
        #expect(recorder.of(a.id).map(\.isUp) == [false, true])
        #expect(recorder.of(a.id).last == .unchecked)
    }

    @Test("200 servers, mostly closed ports and some silent ones, are all checked within one interval")
    func manyTargetsAreCheckedConcurrently() async throws {
        let closed = try await LoopbackServer.closedPorts(160)
        let silent = try await LoopbackServer.start(.silent)
        defer { Task { try await silent.stop() } }
        let recorder = TransitionRecorder()
        let (logger, _) = CapturingLogHandler.logger()
        // A silent server costs a whole 1 s timeout per check: checked one after another, the 40
        // silent ones alone would take 40 s. Concurrently, all 200 finish within the 3 s interval.
        let interval = Duration.seconds(3)
        let plain = Self.check(interval: interval, timeout: .seconds(1), fall: 1)
        let expecting = Self.check(interval: interval, timeout: .seconds(1), fall: 1, send: "PING\r\n", expect: "+PONG")
        let targets = closed.enumerated().map { Self.target("closed\($0.offset)", port: $0.element, plain) }
            + (0..<40).map { Self.target("silent\($0)", port: silent.port, expecting) }
        let checker = HealthChecker(targets: targets, logger: logger, onChange: recorder.handler)

        let clock = ContinuousClock()
        let started = clock.now
        let elapsed = try await whileRunning(checker) {
            #expect(await eventually(within: .seconds(30)) {
                checker.allStatuses().values.allSatisfy { $0.checks >= 1 }
            })
            return clock.now - started
        }
        #expect(elapsed < interval, "every first check completed within one interval (took \(elapsed))")
        let statuses = checker.allStatuses()
        #expect(statuses.count == 200)
        #expect(statuses.values.allSatisfy { !$0.isUp })
        #expect(targets.prefix(160).allSatisfy { statuses[$0.id]?.lastResult == .failed(.connectRefused) })
        // A silent server fails by timeout: waiting for the reply, or, when the machine is so
        // loaded that 40 connects queue up, already while connecting.
        #expect(targets.suffix(40).allSatisfy {
            switch statuses[$0.id]?.lastResult {
            case .failed(.replyTimeout(.seconds(1), received: 0)), .failed(.connectTimeout(.seconds(1))): true
            default: false
            }
        }, "\(targets.suffix(40).map { statuses[$0.id]?.lastResultText ?? "-" })")
        #expect(recorder.all.count == 200, "one down transition each")
        #expect(await eventually { silent.acceptedConnections >= 40 })
    }

    @Test("in a service group, graceful shutdown ends run() and stops the checks")
    func gracefulShutdownStopsChecks() async throws {
        let backend = try await LoopbackServer.start(.silent)
        defer { Task { try await backend.stop() } }
        let (logger, _) = CapturingLogHandler.logger()
        let a = Self.target("a", port: backend.port)
        let checker = HealthChecker(targets: [a], logger: logger)
        let group = ServiceGroup(configuration: .init(services: [checker], logger: logger))

        let running = Task { try await group.run() }
        #expect(await eventually { (checker.status(of: a.id)?.checks ?? 0) >= 2 })
        await group.triggerGracefulShutdown()
        try await running.value

        // The last check's connection may be accepted a moment after it completed: settle first.
        try await Task.sleep(for: .milliseconds(150))
        let seen = backend.acceptedConnections
        try await Task.sleep(for: .milliseconds(300))  // 6 intervals
        #expect(backend.acceptedConnections == seen, "no check after shutdown")
        await #expect(throws: HealthCheckerError.alreadyRun) { try await checker.run() }
    }

    @Test("the checker follows a config: one target per server, with its pool's check")
    func targetsFromConfig() throws {
        let fast = Self.check(interval: .milliseconds(100))
        let config = ConveyConfig(
            frontends: [],
            pools: [
                PoolConfig(name: "web", health: fast, servers: [
                    ServerConfig(name: "b", address: try Endpoint(parsing: "10.77.0.22:80")),
                    ServerConfig(name: "a", address: try Endpoint(parsing: "10.77.0.21:80"), weight: 0),
                ]),
                PoolConfig(name: "db", servers: [ServerConfig(name: "p", address: try Endpoint(parsing: "10.77.0.31:5432"))]),
            ])
        let targets = HealthTarget.targets(for: config)
        #expect(targets.map(\.id.description) == ["db/p", "web/a", "web/b"])
        #expect(targets.map(\.address.description) == ["10.77.0.31:5432", "10.77.0.21:80", "10.77.0.22:80"])
        #expect(targets[1].check == fast)
        #expect(targets[0].check == HealthCheckConfig())
    }
}
