import Foundation
import Glibc
import LabSupport
import Testing

/// convey end to end: real kernel TCP from a client namespace through `convey --dsr` or
/// `convey --passthrough` (the real binary, the real XDP program), or proxy mode, to backends
/// in their own namespaces, bytes checked end to end. One test at a time.
@Suite("convey end to end, in a namespace lab", .serialized)
struct EndToEndLabTests {
    @Test("DSR: requests spread by Maglev, 16 MiB byte-exact, backends see the client, the balancer never sees a reply, XDP gone after SIGTERM")
    func dsrEndToEnd() throws {
        guard try labAvailable("dsrEndToEnd") else { return }
        try ConveyLab.with(mode: "dsr", config: labConfig()) { lab in
            // A counter on the balancer's ingress of any packet coming *from* the VIP: replies.
            _ = try lab.lab.check("lb", ["nft", "add table netdev replies; add chain netdev replies in { type filter hook ingress device veth0 priority 0; }; add rule netdev replies in ip saddr 10.77.0.100 tcp sport 80 counter"])

            let answers = try lab.fromClient { try (0..<30).map { _ in try LabClient.who() } }
            let names = Set(answers.map(\.name))
            #expect(names.count >= 2, "Maglev over 30 distinct flows used \(names)")
            #expect(answers.allSatisfy { $0.peer == "10.77.0.10" }, "DSR backends see the client's own address")

            let payload = randomBytes(16 << 20, seed: 1)
            let back = try lab.fromClient { try LabClient.echo(payload, timeout: 20) }
            #expect(back.count == payload.count)
            #expect(back == payload, "16 MiB echoed byte-exact through DSR")

            let replies = try lab.lab.check("lb", ["nft", "list chain netdev replies in"])
            #expect(replies.contains("counter packets 0 bytes 0"), "the balancer saw replies: \(replies)")

            let totals = try lab.forwarderTotals()
            #expect((totals["tx_packets"] as? Int ?? 0) > 10_000, "\(totals)")
            let stats = try lab.stats()
            #expect(stats["mode"] as? String == "dsr")
            // The seed's counters keep their meaning: flows (connections) and client→server bytes.
            let counted = waitUntil(seconds: 3) {
                let s = try? lab.stats()
                return s?["total_connections"] as? Int ?? 0 >= 31 && s?["total_bytes_tx"] as? Int ?? 0 >= 16 << 20
            }
            #expect(counted, "total_connections and total_bytes_tx count the DSR flows: \(String(describing: try? lab.stats()["total_connections"]))")

            #expect(lab.stopConvey() == 0, "SIGTERM ends convey with status 0")
            #expect(try !lab.balancerHasXDP(), "the XDP program is detached on exit")
        }
    }

    @Test("Passthrough: exact weights, 16 MiB byte-exact, 200 concurrent connections, backends see the NAT address; /flows shows a held one with its NAT address and port")
    func passthroughEndToEnd() throws {
        guard try labAvailable("passthroughEndToEnd") else { return }
        try ConveyLab.with(mode: "passthrough", config: labConfig(weights: [2, 1, 1], balance: "wrr")) { lab in
            let answers = try lab.fromClient { try (0..<40).map { _ in try LabClient.who() } }
            let counts = Dictionary(grouping: answers, by: \.name).mapValues(\.count)
            #expect(counts == ["b1": 20, "b2": 10, "b3": 10], "smooth WRR 2:1:1 over 40 connections")
            #expect(answers.allSatisfy { $0.peer == "10.77.0.2" }, "passthrough backends see the NAT address")

            let payload = randomBytes(16 << 20, seed: 2)
            let back = try lab.fromClient { try LabClient.echo(payload, timeout: 20) }
            #expect(back == payload, "16 MiB echoed byte-exact through passthrough NAT")

            // 200 connections open at once, then each asks who it reached.
            let names = try lab.fromClient {
                let clients = try (0..<200).map { _ in try LabClient(to: "10.77.0.100", port: 80) }
                for c in clients { try c.send("WHO\n") }
                return try clients.map { String(decoding: try $0.readToEnd(limit: 256), as: UTF8.self) }
            }
            #expect(names.allSatisfy { $0.hasPrefix("b") && $0.contains(" 10.77.0.2 ") }, "every one of 200 answered")
            #expect(Set(names.map { $0.prefix(2) }).count == 3)

            let stats = try lab.stats()
            #expect(stats["mode"] as? String == "passthrough")
            let dataplane = stats["dataplane"] as? [String: Any]
            // No nat_addr: the interface's IPv4 address (no IPv6 VIP, so its IPv6 ports stay the kernel's).
            #expect((dataplane?["nat"] as? [String: Any])?["addresses"] as? [String] == ["10.77.0.2"])

            // /flows lists a held connection with its server and the NAT address and port it left with.
            let held = try lab.fromClient { try LabClient.holding("ping", timeout: 3) }
            let text = try lab.lab.check("lb", ["curl", "-fsS", "--max-time", "5", "http://127.0.0.1:7000/flows?client=10.77.0.10"])
            let flows = (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["flows"] as? [[String: Any]] ?? []
            let established = flows.filter { $0["client"] as? String == "10.77.0.10:\(held.localPort)" }
            #expect(established.count == 1 && established.first?["state"] as? String == "established", "\(text)")
            #expect((established.first?["nat"] as? String)?.hasPrefix("10.77.0.2:") == true
                    && (established.first?["server"] as? String)?.hasPrefix("web_pool/b") == true
                    && established.first?["frontend"] as? String == "web", "\(text)")
            held.shutdownWrite()
            #expect(lab.stopConvey() == 0)
            #expect(try !lab.balancerHasXDP())
        }
    }

