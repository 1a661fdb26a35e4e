import Balancer
import LabSupport
import Testing
import XSK

/// Backend MACs come from the kernel's neighbour table.
@Suite(.serialized)
struct NeighbourTableTests {
    @Test("After the lb pings a backend (IPv4 and IPv6), the lb's neighbour table holds the backend's MAC")
    func findsBackendMACAfterPing() throws {
        guard try labAvailable("neighbours") else { return }
        try Lab.with(backends: 1) { lab in
            let backendMAC = try lab.inNamespace("b1") { try NetworkInterface(named: "veth0").mac }
            #expect(try lab.check("lb", ["python3", "-c", Scripts.ping, "10.77.0.21"]) == "reply\n")
            // IPv6: any exchange resolves the neighbour; a TCP connect attempt to a closed port does.
            _ = try lab.run("lb", ["python3", "-c", Scripts.tcpClient, "fd77::21", "9"])
            let (entries, index) = try lab.inNamespace("lb") {
                (try NeighbourTable.dump(), try NetworkInterface(named: "veth0").index)
            }
            let v4 = entries.first { $0.address == IPAddress("10.77.0.21")! }
            #expect(v4?.mac == backendMAC)
            #expect(v4?.isUsable == true)
            #expect(v4?.interfaceIndex == index)
            let v6 = entries.first { $0.address == IPAddress("fd77::21")! }
            #expect(v6?.mac == backendMAC)
        }
    }
}
