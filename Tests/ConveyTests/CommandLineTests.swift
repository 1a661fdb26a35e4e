import Foundation
import Synchronization
import Testing

/// Runs the built `convey` binary and collects its exit status and output.
struct ConveyRun {
    var status: Int32
    var stdout: String
    var stderr: String

    static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)  // Tests/ConveyTests/CommandLineTests.swift
        return parts.joined(separator: "/")
    }()

    /// The `convey` built beside this test bundle.
    static let binary: String = {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while dir.path != "/" {
            let candidate = dir.appendingPathComponent("convey").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return root + "/.build/debug/convey"
    }()

    /// Runs convey with `arguments`; with `wrapper`, runs `wrapper + [convey] + arguments`.
    init(_ arguments: [String], wrapper: [String] = []) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: wrapper.first ?? Self.binary)
        process.arguments = wrapper.isEmpty ? arguments : Array(wrapper.dropFirst()) + [Self.binary] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: Self.root)
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Both pipes at once: a child filling one while the other is read would block forever.
        let errData = Mutex(Data())
        let reader = Thread { errData.withLock { $0 = err.fileHandleForReading.readDataToEndOfFile() } }
        reader.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while reader.isExecuting || !reader.isFinished { usleep(1000) }
        let errBytes = errData.withLock { $0 }
        status = process.terminationStatus
        stdout = String(decoding: outData, as: UTF8.self)
        stderr = String(decoding: errBytes, as: UTF8.self)
    }
}

/// A configuration file in the temporary directory, named after the test and this process.
struct TemporaryConfig {
    let path: String

    init(_ name: String, _ text: String) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(getpid()).toml").path
        try write(text)
    }

    func write(_ text: String) throws { try text.write(toFile: path, atomically: true, encoding: .utf8) }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

