import Balancer
import LabSupport
import Testing
import XSK

/// Interface facts as the data path reads them.
@Suite(.serialized)
struct NetworkInterfaceTests {
    @Test("The lb's veth0 reports its index, MAC, MTU, addresses, queues, driver and attach modes")
    func readsLabInterfaceFacts() throws {
        guard try labAvailable("interface facts") else { return }
        try Lab.with(backends: 0) { lab in
            let facts = try lab.inNamespace("lb") { try NetworkInterface(named: "veth0") }
            let link = try lab.link("lb")
            #expect(link.hasPrefix("\(facts.index): veth0"))
            #expect(link.contains("link/ether \(facts.mac)"))
            #expect(facts.mtu == 1500)
            #expect(facts.ipv4 == [IPAddress("10.77.0.2")!])
            #expect(facts.ipv6.contains(IPAddress("fd77::2")!))
            #expect(facts.rxQueueCount >= 1)
            #expect(facts.driver == "veth")
            #expect(facts.attachModes == [.native, .skb])
        }
    }
}
