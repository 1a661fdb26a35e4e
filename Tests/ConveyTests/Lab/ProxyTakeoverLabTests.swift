import Foundation
import Glibc
import LabSupport
import Synchronization
import Testing

/// Replacing a running proxy-mode convey (an upgrade, or a setting that needs a restart)
/// without refusing a client: `--takeover`.
extension EndToEndLabTests {
    /// What a load of back-to-back clients saw.
    final class ClientTally: Sendable {
        let served = Atomic<Int>(0)
        let failures = Mutex<[String]>([])
        let stop = Atomic<Bool>(false)
    }

    /// Two clients back to back from the client host, each connection a WHO exchange with
    /// 10.77.0.2:8000, until told to stop (bounded: 20 s, 20 000 connections). Stop it with
    /// `tally.stop` and wait for the thread to finish.
    static func clientLoad(_ lab: Lab) -> (ClientTally, Thread) {
        let tally = ClientTally()
        let load = Thread {
            _ = try? lab.inNamespace("client") {
                let started = Date()
                let workers = (0..<2).map { _ in
                    Thread {
                        while !tally.stop.load(ordering: .relaxed), Date().timeIntervalSince(started) < 20,
                              tally.served.load(ordering: .relaxed) < 20_000 {
                            do {
                                _ = try LabClient.who("10.77.0.2", port: 8000)
                                tally.served.wrappingAdd(1, ordering: .relaxed)
                            } catch {
                                tally.failures.withLock { $0.append("\(error)") }
                            }
                        }
                    }
                }
                for w in workers { w.start() }
                while workers.contains(where: { !$0.isFinished }) { usleep(10_000) }
            }
        }
        load.start()
        return (tally, load)
    }

    /// Stops a `clientLoad`, waits for its clients, and returns their failures.
    static func finish(_ tally: ClientTally, _ load: Thread) -> [String] {
        tally.stop.store(true, ordering: .relaxed)
        while !load.isFinished { usleep(10_000) }
        return tally.failures.withLock { $0 }
    }

    @Test("proxy mode, --takeover: a second convey takes over the first one's listening sockets (no sysctl needed), and SIGTERM then stops the first; every client of a steady load is served throughout (none refused, none reset); the second's /stats comes up once the first has exited")
    func proxyTakeover() throws {
        guard try labAvailable("proxyTakeover") else { return }
        // A spare server (weight 0) the operator drains in the first convey: the drain passes on.
        let config = Self.proxyLabConfig(fall: 3).replacingOccurrences(of: "port = 7000", with: "port = 7000\nadmin = true")
            + "[proxy]\nworkers = 2\n[backends.pool.servers.spare]\naddr = \"10.77.0.21:81\"\nweight = 0\n"
        try ProxyLab.with(config: config) { lab, old, path in
            // net.ipv4.tcp_migrate_req stays at its default (0) in the balancer's namespace:
            // with the sockets handed over, none closes, so nothing needs migrating.
            #expect(waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }) != nil },
                    "the first convey serves: \(old.output)")

            // What the first convey counted before the load (the probe above, and its attempts
            // that came before the backend listened, each closed with no server).
            let statsText = try lab.check("lb", ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:7000/stats"])
            let countedBefore = (try JSONSerialization.jsonObject(with: Data(statsText.utf8)) as? [String: Any])?["total_connections"] as? Int ?? -1
            let (tally, load) = Self.clientLoad(lab)
            defer { _ = Self.finish(tally, load) }
            #expect(waitUntil(seconds: 5) { tally.served.load(ordering: .relaxed) >= 50 })

            let drain = try lab.check("lb", ["curl", "-fsS", "--max-time", "2", "-X", "POST", "http://127.0.0.1:7000/servers/pool/spare/drain"])
            #expect(drain.contains("\"changed\": true"), "\(drain)")
            let new = try LabDaemon(lab: lab, host: "lb", [ConveyRun.binary, "--takeover", "--config", path, "--log-level", "info"])
            defer { new.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { new.output.contains("send it SIGTERM now") }, "the second convey listens: \(new.output)")
            #expect(new.output.contains("takeover: server pool/spare stays drained, as the operator drained it in the convey being replaced"),
                    "\(new.output)")
            #expect(new.output.contains("takeover: took over frontend web's 1 listening socket(s) at 10.77.0.2:8000"), "\(new.output)")
            #expect(!new.output.contains("tcp_migrate_req"), "nothing bound beside: \(new.output)")
            #expect(old.output.contains("handed 1 listening socket(s) (10.77.0.2:8000)"), "\(old.output)")
            #expect(waitUntil(seconds: 5) { new.output.contains("stats: 127.0.0.1:7000 is in use") }, "\(new.output)")
            let before = tally.served.load(ordering: .relaxed)
            usleep(300_000)
            #expect(old.stop(SIGTERM) == 0, "the first convey stops cleanly: \(old.output)")
            // The second one's stats come up once the first has let go of the port.
            var stats: [String: Any]?
            #expect(waitUntil(seconds: 10) {
                guard let text = try? lab.check("lb", ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:7000/stats"]) else { return false }
                stats = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
                return stats != nil
            }, "the second convey's /stats: \(new.output)")
            let atStop = tally.served.load(ordering: .relaxed)
            #expect(waitUntil(seconds: 5) { tally.served.load(ordering: .relaxed) >= atStop + 100 }, "served after the first stopped")

