import Balancer
import LabSupport
import Testing
import XSK

/// The reflector sends real frames back through the AF_XDP TX path with only the swap applied.
@Suite(.serialized)
struct ReflectorTests {
    @Test("A UDP datagram to the VIP comes back from the VIP with its payload intact (IPv4 and IPv6)")
    func reflectsDatagramsIntact() throws {
        guard try labAvailable("reflector") else { return }
        try Lab.with(backends: 0) { lab in
            let v4 = Endpoint(address: IPAddress("10.77.0.100")!, port: 9000)
            let v6 = Endpoint(address: IPAddress("fd77::100")!, port: 9000)
            let path = try lab.inNamespace("lb") {
                let path = try XSKDataPath<Reflector>(interface: "veth0", config: XDPConfig(), pinThreads: false,
                                                      vips: [(v4, .udp), (v6, .udp)]) { _ in Reflector() }
                try path.start()
                return path
            }
            defer { path.stop() }
            // The kernel checks the UDP checksum on receipt: an intact payload means a valid checksum.
            let reply4 = try lab.check("client", ["python3", "-c", Scripts.udpEcho, "10.77.0.100", "9000", "payload-v4-éß"])
            #expect(reply4 == "10.77.0.100 9000 payload-v4-éß\n")
            let reply6 = try lab.check("client", ["python3", "-c", Scripts.udpEcho, "fd77::100", "9000", "payload-v6"])
            #expect(reply6 == "fd77::100 9000 payload-v6\n")
            path.stop()
            let reflected = path.allWorkers.reduce(0) { $0 + $1.finalHandler.reflected }
            #expect(reflected == 2)
            let totals = path.stats().totals
            #expect(totals.txPackets == 2)
            #expect(totals.rxPackets == 2)
        }
    }
}
