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

        func start<Handler: PacketHandler & SendableMetatype>(
            nat: (address: IPAddress, ports: ClosedRange<UInt16>)?,
            _ makeHandler: (_ worker: Int, ForwarderCounters) -> Handler
        ) throws -> Running {
            var counters: [ForwarderCounters] = []
            let path = try XSKDataPath<Handler>(interface: ifaceName, config: config.xdp, queues: queues,
                                                vips: vips.map { ($0, .tcp) }) { i in
                let workerCounters = ForwarderCounters(backendSlots: routes.maxBackendSlots)
                counters.append(workerCounters)
                return makeHandler(i, workerCounters)
            }
            if let nat {
                do {
                    try path.program.setNATRange(address: nat.address, ports: nat.ports)
                } catch {
                    path.stop()
                    throw error
                }
            }
            control.refresh(force: true)
            let facts = XDPDataPlaneFacts(interface: ifaceName, vips: vips, natAddress: nat?.address, natPorts: nat?.ports)
            let plane = XDPDataPlane(mode: mode, facts: facts, dataPath: path, control: control, counters: counters,
                                     statsPeriod: statsPeriod, logger: logger)
            return Running(service: plane, stats: { plane.dataPlaneStats() })
        }

        switch mode {
        case .dsr:
            return try start(nat: nil) { i, counters in
                DSRForwarder(settings: ForwarderSettings(config: config, workerIndex: i, workerCount: queues.count),
                             routes: routes, counters: counters)
            }
        case .passthrough:
            let nat = try natSettings(config: config, interface: interface, workers: queues.count)
            let reverse = NATReverseMap()
            return try start(nat: nat) { i, counters in
                PassthroughForwarder(settings: ForwarderSettings(config: config, workerIndex: i, workerCount: queues.count,
                                                                 natAddress: nat.address, natPorts: nat.ports),
                                     routes: routes, reverseMap: reverse, counters: counters)
            }
        }
    }

    /// The NAT source address and ports: the configured ones, else the interface's first IPv4
    /// address and the ports above the kernel's ephemeral range.
    static func natSettings(config: ConveyConfig, interface: NetworkInterface,
                            workers: Int) throws -> (address: IPAddress, ports: ClosedRange<UInt16>) {
        guard let address = config.xdp.natAddress ?? interface.ipv4.first else {
            throw XDPStartError("xdp.nat_addr: \(interface.name) has no IPv4 address to use as the NAT source; " +
                                "set [xdp] nat_addr")
        }
        let facts: NATPortRange.LocalPortFacts?
        do { facts = try NATPortRange.LocalPortFacts.current() } catch {
            guard config.xdp.natPorts != nil else {
                throw XDPStartError("xdp.nat_ports: cannot read the kernel's ip_local_port_range (\(error)); set [xdp] nat_ports")
            }
            facts = nil
        }
        let ports: ClosedRange<UInt16>
        if let configured = config.xdp.natPorts {
            ports = configured
        } else if let facts, let range = NATPortRange.defaultRange(facts) {
            ports = range
        } else {
            throw XDPStartError("xdp.nat_ports: " + NATPortRange.noDefaultRange)
        }
        if interface.ipv4.contains(address), let facts, let conflict = NATPortRange.conflict(of: ports, with: facts) {
            throw XDPStartError("xdp.nat_ports: \(conflict)")
        }
        guard ports.count >= workers else {
            throw XDPStartError("xdp.nat_ports: \(ports.count) port(s) cannot be shared by \(workers) workers")
        }
        return (address, ports)
    }
}
