import Balancer
import Foundation
import Glibc
import LabSupport
import Testing
import XSK

/// Attach and detach leave interfaces as they were found; a stale program is replaced, a
/// foreign one never.
@Suite(.serialized)
struct LifecycleTests {
    @Test("XSKReflect detaches its program when it ends by time or by SIGTERM")
    func detachesOnExitAndSignal() throws {
        guard try labAvailable("detach") else { return }
        try #require(FileManager.default.isExecutableFile(atPath: Lab.reflectBinary), "build XSKReflect first (swift build --build-tests)")
        try Lab.with(backends: 0) { lab in
            let timed = try lab.run("lb", [Lab.reflectBinary, "--iface", "veth0", "--seconds", "1", "--vip", "10.77.0.100:80"], timeout: 20)
            #expect(timed.status == 0, "\(timed.stderr)")
            #expect(timed.stdout.contains("rx_packets"))
            #expect(try lab.xdpProgramName("lb") == nil)

            let running = try lab.spawn("lb", [Lab.reflectBinary, "--iface", "veth0", "--seconds", "30", "--vip", "10.77.0.100:80"], timeout: nil)
            #expect(try waitUntil(seconds: 10) { try lab.xdpProgramName("lb") == SteeringProgram.programName })
            running.kill(SIGTERM)
            #expect(running.output.contains("rx_packets"), "\(running.output)")
            #expect(try lab.xdpProgramName("lb") == nil)
        }
    }

    @Test("A steering program left by a killed convey is replaced on the next attach")
    func replacesStaleProgram() throws {
        guard try labAvailable("stale") else { return }
        try #require(FileManager.default.isExecutableFile(atPath: Lab.reflectBinary), "build XSKReflect first (swift build --build-tests)")
        try Lab.with(backends: 0) { lab in
            let victim = try lab.spawn("lb", [Lab.reflectBinary, "--iface", "veth0", "--seconds", "30"], timeout: nil)
            #expect(try waitUntil(seconds: 10) { try lab.xdpProgramName("lb") == SteeringProgram.programName })
            victim.kill(SIGKILL)
            // Killed without detaching: the program stays.
            #expect(try lab.xdpProgramName("lb") == SteeringProgram.programName)

            let replaced = try lab.inNamespace("lb") {
                let program = try SteeringProgram(attachingTo: NetworkInterface(named: "veth0"))
                defer { program.detach() }
                return program.replacedStaleProgram
            }
            #expect(replaced)
            #expect(try lab.xdpProgramName("lb") == nil)
        }
    }

    @Test("A foreign XDP program is refused with a message that names it and says how to remove it")
    func refusesForeignProgram() throws {
        guard try labAvailable("foreign") else { return }
        try Lab.with(backends: 0) { lab in
            let object = Lab.packageRoot + "/lab/.cache/xdp_pass.o"   // compiled by lab.sh up
            _ = try lab.check("lb", ["ip", "link", "set", "dev", "veth0", "xdpdrv", "obj", object, "sec", "xdp"])
            #expect(try lab.xdpProgramName("lb") == "lab_pass")

            let message: String? = try lab.inNamespace("lb") {
                do {
                    let program = try SteeringProgram(attachingTo: NetworkInterface(named: "veth0"))
                    program.detach()
                    return nil
                } catch let error as XSKError {
                    return error.description
                }
            }
            let text = try #require(message, "attach over a foreign program must fail")
            #expect(text.contains("lab_pass"))
            #expect(text.contains("ip link set dev veth0 xdp off"))
            #expect(text.contains("xdp-loader unload"))
            // Untouched.
            #expect(try lab.xdpProgramName("lb") == "lab_pass")
        }
    }

    @Test("zero_copy = on on veth (no zero-copy) is a clear error and leaves no program behind")
    func zeroCopyOnIsRefusedOnVeth() throws {
        guard try labAvailable("zero-copy") else { return }
        try Lab.with(backends: 0) { lab in
            let message: String? = try lab.inNamespace("lb") {
                do {
                    let path = try XSKDataPath<Reflector>(interface: "veth0", config: XDPConfig(zeroCopy: .on),
                                                          pinThreads: false) { _ in Reflector() }
                    path.stop()
                    return nil
                } catch let error as XSKError {
                    return error.description
                }
            }
            let text = try #require(message)
            #expect(text.contains("zero_copy = on"))
            #expect(text.contains("veth0"))
            #expect(text.contains("veth"))
            #expect(try lab.xdpProgramName("lb") == nil)
        }
    }

    @Test("An idle worker stops when asked (a takeover's pause, shutdown), not at the end of its idle sleep; resumed, it sleeps and forwards again")
    func idleWorkerWakesForAStop() throws {
        guard try labAvailable("idle stop") else { return }
        try Lab.with(backends: 0) { lab in
            // An idle sleep of a minute: without the wake-up the pause would last until it ends.
            let path = try lab.inNamespace("lb") {
                let path = try XSKDataPath<SYNCounter>(interface: "veth0", config: XDPConfig(), pinThreads: false,
                                                       vips: [(vip4, .tcp)], idleTimeout: .seconds(60)) { _ in SYNCounter() }
                try path.start()
                return path
            }
            defer { path.stop() }
            func wakeups() -> UInt64 { path.allWorkers.reduce(0) { $0 + $1.counters.snapshot.wakeups } }
            func received() -> UInt64 { path.allWorkers.reduce(0) { $0 + $1.counters.snapshot.rxPackets } }
            Thread.sleep(forTimeInterval: 0.5)  // the workers spin out and sleep
            let paused = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                path.pause()
                paused.signal()
            }
            #expect(paused.wait(timeout: .now() + 20) == .success, "the idle workers did not notice the stop")
            try path.resume()
            let before = wakeups()
            Thread.sleep(forTimeInterval: 0.5)
            // The stop's wake-up was consumed on resume: the workers sleep again rather than
            // returning from every poll at once (which would be thousands of wake-ups here).
            #expect(wakeups() - before < 100, "\(wakeups() - before) wake-ups in 0.5 s of idleness")
            let seen = received()
            #expect(try lab.check("client", ["python3", "-c", Scripts.tcpClient, "10.77.0.100", "80"]) == "timeout\n")
            #expect(received() > seen, "the resumed worker takes the VIP's SYNs")
        }
    }

    @Test("A missing interface is an error that names it")
    func missingInterface() throws {
        do {
            _ = try NetworkInterface(named: "cvnosuch0")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("cvnosuch0"))
        }
    }
}