    @Test("Passthrough, dual stack: IPv4 and IPv6 VIPs at once, each family NATed from its own address (the interface's by default), byte-exact")
    func passthroughDualStack() throws {
        guard try labAvailable("passthroughDualStack") else { return }
        let v6 = """

            [frontends.web6]
            listen_addr = "[fd77::100]:80"
            backend = "web6_pool"
            balance = "wrr"

            [backends.web6_pool]
            health_check_interval = 0.5
            health_check_timeout = 0.4
            rise = 1
              [backends.web6_pool.servers.b1]
              addr = "[fd77::21]:80"
              [backends.web6_pool.servers.b2]
              addr = "[fd77::22]:80"

            """
        try ConveyLab.with(mode: "passthrough", backends: 2, config: v6 + labConfig(backends: 2, balance: "wrr")) { lab in
            let four = try lab.fromClient { try (0..<4).map { _ in try LabClient.who() } }
            let six = try lab.fromClient { try (0..<4).map { _ in try LabClient.who("fd77::100") } }
            #expect(four.allSatisfy { $0.peer == "10.77.0.2" }, "IPv4 flows leave from the IPv4 NAT address: \(four)")
            #expect(six.allSatisfy { $0.peer == "fd77::2" }, "IPv6 flows leave from the IPv6 NAT address: \(six)")
            #expect(Set(six.map(\.name)) == ["b1", "b2"], "wrr over the IPv6 pool")

            let payload = randomBytes(4 << 20, seed: 6)
            let back = try lab.fromClient { try LabClient.echo(payload, host: "fd77::100", timeout: 20) }
            #expect(back == payload, "4 MiB echoed byte-exact through IPv6 passthrough NAT")
            #expect(try lab.drops("no_backend") == 0)
            #expect(try lab.drops("unknown_reply") == 0)
            let nat = (try lab.stats()["dataplane"] as? [String: Any])?["nat"] as? [String: Any]
            #expect(nat?["addresses"] as? [String] == ["10.77.0.2", "fd77::2"])
            #expect(lab.stopConvey() == 0)
        }
    }