@Suite("convey --check, as an operator runs it")
struct CommandLineTests {
    @Test("every shipped example validates and prints its resolved configuration",
          arguments: ["examples/seed-style.toml", "examples/proxy.toml", "examples/dsr.toml"])
    func examplesValidate(file: String) throws {
        let run = try ConveyRun(["--check", "--config", file])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("# \(file): valid"))
        #expect(run.stdout.contains("[frontends."))
        #expect(run.stdout.contains("health_check_timeout = "))  // defaults filled in
    }

    @Test("--check without a mode flag on a file that names an AF_XDP interface says it checked proxy mode")
    func checkSaysWhichModeItChecked() throws {
        let text = try String(contentsOfFile: "examples/dsr.toml", encoding: .utf8)
            .replacingOccurrences(of: "[xdp]\n", with: "[xdp]\niface = \"eth0\"\n")
        try #require(text.contains("iface = \"eth0\""))
        let file = try TemporaryConfig("convey-check-mode", text)
        defer { file.remove() }
        let proxy = try ConveyRun(["--check", "--config", file.path])
        #expect(proxy.status == 0, "\(proxy.stderr)")
        #expect(proxy.stdout.contains("checked as proxy mode: pass --dsr or --passthrough"), "\(proxy.stdout)")
        let dsr = try ConveyRun(["--check", "--dsr", "--config", file.path])
        #expect(dsr.stdout.contains("valid (mode: dsr)") && !dsr.stdout.contains("checked as proxy mode"), "\(dsr.stdout)\(dsr.stderr)")
        // What the mode leaves unused, and what it resolves only at start, is said so.
        #expect(dsr.stdout.contains("log_connections = false  # proxy mode only"))
        #expect(dsr.stdout.contains("nat_ports = \"\"  # passthrough, at start: the ports above the kernel's ip_local_port_range"))
        #expect(!proxy.stdout.contains("# proxy mode only"))
    }

    @Test("--config=FILE works like --config FILE")
    func equalsForm() throws {
        let run = try ConveyRun(["--check", "--config=examples/proxy.toml"])
        #expect(run.status == 0)
        #expect(run.stdout.contains("listen_addr = \"127.0.0.1:8080\""))
    }

    @Test("each bad file is rejected with exit 2 and a message naming file, line and key",
          arguments: [
            ("misplaced-servers.toml", "misplaced-servers.toml:5: frontends.tcp_80.backend: pool 'tcp80_out' has no servers"),
            ("syntax-error.toml", "syntax-error.toml:3: TOML syntax error"),
            ("bad-address.toml", "bad-address.toml:7: backends.pool.servers.a.addr: '10.0.0.300' is not an IPv4 or IPv6 address"),
            ("missing-pool.toml", "missing-pool.toml:3: frontends.web.backend: pool 'nope' does not exist"),
            ("bad-weight.toml", "bad-weight.toml:8: backends.pool.servers.a.weight: 5000 is out of range (0-1000)"),
            ("unknown-key.toml", "unknown-key.toml:4: frontends.web.balanse: warning: unknown key: did you mean balance?\n"
                + "--check fails on warnings too; convey itself would start and log them"),
          ])
    func badFiles(file: String, expected: String) throws {
        let run = try ConveyRun(["--check", "--config", "Tests/ConveyTests/configs/" + file])
        #expect(run.status == 2)
        #expect(run.stderr.contains(expected), "stderr was: \(run.stderr)")
        #expect(run.stdout.isEmpty)
    }

    @Test("passthrough NAT ports that overlap the kernel's ephemeral ports are refused with the fix")
    func natOverlap() throws {
        let range = try String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)
            .split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        let reserved = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_reserved_ports", encoding: .utf8)) ?? ""
        let run = try ConveyRun(["--check", "--passthrough", "--config", "Tests/ConveyTests/configs/nat-overlap.toml"])
        let overlaps = range.count == 2 && range[0] <= 40000 && range[1] >= 20000
        if overlaps && reserved.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            #expect(run.status == 2)
            #expect(run.stderr.contains("nat-overlap.toml:11: xdp.nat_ports: NAT ports 20000-40000 overlap the kernel's ephemeral ports"))
            #expect(run.stderr.contains("ip_local_reserved_ports=20000-40000"))
        } else {
            #expect(run.status == 0, "no overlap on this host: \(run.stderr)")
        }
        // Proxy mode does not use NAT ports: the same file is fine there.
        #expect(try ConveyRun(["--check", "--config", "Tests/ConveyTests/configs/nat-overlap.toml"]).status == 0)
    }

    @Test("passthrough: a VIP whose family has no NAT address is refused with the fix; one address per family is fine")
    func natFamily() throws {
        let file = "Tests/ConveyTests/configs/nat-family.toml"
        let run = try ConveyRun(["--check", "--passthrough", "--config", file])
        #expect(run.status == 2)
        #expect(run.stderr.contains("nat-family.toml:6: frontends.web6.listen_addr: [fd77::100]:80 is IPv6, but passthrough has no IPv6 NAT "
                                    + "address (nat_addr is 10.77.0.2); add one: [xdp] nat_addr = [\"10.77.0.2\", \"<IPv6 address>\"]"),
                "stderr was: \(run.stderr)")
        // DSR rewrites no address: the same file is fine there.
        #expect(try ConveyRun(["--check", "--dsr", "--config", file]).status == 0)

        let dual = try String(contentsOfFile: file, encoding: .utf8)
            .replacingOccurrences(of: "nat_addr = \"10.77.0.2\"", with: "nat_addr = [\"10.77.0.2\", \"fd77::2\"]")
        let config = try TemporaryConfig("convey-nat-dual", dual)
        defer { config.remove() }
        let path = config.path
        let ok = try ConveyRun(["--check", "--passthrough", "--config", path])
        #expect(ok.status == 0, "stderr was: \(ok.stderr)")
        #expect(ok.stdout.contains("nat_addr = [\"10.77.0.2\", \"fd77::2\"]"), "stdout was: \(ok.stdout)")
    }

    @Test("passthrough: a VIP on the NAT address inside nat_ports is refused (replies would take its packets); outside the range it is fine")
    func vipInsideNATRange() throws {
        let text = try String(contentsOfFile: "Tests/ConveyTests/configs/nat-family.toml", encoding: .utf8)
            .replacingOccurrences(of: "listen_addr = \"10.77.0.100:80\"", with: "listen_addr = \"10.77.0.2:61500\"")
            .replacingOccurrences(of: "nat_addr = \"10.77.0.2\"", with: "nat_addr = [\"10.77.0.2\", \"fd77::2\"]")
        let config = try TemporaryConfig("convey-nat-clash", text)
        defer { config.remove() }
        let path = config.path
        let run = try ConveyRun(["--check", "--passthrough", "--config", path])
        #expect(run.status == 2)
        #expect(run.stderr.contains(":2: frontends.web.listen_addr: 10.77.0.2:61500 is on the NAT address 10.77.0.2 inside nat_ports "
                                    + "61000-61999"), "stderr was: \(run.stderr)")
        let outside = text.replacingOccurrences(of: "10.77.0.2:61500", with: "10.77.0.2:8080")
        try config.write(outside)
        let ok = try ConveyRun(["--check", "--passthrough", "--config", path])
        #expect(ok.status == 0, "stderr was: \(ok.stderr)")
    }

    @Test("the AF_XDP modes refuse more VIPs (1024) or backend slots (4096 frontend × server pairs) than they hold")
    func xdpCapacity() throws {
        func file(frontends: Int, servers: Int) -> String {
            var text = ""
            for i in 0..<frontends {
                text += "[frontends.f\(i)]\nlisten_addr = \"10.78.\(i / 250).\(i % 250 + 1):80\"\nbackend = \"pool\"\n"
            }
            text += "[backends.pool]\n"
            for j in 0..<servers { text += "  [backends.pool.servers.s\(j)]\n  addr = \"10.77.1.\(j):80\"\n" }
            return text + "[xdp]\niface = \"convey-none0\"\n"
        }
        let config = try TemporaryConfig("convey-capacity", file(frontends: 70, servers: 60))
        defer { config.remove() }
        let path = config.path
        let slots = try ConveyRun(["--check", "--dsr", "--config", path])
        #expect(slots.status == 2)
        #expect(slots.stderr.contains("frontends: 4200 backend slots (one per frontend and server of its pool): the dsr mode has 4096"),
                "stderr was: \(slots.stderr)")
        try config.write(file(frontends: 1025, servers: 1))
        let vips = try ConveyRun(["--check", "--dsr", "--config", path])
        #expect(vips.status == 2)
        #expect(vips.stderr.contains("frontends: 1025 VIPs: the dsr mode steers at most 1024"), "stderr was: \(vips.stderr.prefix(500))")
        try config.write(file(frontends: 64, servers: 64))
        #expect(try ConveyRun(["--check", "--dsr", "--config", path]).status == 0, "4096 slots fit")
        #expect(try ConveyRun(["--check", "--config", path]).status == 0, "proxy mode has no such limits")
    }

    @Test("DSR: a server on another port than its frontend's VIP is refused (DSR rewrites no port); proxy mode takes it")
    func dsrPortMismatch() throws {
        let text = """
        [frontends.api]
        listen_addr = "10.77.0.101:80"
        backend = "pool"
        [backends.pool.servers.a]
        addr = "10.77.0.21:81"
        [xdp]
        iface = "convey-none0"
        """
        let config = try TemporaryConfig("convey-dsr-port", text)
        defer { config.remove() }
        let path = config.path
        let run = try ConveyRun(["--check", "--dsr", "--config", path])
        #expect(run.status == 2)
        #expect(run.stderr.contains(":5: backends.pool.servers.a.addr: port 81 differs from frontend 'api''s port 80: DSR does not rewrite ports"),
                "stderr was: \(run.stderr)")
        #expect(try ConveyRun(["--check", "--config", path]).status == 0)
    }

    @Test("proxy mode: a server on this host at a wildcard frontend's port is refused; the AF_XDP modes do not listen")
    func selfConnectionThroughWildcard() throws {
        let text = """
        [frontends.any]
        listen_addr = "0.0.0.0:28481"
        backend = "pool"
        [backends.pool.servers.loop]
        addr = "127.0.0.2:28481"
        """
        let config = try TemporaryConfig("convey-self", text)
        defer { config.remove() }
        let path = config.path
        let run = try ConveyRun(["--check", "--config", path])
        #expect(run.status == 2)
        #expect(run.stderr.contains(":5: backends.pool.servers.loop.addr: 127.0.0.2:28481 is this host, where frontend 'any' "
                                    + "listens on 0.0.0.0:28481: convey would connect to itself"), "stderr was: \(run.stderr)")
        let other = text.replacingOccurrences(of: "127.0.0.2:28481", with: "127.0.0.2:28482")
        try config.write(other)
        #expect(try ConveyRun(["--check", "--config", path]).status == 0)
    }

    @Test("the AF_XDP modes warn about proxy-mode-only settings (error_limit too, not max_connections), which --check fails on")
    func proxyOnlySettingsInXDPModes() throws {
        let text = """
        [frontends.api]
        listen_addr = "10.77.0.101:80"
        backend = "pool"
        proxy_protocol = "v2"
        max_connections = 100
        log_connections = true
        accept_proxy_protocol = true
        [backends.pool]
        error_limit = 3
        queue_timeout = 7
        max_queue = 20
        [backends.pool.servers.a]
        addr = "10.77.0.21:80"
        max_connections = 50
        """
        let config = try TemporaryConfig("convey-proxy-only", text)
        defer { config.remove() }
        let path = config.path
        let run = try ConveyRun(["--check", "--dsr", "--iface", "veth0", "--config", path])
        #expect(run.status == 2)
        #expect(run.stderr.contains(":4: frontends.api.proxy_protocol: warning: proxy mode only: the dsr mode forwards packets"),
                "stderr was: \(run.stderr)")
        #expect(run.stderr.contains(":6: frontends.api.log_connections: warning: proxy mode only"), "stderr was: \(run.stderr)")
        #expect(run.stderr.contains(":7: frontends.api.accept_proxy_protocol: warning: proxy mode only: the dsr mode reads no client bytes, so a PROXY header from a balancer in front goes on to the servers as it is"),
                "stderr was: \(run.stderr)")
        #expect(run.stderr.contains(":9: backends.pool.error_limit: warning: proxy mode only: the dsr mode makes no connections"),
                "stderr was: \(run.stderr)")
        #expect(run.stderr.contains(":10: backends.pool.queue_timeout: warning: proxy mode only: the dsr mode queues no client"),
                "stderr was: \(run.stderr)")
        #expect(run.stderr.contains(":11: backends.pool.max_queue: warning: proxy mode only: the dsr mode queues no client"),
                "stderr was: \(run.stderr)")
        // max_connections is every mode's (the AF_XDP modes count flows per frontend and server).
        #expect(!run.stderr.contains("max_connections"), "stderr was: \(run.stderr)")
        #expect(try ConveyRun(["--check", "--config", path]).status == 0)
    }

    /// The resolved configuration is TOML that reads back as the same configuration: names
    /// that need quotes keep them, and control characters stay escaped.
    @Test("--check prints a file that --check reads back to the same configuration")
    func resolvedConfigRoundTrips() throws {
        let text = #"""
        [frontends."we\"b.x y"]
        listen_addr = "127.0.0.1:18080"
        backend = "pool é"
        proxy_protocol = "v1"
        accept_proxy_protocol = true
        proxy_protocol_peers = ["10.1.0.0/16"]
        tcp_keepalive = 30
        [backends."pool é"]
        health_check_send = "PING\r\n\t\u0001"
        health_check_expect = "+PONG\\"
        queue_timeout = 4.5
        [backends."pool é".servers."a.1"]
        addr = "[::1]:9001"
        max_connections = 3
        health_check_port = 8081
        [backends.other]
        health_check_port = 8080
        health_check_http = "/health?x=1"
        health_check_http_status = 204
        [backends.other.servers.b]
        addr = "[::1]:9002"
        [backends.other.servers.c]
        addr = "localhost:9003"
        """#
        let first = try TemporaryConfig("convey-roundtrip", text)
        defer { first.remove() }
        let run = try ConveyRun(["--check", "--config", first.path])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains(#"[frontends."we\"b.x y"]"#))
        #expect(run.stdout.contains(#"health_check_send = "PING\r\n\t\u0001""#))
        #expect(run.stdout.contains(#"# health_check_proxy_protocol = "v1"  (unset: what the pool's frontends send; none on a health_check_port)"#))
        #expect(run.stdout.contains("accept_proxy_protocol = true\nproxy_protocol_peers = [\"10.1.0.0/16\"]\n"), "\(run.stdout)")
        #expect(run.stdout.contains("queue_timeout = 4.5\n") && run.stdout.contains("  max_connections = 3\n"), "\(run.stdout)")
        #expect(run.stdout.contains("# queue_timeout = 2  (no server of the pool sets max_connections"), "\(run.stdout)")
        #expect(run.stdout.contains("  health_check_port = 8081  # checks there send no PROXY header\n"), "\(run.stdout)")
        #expect(run.stdout.contains("# health_check_port: each server's own port\n"), "\(run.stdout)")
        #expect(run.stdout.contains("health_check_port = 8080\n"), "\(run.stdout)")
        #expect(run.stdout.contains("\ntcp_keepalive = 30\n"), "\(run.stdout)")
        #expect(run.stdout.contains("  addr = \"localhost:9003\"  # resolves to "), "the name, read again on a reload: \(run.stdout)")
        #expect(run.stdout.contains("health_check_http = \"/health?x=1\"\n# health_check_http_host: the address checked\n"
                                    + "health_check_http_status = \"204\"\n"), "\(run.stdout)")
        let second = try TemporaryConfig("convey-roundtrip-2", run.stdout)
        defer { second.remove() }
        let again = try ConveyRun(["--check", "--config", second.path])
        #expect(again.status == 0, "\(again.stderr)")
        let body = { (s: String) in s.split(separator: "\n").dropFirst().joined(separator: "\n") }
        #expect(body(again.stdout) == body(run.stdout))
    }

    @Test("an AF_XDP mode without the privileges it needs says to run it as root, before touching anything")
    func xdpNeedsPrivileges() throws {
        // Root without any capability (setpriv, util-linux): what an unprivileged user has.
        let run = try ConveyRun(["--dsr", "--iface", "convey-none0", "--config", "examples/dsr.toml"],
                                wrapper: ["/usr/bin/setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"])
        #expect(run.status == 1)
        #expect(run.stderr.contains("the dsr mode needs root (or CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF for this process): "
                                    + "run it with sudo"), "stderr was: \(run.stderr)")
    }

    @Test("a server name that does not resolve stops the start with exit status 1 (systemd restarts it), not 2 (a wrong file)")
    func unresolvableNameExitsOne() throws {
        let file = try TemporaryConfig("convey-unresolvable", """
            [frontends.web]
            listen_addr = "127.0.0.1:18099"
            backend = "pool"
            [backends.pool.servers.a]
            addr = "convey-test.invalid:80"
            [stats]
            port = 0
            """)
        defer { file.remove() }
        let run = try ConveyRun(["--config", file.path])
        #expect(run.status == 1, "\(run.stderr)")
        #expect(run.stderr.contains(":5: backends.pool.servers.a.addr: 'convey-test.invalid' does not resolve: "), "\(run.stderr)")
        #expect(run.stderr.contains("(exit status 1: the file may be right once the names resolve)"))
    }

    @Test("an AF_XDP mode without an interface is refused, saying how to name one")
    func xdpNeedsInterface() throws {
        let run = try ConveyRun(["--check", "--dsr", "--config", "examples/dsr.toml"])
        #expect(run.status == 2)
        #expect(run.stderr.contains("dsr.toml:27: xdp.iface: dsr mode needs an interface: pass --iface NAME or set [xdp] iface"))
        #expect(try ConveyRun(["--check", "--dsr", "--iface", "veth0", "--config", "examples/dsr.toml"]).status == 0)
    }

    @Test("bad usage exits 2 with a message; --help and --version exit 0")
    func usage() throws {
        let both = try ConveyRun(["--passthrough", "--dsr", "--check", "--config", "examples/dsr.toml"])
        #expect(both.status == 2)
        #expect(both.stderr.contains("--passthrough and --dsr exclude each other"))
        let unknown = try ConveyRun(["--frobnicate"])
        #expect(unknown.status == 2)
        #expect(unknown.stderr.contains("frobnicate"))
        let help = try ConveyRun(["--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("--passthrough") && help.stdout.contains("--check"))
        for flag in ["-v", "--version"] {
            let version = try ConveyRun([flag])
            #expect(version.status == 0)
            #expect(version.stdout.hasPrefix("convey "))
        }
    }

    @Test("a missing config file is a configuration error (exit 2) naming the file")
    func missingFile() throws {
        let run = try ConveyRun(["--check", "--config", "does-not-exist.toml"])
        #expect(run.status == 2)
        #expect(run.stderr.contains("does-not-exist.toml: cannot read"))
    }
}
