import Foundation
import Glibc
import LabSupport
import Synchronization
import Testing

/// `convey --takeover` in the AF_XDP modes: the newcomer takes the running convey's sockets,
/// frames and flows, swaps its own steering program in, and the old one exits by itself. Real
/// kernel TCP through the lab: connections held open and a transfer in flight go on byte for
/// byte, nothing is reset.
extension EndToEndLabTests {
    @Test("AF_XDP takeover, passthrough and DSR: held connections and a transfer in flight go on byte-exact across it, the old convey exits 0 by itself, the program stays attached, new clients are served; the newcomer is taken over in turn; SIGTERM then detaches", arguments: ["passthrough", "dsr"])
    func xdpTakeover(mode: String) throws {
        guard try labAvailable("xdpTakeover") else { return }
        try ConveyLab.with(mode: mode, config: labConfig(balance: "wrr")) { lab in
            // Connections opened through the running convey, spread over the three backends.
            let held = try lab.fromClient { try (0..<12).map { i in try LabClient.holding("before \(i);") } }
            // A transfer in flight: 24 MiB sent in 64 KiB pieces over about 4 s, echoed back.
            let payload = randomBytes(24 << 20, seed: 9)
            let transfer = try lab.fromClient { try LabClient(to: "10.77.0.100", port: 80, timeout: 30) }
            try transfer.send("ECHO\n")
            let echoed = ReadAll(transfer)
            let sent = Atomic<Int>(0)
            let sender = Thread {
                var offset = 0
                while offset < payload.count {
                    let end = min(offset + 65_536, payload.count)
                    guard (try? transfer.send(Array(payload[offset..<end]))) != nil else { return }
                    offset = end
                    sent.store(offset, ordering: .relaxed)
                    usleep(10_000)
                }
                transfer.shutdownWrite()
            }
            sender.start()
            #expect(waitUntil(seconds: 10) { sent.load(ordering: .relaxed) >= 4 << 20 })
            // The running convey's totals (its stats flush every 0.5 s): they go on in the newcomer.
            var before: [String: Any] = [:]
            #expect(waitUntil(seconds: 5) {
                before = (try? lab.stats()) ?? [:]
                return (before["total_connections"] as? Int ?? 0) >= 13 && (before["total_bytes_tx"] as? Int ?? 0) >= 4 << 20
            }, "\(before)")
            let connectionsBefore = before["total_connections"] as? Int ?? 0

