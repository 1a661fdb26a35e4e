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

    @Test("Links stacked on an interface are read with their parent and kind; receive VLAN offload is read")
    func stackedLinksAndTagStripping() throws {
        guard try labAvailable("link facts") else { return }
        try Lab.with(backends: 0) { lab in
            // The on-demand facts are read in the namespace, like the rest.
            func vlanFacts() throws -> (index: Int32, vlans: [String], strips: Bool?) {
                try lab.inNamespace("lb") {
                    let facts = try NetworkInterface(named: "veth0")
                    return (facts.index, facts.vlanDevices(), facts.stripsVLANTags())
                }
            }
            var facts = try vlanFacts()
            #expect(facts.vlans.isEmpty)
            #expect(facts.strips == true, "veth's rxvlan is on by default")
            // This machine's kernel has no 802.1Q (CONFIG_VLAN_8021Q): a macvlan is the stacked
            // link it can make, read through the same RTM_GETLINK dump as a VLAN device.
            _ = try lab.check("lb", ["ip", "link", "add", "link", "veth0", "name", "mv0", "type", "macvlan"])
            let links = try lab.inNamespace("lb") { try LinkTable.dump() }
            let stacked = try #require(links.first { $0.name == "mv0" }, "\(links)")
            #expect(stacked.parentIndex == facts.index && stacked.kind == "macvlan", "\(stacked)")
            #expect(links.first { $0.name == "veth0" }?.kind == "veth")
            #expect(try vlanFacts().vlans.isEmpty, "a macvlan is no VLAN")

            _ = try lab.check("lb", ["ethtool", "-K", "veth0", "rxvlan", "off"])
            facts = try vlanFacts()
            #expect(facts.strips == false)
        }
    }

    @Test("An interface with VLANs whose tags are stripped before XDP is warned about, naming the VLANs and the fix")
    func vlanWarning() {
        #expect(XDPDataPlaneSetup.vlanWarning(interface: "eth0", vlanDevices: [], stripsTags: true) == nil)
        #expect(XDPDataPlaneSetup.vlanWarning(interface: "eth0", vlanDevices: ["eth0.7"], stripsTags: false) == nil)
        let stripped = XDPDataPlaneSetup.vlanWarning(interface: "eth0", vlanDevices: ["eth0.7", "eth0.9"], stripsTags: true)
        #expect(stripped?.contains("eth0 carries VLANs (eth0.7, eth0.9)") == true, "\(stripped ?? "")")
        #expect(stripped?.contains("ethtool -K eth0 rxvlan off") == true)
        let unknown = XDPDataPlaneSetup.vlanWarning(interface: "eth0", vlanDevices: ["eth0.7"], stripsTags: nil)
        #expect(unknown?.contains("may move their tags") == true, "\(unknown ?? "")")
    }

    @Test("A veth made with two RX queues reports them, and no RSS table")
    func multiQueueVethFacts() throws {
        guard try labAvailable("queue facts") else { return }
        try Lab.with(backends: 0) { lab in
            _ = try lab.check("lb", ["ip", "link", "add", "mq0", "numtxqueues", "2", "numrxqueues", "2", "type", "veth",
                                     "peer", "name", "mq1", "numtxqueues", "2", "numrxqueues", "2"])
            let (queues, span) = try lab.inNamespace("lb") {
                let facts = try NetworkInterface(named: "mq0")
                return (facts.rxQueueCount, facts.rssQueueSpan())
            }
            #expect(queues == 2)
            #expect(span == nil, "veth has no RSS indirection table")
            #expect(XDPDataPlaneSetup.uncoveredQueuesWarning(interface: "mq0", rxQueues: queues, rssSpan: span, workers: 1) != nil)
        }
    }

    @Test("Workers that leave RX queues without a socket are warned about, unless the RSS table was narrowed to them")
    func uncoveredQueuesWarning() {
        let warn = { (name: String, queues: Int, span: Int?, workers: Int) in
            XDPDataPlaneSetup.uncoveredQueuesWarning(interface: name, rxQueues: queues, rssSpan: span, workers: workers)
        }
        #expect(warn("eth0", 1, nil, 1) == nil)
        #expect(warn("eth0", 8, nil, 8) == nil)
        #expect(warn("eth0", 8, 2, 2) == nil, "ethtool -X eth0 equal 2: queues 2-7 receive no hashed flow")
        let capped = warn("eth0", 8, 8, 2)
        #expect(capped?.contains("spreads flows over 8 RX queues and convey's 2 worker(s) serve queues 0-1") == true,
                "\(capped ?? "")")
        #expect(capped?.contains("[passthrough] workers = 2") == true)
        let grown = XDPDataPlaneSetup.uncoveredQueuesWarning(interface: "eth0", rxQueues: 8, rssSpan: nil, workers: 4, capped: false)
        #expect(grown?.contains("Restart convey to serve them all") == true && grown?.contains("ethtool") == false, "\(grown ?? "")")
        #expect(capped?.contains("ethtool -L eth0 combined 2") == true && capped?.contains("ethtool -X eth0 equal 2") == true)
        #expect(warn("eth0", 4, nil, 1)?.contains("serve queue 0:") == true)
        #expect(warn("eth0", 8, 4, 2)?.contains("over 4 RX queues") == true)
    }
}
