import Balancer
import Foundation
import Glibc
import LabSupport
import Testing
@testable import XSK

/// A takeover of an AF_XDP convey that does not complete leaves the running one as it was:
/// this test plays a newcomer that goes as far as it can (the workers paused and handed over,
/// its own program swapped in) and then goes away without committing. The running convey (the
/// real binary) must put its own program back, resume its workers and serve on. Both ways a
/// newcomer may go: asking for the sockets first and swapping its program in while the running
/// workers forward (it then leaves before asking to pause), or asking to pause at once (as a
/// newcomer from before 2026-12-08 does) and swapping in while paused.
@Suite(.serialized)
struct TakeoverRollbackTests {
    @Test("a newcomer that swapped its program in and then vanished (or failed, putting the old program back itself) before committing, before or after the pause: the running convey has its program back, resumes and serves", arguments: [true, false], [true, false])
    func abandonedTakeoverRollsBack(vanishes: Bool, socketsFirst: Bool) throws {
        guard try labAvailable("takeoverRollback") else { return }
        try #require(FileManager.default.isExecutableFile(atPath: Lab.conveyBinary), "build convey first (swift build --build-tests)")
        try Lab.with(backends: 1) { lab in
            let backend = try LabDaemon(lab: lab, host: "b1", ["python3", Lab.packageRoot + "/lab/backend.py", "b1", "80"])
            defer { backend.stop(SIGKILL) }
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(lab.prefix)-rollback")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let path = directory.appendingPathComponent("convey.toml").path
            try """
            [frontends.web]
            listen_addr = "10.77.0.100:80"
            backend = "pool"
            [backends.pool]
            health_check_interval = 0.5
            health_check_timeout = 0.4
            [backends.pool.servers.b1]
            addr = "10.77.0.21:80"
            [stats]
            port = 7000
            [passthrough]
            workers = 1
            """.write(toFile: path, atomically: true, encoding: .utf8)
            let convey = try LabDaemon(lab: lab, host: "lb", [Lab.conveyBinary, "--dsr", "--iface", "veth0", "--config", path])
            defer { convey.stop(SIGKILL) }
            func who() -> String? {
                let r = try? lab.run("client", ["bash", "-c", "exec 3<>/dev/tcp/10.77.0.100/80; echo WHO >&3; timeout 2 cat <&3"], timeout: 5)
                return r?.status == 0 ? r?.stdout : nil
            }
            #expect(waitUntil(seconds: 15) { who()?.hasPrefix("b1 ") == true }, "\(convey.output)")
            let running = try #require(try lab.xdpProgramID("lb"))

            let swapped: Int? = try lab.inNamespace("lb") {
                let interface = try NetworkInterface(named: "veth0")
                let takeover = try XDPTakeover(interface: interface)
                #expect(takeover.facts.mode == .dsr && takeover.facts.workers == 1 && takeover.facts.handsSocketsFirst)
                /// Swaps `program` in, then leaves: gone without a word, its program attached (as a
                /// SIGKILL leaves it), or failed, `failing` putting the running convey's program
                /// back. Returns the swapped-in program's id.
                func swapInAndLeave(_ program: SteeringProgram, failing: () -> Void) throws -> Int? {
                    try program.replaceAttached()
                    let id = try? lab.xdpProgramID("lb")
                    if vanishes {
                        program.keepReplacement()
                        program.handedOver()
                    } else {
                        failing()
                        #expect(try lab.xdpProgramID("lb") == running, "the newcomer put the running convey's program back")
                    }
                    return id
                }
                if socketsFirst {
                    let early = try takeover.sockets()
                    #expect(early.sockets.count == 1)
                    let claim = try #require(InterfaceClaim.adopting(early.claimFD, for: interface))
                    let program = try SteeringProgram(replacingOn: interface, mode: takeover.facts.attachMode, claim: claim)
                    for socket in early.sockets {
                        try XSKSocket.register(socket.fd, queue: socket.queue, inXSKMap: program.xsksMapFD, interface: "veth0")
                        close(socket.fd)
                    }
                    try program.addVIP(Endpoint(address: IPAddress("10.77.0.100")!, port: 80))
                    return try swapInAndLeave(program) { program.detach() }
                }
                let handed = try takeover.pause()
                #expect(handed.workers.count == 1 && handed.forwarders.count == 1)
                let claim = try #require(InterfaceClaim.adopting(handed.claimFD, for: interface))
                let program = try SteeringProgram(replacingOn: interface, mode: takeover.facts.attachMode, claim: claim)
                let publisher = PacketRoutesPublisher()
                let path = try XSKDataPath<DSRForwarder>(adopting: handed.workers, interface: interface, program: program) { _ in
                    DSRForwarder(settings: ForwarderSettings(capacity: 64), routes: publisher)
                }
                return try swapInAndLeave(program) { path.stop() }  // a data path's stop puts it back
            }
            #expect(swapped != nil && swapped != running, "the newcomer's program was swapped in (\(String(describing: swapped)) for \(running))")
            #expect(waitUntil(seconds: 15) { convey.output.contains("did not take over") }, "\(convey.output)")
            #expect(try lab.xdpProgramID("lb") == running, "the running convey's own program is back")
            #expect(waitUntil(seconds: 10) { who()?.hasPrefix("b1 ") == true }, "it serves again: \(convey.output)")

            #expect(convey.stop(SIGTERM) == 0, "\(convey.output)")
            #expect(convey.output.contains("XDP program detached"), "\(convey.output)")
            #expect(try lab.xdpProgramID("lb") == nil)
        }
    }
}