            let old = try lab.takeOver()
            #expect(old.exitStatus == 0, "\(old.output)")
            #expect(old.output.contains("takeover: handed 1 worker(s) and"), "\(old.output)")
            // Its stop says that nothing drains there (the flows went on in the new one).
            #expect(old.output.contains("serves the interface and its flows now; nothing drains here")
                    && !old.output.contains("open connections drain"), "\(old.output)")
            #expect(sent.load(ordering: .relaxed) < payload.count, "the takeover happened while the transfer was in flight")
            let new = try #require(lab.convey)
            #expect(waitUntil(seconds: 10) { new.output.contains("takeover: received veth0 from pid \(old.pid)") && new.output.contains("(pid \(old.pid)) let go; this one forwards now") }, "\(new.output)")
            #expect(!new.output.contains("could not go on"), "every flow went on: \(new.output)")
            #expect(new.output.contains("takeover: counters carried on from pid \(old.pid): the counts of 1 frontend(s) and 3 server(s) go on"),
                    "\(new.output)")

            let back = try echoed.result()
            #expect(back.count == payload.count && back == payload, "the transfer in flight came back byte-exact (\(back.count) of \(payload.count) bytes)")
            for (i, client) in held.enumerated() {
                try client.send("after \(i);")
                #expect(String(decoding: try client.receive(upTo: "after \(i);".utf8.count), as: UTF8.self) == "after \(i);",
                        "held connection \(i) goes on")
            }
            // The newcomer (whose program libbpf attached in place of the first one's) is taken
            // over in turn, as the next upgrade would.
            let middle = try lab.takeOver()
            #expect(middle.exitStatus == 0 && middle.output.contains("takeover: handed 1 worker(s) and"), "\(middle.output)")
            for (i, client) in held.enumerated() {
                try client.send("again \(i)")
                #expect(String(decoding: try client.receive(upTo: "again \(i)".utf8.count), as: UTF8.self) == "again \(i)",
                        "held connection \(i) goes on through a second takeover")
                client.shutdownWrite()
            }
            let answers = try lab.fromClient { try (0..<9).map { _ in try LabClient.who() } }
            #expect(Set(answers.map(\.name)) == ["b1", "b2", "b3"], "new connections are balanced by the newcomer")
            #expect(waitUntil(seconds: 10) { (try? lab.stats()["mode"] as? String) == mode }, "the newcomer's /stats answers")
            // Through two takeovers the totals went on: every connection counted once (the
            // carried flows are not counted again), and the whole transfer's bytes are there,
            // also those sent before the first takeover.
            var after: [String: Any] = [:]
            #expect(waitUntil(seconds: 5) {
                after = (try? lab.stats()) ?? [:]
                return after["total_connections"] as? Int == connectionsBefore + 9
            }, "before: \(connectionsBefore), after: \(after["total_connections"] ?? "none")")
            #expect((after["total_bytes_tx"] as? Int ?? 0) >= payload.count, "\(after["total_bytes_tx"] ?? "none")")
            #expect(try lab.balancerHasXDP())
            #expect(try lab.drops("no_flow") == 0, "no segment of a carried flow was unknown to the newcomer")
            // A convey started without --takeover now is refused, naming the newcomer (not the
            // convey that first listened on the claim).
            let second = try lab.lab.run("lb", [ConveyRun.binary, "--\(mode)", "--iface", "veth0", "--config",
                                                lab.configPath], timeout: 30)
            #expect(second.status == 1 && second.stderr.contains("veth0 is already served by another convey (pid \(lab.convey?.pid ?? 0))"),
                    "\(second.stderr)")

            #expect(lab.stopConvey() == 0)
            #expect(try !lab.balancerHasXDP(), "the newcomer detaches its program on SIGTERM")
        }
    }

    @Test("AF_XDP takeover refused: a newcomer in another mode says why and changes nothing (the running convey serves on, connections too); with no convey running, --takeover says so and attaches nothing")
    func xdpTakeoverRefused() throws {
        guard try labAvailable("xdpTakeoverRefused") else { return }
        try ConveyLab.with(mode: "dsr", config: labConfig(balance: "wrr")) { lab in
            let held = try lab.fromClient { try LabClient.holding("before;") }
            let other = try lab.lab.run("lb", [ConveyRun.binary, "--passthrough", "--takeover", "--iface", "veth0",
                                               "--config", lab.configPath], timeout: 30)
            #expect(other.status == 1 && other.stderr.contains("a takeover keeps the mode"), "\(other.stderr)")
            let running = try #require(lab.convey)
            #expect(running.isRunning)
            #expect(waitUntil(seconds: 5) { running.output.contains("will not take this convey's place") }, "\(running.output)")
            try held.send("after")
            #expect(String(decoding: try held.receive(upTo: 5), as: UTF8.self) == "after", "the held connection goes on")
            held.shutdownWrite()
            #expect(try lab.fromClient { try LabClient.who() }.name.hasPrefix("b"))
            #expect(lab.stopConvey() == 0)

            let alone = try lab.lab.run("lb", [ConveyRun.binary, "--dsr", "--takeover", "--iface", "veth0",
                                               "--config", lab.configPath], timeout: 30)
            #expect(alone.status == 1 && alone.stderr.contains("no convey serves veth0 to take over"), "\(alone.stderr)")
            #expect(try !lab.balancerHasXDP())
        }
    }

    @Test("AF_XDP SIGUSR2: the running convey starts its binary again with --takeover, hands the interface over and exits 0 by itself; a held connection goes on through the replacement, which SIGTERM then stops, detaching")
    func xdpReplacedInPlace() throws {
        guard try labAvailable("xdpReplacedInPlace") else { return }
        try ConveyLab.with(mode: "passthrough", config: labConfig(balance: "wrr")) { lab in
            let held = try lab.fromClient { try LabClient.holding("before;") }
            let old = try #require(lab.convey)
            kill(old.pid, SIGUSR2)
            #expect(waitUntil(seconds: 20) { old.exitStatus != nil }, "\(old.output)")
            #expect(old.exitStatus == 0, "\(old.output)")
            #expect(old.output.contains("SIGUSR2: started") && old.output.contains("takeover: handed 1 worker(s) and 1 flow(s)"),
                    "\(old.output)")
            // The replacement: the other convey on this configuration file, in the balancer's namespace.
            let found = try lab.lab.run("lb", ["pgrep", "-f", "--", "--config \(lab.configPath)"])
            let replacement = try #require(found.stdout.split(separator: "\n").compactMap { pid_t($0) }.first { $0 != old.pid },
                                           "\(found.stdout) \(old.output)")
            defer { kill(replacement, SIGKILL) }
            try held.send("after")
            #expect(String(decoding: try held.receive(upTo: 5), as: UTF8.self) == "after", "the held connection goes on")
            held.shutdownWrite()
            #expect(try lab.fromClient { try LabClient.who() }.name.hasPrefix("b"))
            #expect(try lab.balancerHasXDP())
            kill(replacement, SIGTERM)
            #expect(waitUntil(seconds: 15) { kill(replacement, 0) != 0 || Self.isZombie(replacement) }, "the replacement stops on SIGTERM")
            #expect(waitUntil(seconds: 5) { (try? lab.balancerHasXDP()) == false }, "and detaches its program")
        }
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.split(separator: " ").dropFirst(2).first
        return state == nil || state == "Z"
    }
}
