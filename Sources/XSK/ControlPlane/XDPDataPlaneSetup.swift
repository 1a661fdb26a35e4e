import Balancer
import Logging
import ServiceLifecycle

/// Builds the AF_XDP data plane a configuration asks for: resolves the interface and the NAT
/// defaults, publishes the first routes, attaches the steering program and opens one socket per
/// worker. Throws `XDPStartError` (or the XSK layer's error) with nothing left attached.
public enum XDPDataPlaneSetup {
    /// The service to run and the statistics it reports.
    public struct Running: Sendable {
        public var service: any Service
        public var stats: DataPlaneStatsSource
    }

    public static func make(mode: XDPForwardingMode, config: ConveyConfig,
                            snapshots: SnapshotPublisher<ForwardingSnapshot>, logger: Logger) throws -> Running {
        guard let ifaceName = config.xdp.iface, !ifaceName.isEmpty else {
            throw XDPStartError("\(mode.rawValue) mode needs an interface: pass --iface NAME or set [xdp] iface")
        }
        let interface = try NetworkInterface(named: ifaceName)
        let workerCount = min(interface.rxQueueCount,
                              config.passthrough.workers > 0 ? config.passthrough.workers : interface.rxQueueCount)
        let queues = (0..<UInt32(max(1, workerCount))).map { $0 }
        let vips = config.frontends.map(\.listen)

        let routes = PacketRoutesPublisher()
        let control = ForwardingControl(snapshots: snapshots, routes: routes, interfaceIndex: interface.index,
                                        interfaceMAC: interface.mac, logger: logger)
        let statsPeriod = max(config.passthrough.statsUpdateFrequency, .milliseconds(100))

        switch mode {
        case .dsr:
            var counters: [ForwarderCounters] = []
            let path = try XSKDataPath<DSRForwarder>(
                interface: ifaceName, config: config.xdp, queues: queues,
                vips: vips.map { ($0, .tcp) }
            ) { i in
                let workerCounters = ForwarderCounters(backendSlots: routes.maxBackendSlots)
                counters.append(workerCounters)
                return DSRForwarder(settings: ForwarderSettings(config: config, workerIndex: i, workerCount: queues.count),
                                    routes: routes, counters: workerCounters)
            }
            control.refresh(force: true)
            let facts = XDPDataPlaneFacts(interface: ifaceName, vips: vips, natAddress: nil, natPorts: nil)
            let plane = XDPDataPlane(mode: mode, facts: facts, dataPath: path, control: control, counters: counters,
                                     statsPeriod: statsPeriod, snapshots: snapshots, logger: logger)
            return Running(service: plane, stats: { plane.dataPlaneStats() })

        case .passthrough:
            let (natAddress, natPorts) = try natSettings(config: config, interface: interface, workers: queues.count)
            let reverse = NATReverseMap()
            var counters: [ForwarderCounters] = []
            let path = try XSKDataPath<PassthroughForwarder>(
                interface: ifaceName, config: config.xdp, queues: queues,
                vips: vips.map { ($0, .tcp) }
            ) { i in
                let settings = ForwarderSettings(config: config, workerIndex: i, workerCount: queues.count,
                                                 natAddress: natAddress, natPorts: natPorts)
                let workerCounters = ForwarderCounters(backendSlots: routes.maxBackendSlots)
                counters.append(workerCounters)
                return PassthroughForwarder(settings: settings, routes: routes, reverseMap: reverse, counters: workerCounters)
            }
            do {
                try path.program.setNATRange(address: natAddress, ports: natPorts)
            } catch {
                path.stop()
                throw error
            }
            control.refresh(force: true)
            let facts = XDPDataPlaneFacts(interface: ifaceName, vips: vips, natAddress: natAddress, natPorts: natPorts)
            let plane = XDPDataPlane(mode: mode, facts: facts, dataPath: path, control: control, counters: counters,
                                     statsPeriod: statsPeriod, snapshots: snapshots, logger: logger)
            return Running(service: plane, stats: { plane.dataPlaneStats() })
        }
    }

    /// The NAT source address and ports: the configured ones, else the interface's first IPv4
    /// address and the ports above the kernel's ephemeral range.
    static func natSettings(config: ConveyConfig, interface: NetworkInterface,
                            workers: Int) throws -> (IPAddress, ClosedRange<UInt16>) {
        guard let address = config.xdp.natAddress ?? interface.ipv4.first else {
            throw XDPStartError("xdp.nat_addr: \(interface.name) has no IPv4 address to use as the NAT source; " +
                                "set [xdp] nat_addr")
        }
        let ports: ClosedRange<UInt16>
        if let configured = config.xdp.natPorts {
            ports = configured
        } else {
            let facts: NATPortRange.LocalPortFacts
            do { facts = try NATPortRange.LocalPortFacts.current() } catch {
                throw XDPStartError("xdp.nat_ports: cannot read the kernel's ip_local_port_range (\(error)); set [xdp] nat_ports")
            }
            guard let range = NATPortRange.defaultRange(facts) else {
                throw XDPStartError("xdp.nat_ports: the kernel's ephemeral ports reach 65535, so there is no free " +
                                    "default NAT range: set nat_ports and reserve it with sysctl net.ipv4.ip_local_reserved_ports")
            }
            ports = range
        }
        if interface.ipv4.contains(address), let facts = try? NATPortRange.LocalPortFacts.current(),
           let conflict = NATPortRange.conflict(of: ports, with: facts) {
            throw XDPStartError("xdp.nat_ports: \(conflict)")
        }
        guard ports.count >= workers else {
            throw XDPStartError("xdp.nat_ports: \(ports.count) port(s) cannot be shared by \(workers) workers")
        }
        return (address, ports)
    }
}
