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

    @Test("A deprecated IPv6 address is flagged transient and never the default NAT source, even listed first")
    func transientIPv6IsNotTheDefault() throws {
        guard try labAvailable("transient IPv6") else { return }
        try Lab.with(backends: 0) { lab in
            // Added last, so the kernel lists it first; preferred_lft 0 marks it deprecated.
            _ = try lab.check("lb", ["ip", "-6", "addr", "add", "fd77::50/64", "dev", "veth0", "nodad", "preferred_lft", "0"])
            let facts = try lab.inNamespace("lb") { try NetworkInterface(named: "veth0") }
            let deprecated = IPAddress("fd77::50")!, stable = IPAddress("fd77::2")!
            #expect(facts.ipv6.first == deprecated, "the deprecated address comes first: \(facts.ipv6)")
            #expect(facts.transientIPv6 == [deprecated])
            #expect(facts.stableGlobalIPv6 == stable)
            var config = ConveyConfig(frontends: [FrontendConfig(name: "v6", listen: Endpoint(address: IPAddress("fd77::100")!, port: 80),
                                                                 pool: "pool")],
                                      pools: [PoolConfig(name: "pool", servers: [])])
            config.xdp.iface = "veth0"
            #expect(XDPDataPlaneSetup.natAddresses(config: config, interface: facts)?.addresses == [stable])
        }
    }
}