    @Test("Passthrough under load: a killed backend leaves selection after interval × fall, the others' flows continue; a weight change breaks no connection")
    func backendFailureAndReload() throws {
        guard try labAvailable("backendFailureAndReload") else { return }
        try ConveyLab.with(mode: "passthrough", config: labConfig(balance: "wrr")) { lab in
            // Six long-lived echo connections: two per backend (smooth WRR 1:1:1).
            let streams = try lab.fromClient {
                try (0..<6).map { _ -> LabClient in
                    let c = try LabClient(to: "10.77.0.100", port: 80, timeout: 3)
                    try c.send("ECHO\n")
                    return c
                }
            }
            func roundTrip(_ c: LabClient, _ seed: UInt64) -> Bool { c.echoes(randomBytes(64 << 10, seed: seed)) }
            #expect(streams.enumerated().allSatisfy { roundTrip($1, UInt64($0)) })

            lab.killBackend("b3")
            let start = Date()
            // interval 0.5 s × fall 2: b3 leaves selection after about a second.
            let left = waitUntil(seconds: 6) {
                let stats = try? lab.stats()
                let servers = (stats?["backends"] as? [String: Any])?["web_pool"] as? [String: Any]
                return (servers?["servers"] as? [String: Bool])?["10.77.0.23:80"] == false
            }
            #expect(left, "b3 marked down")
            #expect(Date().timeIntervalSince(start) < 4)
            usleep(200_000)  // the data plane adopts the new routes within 50 ms
            let after = try lab.fromClient { try (0..<20).map { _ in try LabClient.who().name } }
            #expect(!after.contains("b3") && after.count == 20, "no new connection goes to the dead backend: \(after)")
            let survivors = streams.enumerated().filter { roundTrip($1, 100 + UInt64($0)) }.map(\.element)
            #expect(survivors.count == 4, "the four connections to b1 and b2 continue unbroken")

            // Weights change under load: established connections stay, new ones follow 5:1.
            try lab.rewriteConfig(labConfig(weights: [5, 1, 1], balance: "wrr"))
            let applied = waitUntil(seconds: 5) {
                let stats = try? lab.stats()
                let detail = ((stats?["backends"] as? [String: Any])?["web_pool"] as? [String: Any])?["server_detail"] as? [String: Any]
                return (detail?["b1"] as? [String: Any])?["weight"] as? Int == 5
            }
            #expect(applied, "the new weights were applied")
            usleep(300_000)  // the data plane adopts new routes within 50 ms
            #expect(survivors.enumerated().allSatisfy { roundTrip($1, 200 + UInt64($0)) },
                    "a weight change breaks no established connection")
            let weighted = try lab.fromClient { try (0..<12).map { _ in try LabClient.who().name } }
            let counts = Dictionary(grouping: weighted, by: { $0 }).mapValues(\.count)
            #expect(counts["b1", default: 0] == 10 && counts["b2", default: 0] == 2, "5:1 between the live backends: \(counts)\n\(lab.convey?.output ?? "")")
            for s in survivors { s.shutdownWrite() }
            #expect(lab.stopConvey() == 0)
        }
    }

    @Test("Limits: NAT port exhaustion drops the SYN and counts it, ports return when flows end, flows expire")
    func natExhaustionAndExpiry() throws {
        guard try labAvailable("natExhaustionAndExpiry") else { return }
        try ConveyLab.with(mode: "passthrough", backends: 1,
                           config: labConfig(backends: 1, balance: "wrr", natPorts: "61000-61007",
                                             establishedTimeout: 4)) { lab in
            let outcome = try lab.fromClient { () -> (held: [LabClient], failed: Int) in
                var held: [LabClient] = []
                var failed = 0
                for _ in 0..<12 {
                    do {
                        let c = try LabClient(to: "10.77.0.100", port: 80, timeout: 0.5)
                        try c.send("ECHO\n")
                        held.append(c)
                    } catch { failed += 1 }
                }
                return (held, failed)
            }
            #expect(outcome.held.count == 8, "8 NAT ports, 8 connections")
            #expect(outcome.failed == 4)
            #expect(try lab.drops("no_nat_port") > 0)
            #expect(lab.convey?.isRunning == true, "exhaustion is not a crash")

            // Four connections end (FIN both ways): their ports go back to the worker, and new
            // connections get through again.
            for c in outcome.held.prefix(4) { c.shutdownWrite(); _ = try? c.readToEnd() }
            // A closed flow keeps its port for closing_timeout (2 s), then gives it back.
            var reached: String?
            _ = waitUntil(seconds: 8) {
                reached = try? lab.fromClient { try LabClient.who(timeout: 1).name }
                return reached != nil
            }
            #expect(reached == "b1", "ports of ended flows came back to their worker")

            // The other four stay idle past established_timeout (4 s): their flows expire.
            let expired = waitUntil(seconds: 12) {
                let totals = try? lab.forwarderTotals()
                return totals?["flows_active"] as? Int == 0 && (totals?["flows_expired"] as? Int ?? 0) >= 4
            }
            #expect(expired, "idle flows expire: \(String(describing: try? lab.forwarderTotals()))")
            withExtendedLifetime(outcome.held) {}
            #expect(lab.stopConvey() == 0)
        }
    }

    @Test("Limits: a full flow table drops new SYNs and counts them, evicts idle flows, and never crashes (DSR)")
    func flowTableCapacity() throws {
        guard try labAvailable("flowTableCapacity") else { return }
        try ConveyLab.with(mode: "dsr", backends: 1, config: labConfig(backends: 1, capacity: 4)) { lab in
            let opened = try lab.fromClient { () -> [LabClient] in
                var held: [LabClient] = []
                for _ in 0..<16 {
                    if let c = try? LabClient(to: "10.77.0.100", port: 80, timeout: 0.5) { held.append(c) }
                }
                return held
            }
            let totals = try lab.forwarderTotals()
            let full = (totals["drops"] as? [String: Any])?["table_full"] as? Int ?? 0
            #expect(opened.count < 16 && full > 0, "the cap holds: \(opened.count) opened, \(full) SYNs dropped")
            #expect(lab.convey?.isRunning == true)
            // After a second idle, the oldest flows may be evicted for new ones.
            usleep(1_500_000)
            let later = try lab.fromClient { try LabClient.who() }
            #expect(later.name == "b1")
            #expect(try (lab.forwarderTotals()["flows_evicted"] as? Int ?? 0) > 0)
            withExtendedLifetime(opened) {}
            #expect(lab.stopConvey() == 0)
        }
    }

    @Test("A foreign XDP program on the interface is refused with a message saying how to remove it; exit 1, nothing changed")
    func foreignProgramRefused() throws {
        guard try labAvailable("foreignProgramRefused") else { return }
        try Lab.with(backends: 1) { lab in
            let object = Lab.packageRoot + "/lab/.cache/xdp_pass.o"
            _ = try lab.check("lb", ["ip", "link", "set", "dev", "veth0", "xdpgeneric", "obj", object, "sec", "xdp"])
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(lab.prefix)-conf")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let path = directory.appendingPathComponent("convey.toml").path
            try labConfig(backends: 1).write(toFile: path, atomically: true, encoding: .utf8)
            let run = try lab.run("lb", [ConveyRun.binary, "--dsr", "--iface", "veth0", "--config", path])
            #expect(run.status == 1)
            let text = run.stdout + run.stderr
            // A generic-mode program: plain `xdp off` would leave it attached.
            #expect(text.contains("`ip link set dev veth0 xdpgeneric off`"), "the message says how to remove it: \(text)")
            #expect(try lab.check("lb", ["ip", "link", "show", "veth0"]).contains("xdp"), "the foreign program stays")
            _ = try lab.check("lb", ["ip", "link", "set", "dev", "veth0", "xdpgeneric", "off"])
            #expect(try !lab.check("lb", ["ip", "link", "show", "veth0"]).contains("xdp"), "the advice removes it")
        }
    }

    @Test("SIGTERM drains (DSR): an established connection keeps working, a new one is not placed, then exit 0 with XDP gone")
    func sigtermDrains() throws {
        guard try labAvailable("sigtermDrains") else { return }
        try ConveyLab.with(mode: "dsr", backends: 1, config: labConfig(backends: 1)) { lab in
            let held = try lab.fromClient { try LabClient(to: "10.77.0.100", port: 80, timeout: 5) }
            let convey = try #require(lab.convey)
            kill(convey.pid, SIGTERM)
            Thread.sleep(forTimeInterval: 0.5)
            #expect(convey.isRunning, "draining while a flow is open")
            #expect((try? lab.stats()) != nil, "/stats answers while the data plane drains")
            #expect((try? lab.fromClient { try LabClient.who(timeout: 1) }) == nil, "no new flow while draining")
            try held.send("ECHO\nstill here\n")
            held.shutdownWrite()
            #expect(String(decoding: try held.readToEnd(), as: UTF8.self) == "still here\n")
            #expect(convey.output.contains("draining"), "\(convey.output)")
            // The flow ends (closing_timeout 2 s in the lab), so convey exits well before drain_timeout.
            #expect(lab.stopConvey() == 0)
            #expect(try !lab.balancerHasXDP())
        }
    }

    @Test("SIGQUIT stops at once (DSR): an open connection is not waited for, exit 0 with XDP gone, and no error is logged")
    func sigquitStopsAtOnce() throws {
        guard try labAvailable("sigquitStopsAtOnce") else { return }
        try ConveyLab.with(mode: "dsr", backends: 1, config: labConfig(backends: 1)) { lab in
            let held = try lab.fromClient { try LabClient(to: "10.77.0.100", port: 80, timeout: 5) }
            try held.send("ECHO\nopen\n")
            let convey = try #require(lab.convey)
            let started = ContinuousClock.now
            // drain_timeout is 5 s in the lab: a drain would outlast the 4 s allowed here.
            #expect(convey.stop(SIGQUIT, seconds: 4) == 0, "\(convey.output)")
            #expect(ContinuousClock.now - started < .seconds(4))
            #expect(try !lab.balancerHasXDP())
            let output = convey.output
            #expect(output.contains("SIGQUIT: stopping at once"), "\(output)")
            let errors = output.split(separator: "\n").filter { $0.contains(" error ") || $0.contains(" critical ") }
            #expect(errors.isEmpty, "a deliberate stop logs no error: \(errors)")
        }
    }

    @Test("SIGTERM's drain (DSR) follows a reload that shortens drain_timeout: it ends then, not at the timeout it began with")
    func shutdownDrainFollowsAReload() throws {
        guard try labAvailable("shutdownDrainFollowsAReload") else { return }
        let long = labConfig(backends: 1).replacingOccurrences(of: "drain_timeout = 5", with: "drain_timeout = 60")
        try #require(long.contains("drain_timeout = 60"))
        try ConveyLab.with(mode: "dsr", backends: 1, config: long) { lab in
            let held = try lab.fromClient { try LabClient(to: "10.77.0.100", port: 80, timeout: 5) }
            try held.send("ECHO\nopen\n")
            let convey = try #require(lab.convey)
            kill(convey.pid, SIGTERM)
            #expect(waitUntil(seconds: 5) { convey.output.contains("draining") }, "\(convey.output)")
            try long.replacingOccurrences(of: "drain_timeout = 60", with: "drain_timeout = 1")
                .write(toFile: lab.configPath, atomically: true, encoding: .utf8)
            let reloaded = ContinuousClock.now
            kill(convey.pid, SIGHUP)
            #expect(waitUntil(seconds: 10) { convey.exitStatus != nil }, "still draining: \(convey.output)")
            #expect(convey.exitStatus == 0)
            #expect(ContinuousClock.now - reloaded < .seconds(10))
            #expect(try !lab.balancerHasXDP())
            #expect(convey.output.contains("drain over"), "\(convey.output)")
        }
    }

    @Test("A client sending with TX checksum offload on (veth): its SYNs are counted as unfinished_checksum and one error line names the fix; with the offload off it connects")
    func unfinishedChecksumsAreNamed() throws {
        guard try labAvailable("unfinishedChecksumsAreNamed") else { return }
        try ConveyLab.with(mode: "passthrough", backends: 1, config: labConfig(backends: 1)) { lab in
            // The client leaves its checksums to offload, and the bridge's port to the balancer
            // passes them on unfinished (as a container host's veth does by default).
            _ = try lab.lab.check("client", ["ethtool", "-K", "veth0", "tx", "on"])
            _ = try lab.lab.check("br", ["ethtool", "-K", "lb", "tx", "on"])
            #expect((try? lab.fromClient { try LabClient.who(timeout: 2) }) == nil, "no connection opens")
            #expect(try lab.drops("unfinished_checksum") >= 1)
            #expect(try lab.forwarderTotals()["flows_created"] as? Int == 0)
            let convey = try #require(lab.convey)
            // Logged once a few have come (a stray frame is no reason yet): try again until then.
            #expect(waitUntil(seconds: 15) {
                _ = try? lab.fromClient { try LabClient.who(timeout: 1) }
                return convey.output.contains("unfinished TCP checksums")
            }, "\(convey.output)")
            _ = try lab.lab.check("client", ["ethtool", "-K", "veth0", "tx", "off"])
            #expect(try lab.fromClient { try LabClient.who(timeout: 3) }.name == "b1")
            let lines = convey.output.split(separator: "\n").filter { $0.contains("unfinished TCP checksums") }
            #expect(lines.count == 1 && lines[0].contains("ethtool -K"), "logged once, with the fix: \(lines)")
        }
    }

    /// Opens a connection to the VIP and keeps it open, then, as a router on the way back
    /// would, sends the VIP an ICMP "fragmentation needed" quoting the backend's segment to
    /// this client (VIP:80 → client:port). Prints the client's port.
    static let tooBigClient = """
    import socket, struct, time
    def csum(b):
        if len(b) % 2: b += b"\\0"
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        while s >> 16: s = (s & 0xffff) + (s >> 16)
        return ~s & 0xffff
    vip = "10.77.0.100"
    s = socket.create_connection((vip, 80), timeout=5)
    s.sendall(b"ECHO\\nx")
    assert s.recv(1) == b"x"
    me, port = s.getsockname()
    quote = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1500, 1, 0x4000, 64, 6, 0, socket.inet_aton(vip), socket.inet_aton(me))
    quote = quote[:10] + struct.pack("!H", csum(quote)) + quote[12:]
    quote += struct.pack("!HHI", 80, port, 1)
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, 1280) + quote
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    raw.sendto(icmp, (vip, 0))
    print("sent", port, flush=True)
    time.sleep(20)
    """

    /// `Icmp: InDestUnreachs` of a lab host.
    static func destinationUnreachables(_ lab: ConveyLab, _ host: String) throws -> Int {
        let lines = try lab.lab.check(host, ["cat", "/proc/net/snmp"]).split(separator: "\n").filter { $0.hasPrefix("Icmp: ") }
        guard lines.count == 2, let i = lines[0].split(separator: " ").firstIndex(of: "InDestUnreachs") else { return -1 }
        return Int(lines[1].split(separator: " ")[i]) ?? -1
    }

    @Test("DSR: an ICMP \"fragmentation needed\" a router sends the VIP about a backend's segment reaches that backend (its path MTU discovery needs it), and only it")
    func tooBigReachesTheConnectionsBackend() throws {
        guard try labAvailable("tooBigReachesTheConnectionsBackend") else { return }
        try ConveyLab.with(mode: "dsr", config: labConfig(balance: "wrr")) { lab in
            let hosts = ["b1", "b2", "b3"]
            let before = try hosts.map { try Self.destinationUnreachables(lab, $0) }
            let client = try LabDaemon(lab: lab.lab, host: "client", ["python3", "-c", Self.tooBigClient], maxSeconds: 60)
            defer { client.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { client.output.contains("sent") }, "\(client.output)")
            let port = try #require(client.output.split(whereSeparator: \.isWhitespace).last.map(String.init))
            // The backend holding the connection: the one whose socket has the client's port.
            let holder = try #require(try hosts.first { host in
                try lab.lab.check(host, ["ss", "-Htn", "state", "established"])
                    .split(whereSeparator: \.isWhitespace).contains { $0.hasSuffix(":\(port)") }
            })
            #expect(waitUntil(seconds: 5) {
                ((try? Self.destinationUnreachables(lab, holder)) ?? 0) > before[hosts.firstIndex(of: holder)!]
            }, "the message never reached \(holder)")
            for (i, host) in hosts.enumerated() where host != holder {
                #expect(try Self.destinationUnreachables(lab, host) == before[i], "\(host) got it too")
            }
            #expect(try lab.forwarderTotals()["icmp_forwarded"] as? Int == 1)
            let steering = (try lab.stats()["dataplane"] as? [String: Any])?["steering"] as? [String: Any]
            #expect((steering?["redirected_icmp"] as? Int ?? 0) >= 1, "\(steering ?? [:])")
        }
    }

    /// Pipelines /stats requests on a connection with a tiny receive buffer and never reads:
    /// the server's response write stalls, and its graceful shutdown would wait for it.
    static let stuckStatsClient = """
    import socket, time
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", 7000))
    s.settimeout(5)
    try:
        for _ in range(3000):
            s.send(b"GET /stats HTTP/1.1\\r\\nHost: lb\\r\\n\\r\\n")
    except OSError:
        pass
    print("stuck", flush=True)
    time.sleep(60)
    """

    @Test("A /stats client that never reads its responses does not hold up a stop (SIGTERM or SIGQUIT): exit 0 with XDP gone",
          arguments: [SIGTERM, SIGQUIT])
    func stuckStatsClientDoesNotHoldTheStop(signal: Int32) throws {
        guard try labAvailable("stuckStatsClientDoesNotHoldTheStop") else { return }
        try ConveyLab.with(mode: "dsr", backends: 1, config: labConfig(backends: 1)) { lab in
            let client = try LabDaemon(lab: lab.lab, host: "lb", ["python3", "-c", Self.stuckStatsClient], maxSeconds: 90)
            defer { client.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { client.output.contains("stuck") }, "\(client.output)")
            let convey = try #require(lab.convey)
            let started = ContinuousClock.now
            #expect(convey.stop(signal, seconds: 8) == 0, "\(convey.output)")
            #expect(ContinuousClock.now - started < .seconds(8))
            #expect(try !lab.balancerHasXDP())
        }
    }

    @Test("Passthrough: a frontend a reload adds is steered and served at once; removed, its open connection goes on until drain_timeout, then its VIP goes back to the kernel")
    func frontendAddedAndRemovedLive() throws {
        guard try labAvailable("frontendAddedAndRemovedLive") else { return }
        let api = """
        [frontends.api]
        listen_addr = "10.77.0.100:8080"
        backend = "web_pool"
        balance = "wrr"

        """
        try ConveyLab.with(mode: "passthrough", config: labConfig(balance: "wrr")) { lab in
            func vips() -> [String] { ((try? lab.stats())?["dataplane"] as? [String: Any])?["vips"] as? [String] ?? [] }
            #expect(vips() == ["10.77.0.100:80"])
            #expect((try? lab.fromClient { try LabClient.who(port: 8080, timeout: 1) }) == nil, "nothing serves :8080 yet")

            try lab.rewriteConfig(api + labConfig(balance: "wrr"))
            #expect(waitUntil(seconds: 5) { vips() == ["10.77.0.100:80", "10.77.0.100:8080"] }, "\(vips())")
            let names = try lab.fromClient { try (0..<6).map { _ in try LabClient.who(port: 8080).name } }
            #expect(names.sorted() == ["b1", "b1", "b2", "b2", "b3", "b3"], "the new frontend spreads over the pool: \(names)")
            let held = try lab.fromClient {
                let c = try LabClient(to: "10.77.0.100", port: 8080, timeout: 5)
                try c.send("ECHO\n")
                return c
            }

            // Removed (drain_timeout 5 s): no new connection, the open one goes on.
            try lab.rewriteConfig(labConfig(balance: "wrr"))
            func apiDraining() -> Bool? {
                (((try? lab.stats())?["frontends"] as? [String: Any])?["api"] as? [String: Any])?["draining"] as? Bool
            }
            #expect(waitUntil(seconds: 5) { apiDraining() == true }, "/stats shows the removed frontend draining")
            usleep(200_000)  // the data plane adopts new routes within 50 ms
            #expect((try? lab.fromClient { try LabClient.who(port: 8080, timeout: 1) }) == nil, "a removed frontend takes no new connection")
            try held.send("still here\n")
            held.shutdownWrite()
            #expect(String(decoding: try held.readToEnd(), as: UTF8.self) == "still here\n", "its open connection goes on")
            #expect(vips().contains("10.77.0.100:8080"), "steered while it drains")
            #expect(waitUntil(seconds: 8) { vips() == ["10.77.0.100:80"] }, "no longer steered once its drain is over: \(vips())")
            #expect(try lab.fromClient { try LabClient.who() }.name.hasPrefix("b"), "the other frontend serves on")
            #expect(lab.stopConvey() == 0)
        }
    }

    @Test("DSR (maglev): a connection outlives a convey crash and restart: the new convey's first segment of it goes to the same backend by hash")
    func dsrConnectionSurvivesRestart() throws {
        guard try labAvailable("dsrConnectionSurvivesRestart") else { return }
        try ConveyLab.with(mode: "dsr", config: labConfig()) { lab in
            let held = try lab.fromClient { try LabClient(to: "10.77.0.100", port: 80, timeout: 10) }
            try held.send("ECHO\none\n")
            #expect(try held.receive(upTo: 64) == Array("one\n".utf8))
            lab.convey?.stop(SIGKILL)  // a crash: the flow table is gone, the stale program stays
            try lab.startConvey()
            #expect(lab.convey?.output.contains("replaced the steering program") == true)
            try held.send("two\n")
            held.shutdownWrite()
            #expect(String(decoding: try held.readToEnd(), as: UTF8.self) == "two\n",
                    "the connection goes on through the new convey")
            let adopted = waitUntil(seconds: 3) { (try? lab.forwarderTotals()["flows_adopted"] as? Int) ?? 0 >= 1 }
            #expect(adopted, "\(String(describing: try? lab.forwarderTotals()))")
            #expect(lab.stopConvey() == 0)
        }
    }

    @Test("Passthrough: once a drained server's drain_timeout passes, its connection's next segment is answered with a reset, not silence")
    func drainEndResetsTheClient() throws {
        guard try labAvailable("drainEndResetsTheClient") else { return }
        try ConveyLab.with(mode: "passthrough", backends: 1, config: labConfig(backends: 1, balance: "wrr")) { lab in
            let held = try lab.fromClient { try LabClient(to: "10.77.0.100", port: 80, timeout: 3) }
            try held.send("ECHO\none\n")
            #expect(try held.receive(upTo: 64) == Array("one\n".utf8))
            try lab.rewriteConfig(labConfig(backends: 1, weights: [0], balance: "wrr"))  // drain_timeout 5 s
            Thread.sleep(forTimeInterval: 7)
            try held.send("two\n")
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = buffer.withUnsafeMutableBytes { recv(held.fd, $0.baseAddress, $0.count, 0) }
            let error = errno
            #expect(n < 0 && error == ECONNRESET, "the client learns at once that the connection is gone (recv: \(n), errno \(error))")
            let sent = waitUntil(seconds: 3) { (try? lab.forwarderTotals()["resets_sent"] as? Int) ?? 0 >= 1 }
            #expect(sent, "\(String(describing: try? lab.forwarderTotals()))")
            #expect(lab.stopConvey() == 0)
        }
    }

    @Test("A second convey on an interface a running one serves is refused (exit 1, naming it); the first keeps serving")
    func secondInstanceRefused() throws {
        guard try labAvailable("secondInstanceRefused") else { return }
        try ConveyLab.with(mode: "dsr", backends: 1, config: labConfig(backends: 1)) { lab in
            let second = lab.configPath + ".second.toml"
            try labConfig(backends: 1).replacingOccurrences(of: "port = 7000", with: "port = 7001")
                .write(toFile: second, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: second) }
            let run = try lab.lab.run("lb", [ConveyRun.binary, "--dsr", "--iface", "veth0", "--config", second])
            #expect(run.status == 1)
            let text = run.stdout + run.stderr
            #expect(text.contains("veth0 is already served by another convey (pid "), "\(text)")
            #expect(try lab.balancerHasXDP(), "the running convey's program stays")
            #expect(try lab.fromClient { try LabClient.who() }.name == "b1", "and it still serves the VIP")
            #expect(lab.stopConvey() == 0)
        }
    }

    /// Changes to the interface that the data plane cannot follow are said once each, and a
    /// deleted interface ends convey (exit 1) so that a supervisor starts it on what is there.
    @Test("An MTU above what the frames hold is logged (and its end); a deleted interface stops convey with exit 1 and says why")
    func interfaceChangesUnderTheDataPlane() throws {
        guard try labAvailable("interfaceChangesUnderTheDataPlane") else { return }
        try ConveyLab.with(mode: "passthrough", backends: 1, config: labConfig(backends: 1)) { lab in
            let convey = try #require(lab.convey)
            _ = try lab.lab.check("lb", ["ip", "link", "set", "dev", "veth0", "mtu", "3000"])
            #expect(waitUntil(seconds: 5) { convey.output.contains("veth0's MTU is now 3000") }, "\(convey.output)")
            _ = try lab.lab.check("lb", ["ip", "link", "set", "dev", "veth0", "mtu", "1500"])
            #expect(waitUntil(seconds: 5) { convey.output.contains("every packet fits convey's frames again") })
            #expect(try lab.fromClient { try LabClient.who(timeout: 3) }.name == "b1", "still serving")
            _ = try lab.lab.check("lb", ["ip", "link", "del", "veth0"])
            #expect(waitUntil(seconds: 10) { !convey.isRunning }, "convey stops")
            #expect(lab.stopConvey() == 1)
            #expect(convey.output.contains("veth0 is gone"), "\(convey.output)")
        }
    }

    /// A stop or reload signal can come at any moment of start (systemd's stop, a deploy's
    /// SIGHUP): convey never dies by it with its program attached.
    @Test("A SIGTERM or SIGHUP at any moment of start never leaves the XDP program attached; a stop exits 0, a reload keeps it running")
    func signalsDuringStart() throws {
        guard try labAvailable("signalsDuringStart") else { return }
        try Lab.with(backends: 1) { lab in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(lab.prefix)-conf")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let path = directory.appendingPathComponent("convey.toml").path
            try labConfig(backends: 1).write(toFile: path, atomically: true, encoding: .utf8)
            // Each run: start, signal after a delay (a SIGHUP is followed by a SIGTERM once
            // the reload could be done), wait; print the signal, delay, exit status and
            // whether veth0 still has a program.
            let convey = "\(ConveyRun.binary) --dsr --iface veth0 --config \(path) --log-level error"
            let script = """
                for sig in TERM HUP; do for d in 0.005 0.01 0.02 0.03 0.05 0.08 0.12 0.2; do
                  \(convey) >/dev/null 2>&1 & p=$!; sleep $d; kill -$sig $p
                  if [ $sig = HUP ]; then sleep 0.5; kill -TERM $p 2>/dev/null; fi
                  wait $p; rc=$?; x=$(ip link show veth0 | grep -c xdp)
                  echo "$sig $d $rc $x"
                  [ "$x" = 0 ] || ip link set dev veth0 xdp off
                done; done
                """
            let run = try lab.run("lb", ["sh", "-c", script], timeout: 120)
            let lines = run.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
            #expect(lines.count == 16, "\(run.stdout)\(run.stderr)")
            for line in lines where line.count == 4 {
                let (signal, status, attached) = (line[0], line[2], line[3])
                #expect(attached == "0", "\(line): the program was left attached")
                // Killed by the signal itself only before anything was set up (the trap is
                // the first thing convey does); from then on a stop is clean and a reload is
                // no stop at all.
                let allowed = signal == "TERM" ? ["0", "143"] : ["0", "129"]
                #expect(allowed.contains(status), "\(line)")
            }
            // 80 ms is usually past the trap too, but not on a loaded machine (a clean-clone CI
            // run saw HUP at 80 ms kill a convey still starting): that row is held only to the
            // checks above.
            let late = lines.filter { $0.count == 4 && ["0.12", "0.2"].contains($0[1]) }
            #expect(late.allSatisfy { $0[2] == "0" }, "a signal after the first 120 ms finds the trap set: \(late)")
        }
    }
}