            let failures = Self.finish(tally, load)
            #expect(failures.isEmpty, "\(failures.count) of \(tally.served.load(ordering: .relaxed) + failures.count) clients failed: \(Set(failures))")
            #expect(tally.served.load(ordering: .relaxed) > before)
            // The first convey handed its final counts over as it stopped: the second one's
            // totals are both conveys' (every client of the load, wherever it was served).
            #expect(new.output.contains("takeover: counters carried on from pid \(old.pid), which stopped: the counts of 1 frontend(s) and 2 server(s) go on"),
                    "\(new.output)")
            let served = tally.served.load(ordering: .relaxed)
            var carried = 0
            #expect(waitUntil(seconds: 5) {
                let text = try? lab.check("lb", ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:7000/stats"])
                let now = text.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                carried = now?["total_connections"] as? Int ?? 0
                return carried >= countedBefore + served
            }, "the second convey's total_connections \(carried), clients served \(served)")
            // Each connection once, whichever convey served it.
            #expect(carried == countedBefore + served, "total_connections \(carried): \(countedBefore) before the load, \(served) clients of the load")
            let spare = ((((stats?["backends"] as? [String: Any])?["pool"] as? [String: Any])?["server_detail"] as? [String: Any])?["spare"]
                as? [String: Any])
            #expect(spare?["operator_drain"] as? Bool == true, "the second convey's /stats: \(String(describing: spare))")
            let total = (stats?["total_connections"] as? Int) ?? 0
            #expect(total >= 100, "the second convey served clients: \(String(describing: stats))")
            #expect(waitUntil(seconds: 5) { new.output.contains("answering takeovers at @convey-handover:") }, "the second answers takeovers in turn: \(new.output)")
            #expect(new.isRunning && new.stop(SIGTERM) == 0, "\(new.output)")
        }
    }

    @Test("proxy mode, --takeover as another user: neither side trusts the other (nothing is handed), and the new one, unable to bind beside another user's sockets, fails its start naming the address; the running one serves on")
    func proxyTakeoverByAnotherUser() throws {
        guard try labAvailable("proxyTakeoverByAnotherUser") else { return }
        let config = Self.proxyLabConfig(fall: 3) + "[proxy]\nworkers = 2\n"
        try ProxyLab.with(config: config) { lab, old, path in
            #expect(waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }) != nil },
                    "the first convey serves: \(old.output)")
            let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"]
            let intruder = try LabDaemon(lab: lab, host: "lb", nobody + [ConveyRun.binary, "--takeover", "--config", path, "--log-level", "info"])
            defer { intruder.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { intruder.exitStatus != nil }, "\(intruder.output)")
            #expect(intruder.exitStatus != 0)
            #expect(intruder.output.contains("is answered by pid") && intruder.output.contains("of user 0, not this convey's user: nothing taken from it"),
                    "\(intruder.output)")
            #expect(intruder.output.contains("10.77.0.2:8000"), "the failed bind names the address: \(intruder.output)")
            #expect(waitUntil(seconds: 5) { old.output.contains("refused to hand the listeners to pid") && old.output.contains("it runs as user 65534") },
                    "the running one would not have handed them either: \(old.output)")
            #expect(try lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }.name == "b1")
            #expect(old.isRunning && old.stop(SIGTERM) == 0, "\(old.output)")
        }
    }

    @Test("proxy mode, --takeover: a process of another user squatting the handover name is not trusted: the running convey warns that the name is held, the takeover takes nothing from the squatter, binds beside the running convey and says why, and clients are served")
    func proxyTakeoverIgnoresASquatter() throws {
        guard try labAvailable("proxyTakeoverIgnoresASquatter") else { return }
        let config = Self.proxyLabConfig(fall: 3) + "[proxy]\nworkers = 2\n"
        try ProxyLab.with(config: config) { lab, old, path in
            // nobody takes the name as soon as it is free (tries every 10 ms), as a squatter would.
            let squatter = """
                import socket, sys, time
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                while True:
                    try:
                        s.bind("\\0" + sys.argv[1]); break
                    except OSError:
                        time.sleep(0.01)
                s.listen(8); print("bound", flush=True)
                while True:
                    c, _ = s.accept(); c.recv(256); c.send(b"done"); c.close()
                """
            let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"]
            let name = "convey-handover:" + path
            #expect(waitUntil(seconds: 10) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) }) != nil },
                    "the first convey serves: \(old.output)")
            let squat = try LabDaemon(lab: lab, host: "lb", nobody + ["/usr/bin/python3", "-c", squatter, name])
            defer { squat.stop(SIGKILL) }
            // The name is the first convey's until it stops; then the squatter has it.
            #expect(old.stop(SIGTERM) == 0, "\(old.output)")
            #expect(waitUntil(seconds: 5) { squat.output.contains("bound") }, "the squatter has the name: \(squat.output)")
            let running = try LabDaemon(lab: lab, host: "lb", [ConveyRun.binary, "--config", path, "--log-level", "info"])
            defer { running.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { running.output.contains("takeover: @\(name) is held by another process") }, "\(running.output)")

            let new = try LabDaemon(lab: lab, host: "lb", [ConveyRun.binary, "--takeover", "--config", path, "--log-level", "info"])
            defer { new.stop(SIGKILL) }
            #expect(waitUntil(seconds: 10) { new.output.contains("send it SIGTERM now") }, "\(new.output)")
            #expect(new.output.contains("is answered by pid") && new.output.contains("of user 65534, not this convey's user: nothing taken from it"),
                    "\(new.output)")
            #expect(new.output.contains("binding beside the listeners there instead") && new.output.contains("tcp_migrate_req"), "\(new.output)")
            #expect(!new.output.contains("took over"), "\(new.output)")
            #expect(running.stop(SIGTERM) == 0, "\(running.output)")
            #expect(waitUntil(seconds: 5) { (try? lab.inNamespace("client") { try LabClient.who("10.77.0.2", port: 8000) })?.name == "b1" },
                    "the new convey serves on its own sockets")
            #expect(new.isRunning && new.stop(SIGTERM) == 0, "\(new.output)")
        }
    }
}
