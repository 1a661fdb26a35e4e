import Balancer
import LabSupport
import Testing
import XSK

/// The steering program decides per frame: VIP traffic to Convey's sockets, everything else to
/// the balancer's own kernel.
@Suite(.serialized)
struct SteeringTests {
    @Test("TCP SYNs to a VIP (IPv4 and IPv6) and to the NAT range reach the XSK socket; another port, ping and ARP still reach the lb's kernel")
    func vipTrafficIsSteeredOtherTrafficPasses() throws {
        guard try labAvailable("steering") else { return }
        try Lab.with(backends: 0) { lab in
            let server = try lab.spawn("lb", ["python3", "-c", Scripts.tcpServer, "10.77.0.2", "8080"], timeout: 40)
            defer { server.kill() }
            let path = try lab.startSYNCounter()
            defer { path.stop() }
            #expect(try lab.xdpProgramName("lb") == SteeringProgram.programName)

            // The kernel's own services on the lb keep working (ARP/ND resolve the lb's MAC).
            #expect(waitUntil(seconds: 5) { (try? lab.check("client", ["python3", "-c", Scripts.tcpClient, "10.77.0.2", "8080"])) == "kernel 8080\n" })
            #expect(try lab.check("client", ["python3", "-c", Scripts.ping, "10.77.0.2"]) == "reply\n")

            // Connections to the VIP are taken by the worker (which drops them: the client times out).
            #expect(try lab.check("client", ["python3", "-c", Scripts.tcpClient, "10.77.0.100", "80"]) == "timeout\n")
            #expect(try lab.check("client", ["python3", "-c", Scripts.tcpClient, "fd77::100", "80"]) == "timeout\n")

            // Passthrough: backend replies to the NAT address and port range are steered too;
            // the same address outside the range still reaches the kernel.
            // With a NAT address of each family (dual stack), both are steered.
            try path.program.setNATRange(addresses: [IPAddress("10.77.0.2")!, IPAddress("fd77::2")!], ports: 61000...61010)
            #expect(try lab.check("client", ["python3", "-c", Scripts.tcpClient, "10.77.0.2", "61005"]) == "timeout\n")
            #expect(try lab.check("client", ["python3", "-c", Scripts.tcpClient, "fd77::2", "61005"]) == "timeout\n")
            #expect(try lab.check("client", ["python3", "-c", Scripts.tcpClient, "10.77.0.2", "8080"]) == "kernel 8080\n")
            let verdicts = try path.program.verdicts()
            #expect(verdicts.redirectedNAT >= 2)
            // IPv4 only: the IPv6 address's ports go back to the kernel, which refuses them.
            try path.program.setNATRange(addresses: [IPAddress("10.77.0.2")!], ports: 61000...61010)
            #expect(try lab.check("client", ["python3", "-c", Scripts.tcpClient, "fd77::2", "61005"]).hasPrefix("error"))
            #expect(try lab.check("client", ["python3", "-c", Scripts.tcpClient, "10.77.0.2", "61005"]) == "timeout\n")
            try path.program.setNATRange(addresses: [], ports: 61000...61010)
            #expect(try lab.check("client", ["python3", "-c", Scripts.tcpClient, "10.77.0.2", "61005"]).hasPrefix("error"),
                    "NAT steering off: the kernel refuses the closed port")
            // A removed VIP is no longer steered (the lb's kernel, which does not own it, drops it).
            try path.program.removeVIP(vip4)
            let beforeRemoval = try path.program.verdicts()
            _ = try lab.check("client", ["python3", "-c", Scripts.tcpClient, "10.77.0.100", "80"])
            let afterRemoval = try path.program.verdicts()
            #expect(afterRemoval.redirectedVIP == beforeRemoval.redirectedVIP)
            #expect(afterRemoval.passedNotSteered > beforeRemoval.passedNotSteered)
            path.stop()

            let handlers = path.allWorkers.map(\.finalHandler)
            #expect(handlers.reduce(0) { $0 + $1.synV4 } >= 2, "VIP and NAT SYNs")
            #expect(handlers.reduce(0) { $0 + $1.synV6 } >= 1)
            #expect(verdicts.redirectedVIP >= 2)
            #expect(verdicts.passedNotIP >= 1, "ARP passes")
            #expect(verdicts.passedNotSteered >= 1, "TCP to port 8080 and ICMP pass")
            #expect(verdicts.malformed == 0)
            let stats = path.stats()
            #expect(stats.attachMode == .native)
            #expect(!stats.zeroCopy, "veth has no zero-copy")
            #expect(stats.totals.rxPackets >= 2)

            // Stopped: the interface has no XDP program any more.
            #expect(try lab.xdpProgramName("lb") == nil)
        }
    }
}
