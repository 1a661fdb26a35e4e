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
        /// `/flows`: the workers' tracked flows.
        public var flows: StatsServer.FlowsProvider
        /// Passthrough: the NAT addresses resolved at start, which reloads cannot change.
        public var natAddresses: [IPAddress]
    }

    public static func make(mode: XDPForwardingMode, config: ConveyConfig,
                            snapshots: SnapshotPublisher<ForwardingSnapshot>, logger: Logger, takeover: Bool = false,
                            operatorDrains: OperatorDrains? = nil, counterCarry: CounterCarry? = nil,
                            stopRequested: @escaping @Sendable () -> Bool = { false },
                            onRunning: @escaping @Sendable () -> Void = {}) throws -> Running {
        guard let ifaceName = config.xdp.iface, !ifaceName.isEmpty else {
            throw XDPStartError("\(mode.rawValue) mode needs an interface: pass --iface NAME or set [xdp] iface")
        }
        let missing = XDPPrivileges.missing()
        guard missing.isEmpty else {
            throw XDPStartError("the \(mode.rawValue) mode needs root (or \(missing.joined(separator: ", ")) for this process): " +
                                "run it with sudo; proxy mode needs no privileges")
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
        // A takeover first asks the running convey what it runs (it changes nothing yet).
        let running = takeover ? try XDPTakeover(interface: interface) : nil
        // The running convey's counters, handed with its workers.
        var handedCounters: [UInt8]?

        func start<Handler: PacketHandler & FlowCarrying & SendableMetatype>(
            nat: (addresses: [IPAddress], ports: ClosedRange<UInt16>)?,
            _ makeHandler: (_ worker: Int, ForwarderCounters) -> Handler
        ) throws -> Running {
            var counters: [ForwarderCounters] = []
            func handler(_ i: Int) -> Handler {
                let workerCounters = ForwarderCounters(backendSlots: routes.maxBackendSlots)
                counters.append(workerCounters)
                return makeHandler(i, workerCounters)
            }
            let path: XSKDataPath<Handler>
            if let running {
                path = try takeOver(from: running, nat: nat, handler: handler)
            } else {
                path = try XSKDataPath<Handler>(interface: ifaceName, config: config.xdp, queues: queues,
                                                vips: vips.map { ($0, .tcp) }) { i in handler(i) }
            }
            let mtu = path.interface.mtu
            if !UMEM.frameSize(forMTU: mtu).holdsMTU {
                let text = "\(ifaceName)'s MTU is \(mtu), above the \(UMEM.largestMTU(frameSize: path.frameSize)) bytes an AF_XDP "
                    + "frame holds (one packet per frame): steered packets larger than that are dropped by the kernel "
                    + "(counted in the rings' rx_dropped). Clients whose MSS keeps them below it (any client beyond a "
                    + "1500-byte link) are served; lower the MTU if clients on a jumbo-frame segment use a VIP"
                logger.warning("\(text)")
            }
            if let text = uncoveredQueuesWarning(interface: ifaceName, rxQueues: interface.rxQueueCount,
                                                 rssSpan: interface.rssQueueSpan(), workers: queues.count,
                                                 capped: config.passthrough.workers > 0) {
                logger.error("\(text)")
            }
            if let text = vlanWarning(interface: ifaceName, vlanDevices: interface.vlanDevices(),
                                      stripsTags: interface.stripsVLANTags()) {
                logger.warning("\(text)")
            }
            if path.program.replacedStaleProgram {
                logger.warning("replaced the steering program a convey that is no longer running left on \(ifaceName)")
            }
            if let nat, running == nil {  // a takeover set it before swapping its program in
                do {
                    try path.program.setNATRange(addresses: nat.addresses, ports: nat.ports)
                } catch {
                    path.stop()
                    throw error
                }
            }
            control.refresh(force: true)
            let facts = XDPDataPlaneFacts(interface: ifaceName, vips: vips, natAddresses: nat?.addresses ?? [], natPorts: nat?.ports)
            let plane = XDPDataPlane(mode: mode, facts: facts, dataPath: path, control: control, counters: counters,
                                     statsPeriod: statsPeriod, workersCapped: config.passthrough.workers > 0, logger: logger,
                                     takeover: running, operatorDrains: operatorDrains, counterCarry: counterCarry,
                                     stopRequested: stopRequested, onRunning: onRunning)
            // Before the workers start, this convey's counts are the carried flows' (each counted
            // as opened on entering), which the handed totals hold already.
            var countedAlready: CarriedCounters?
            if handedCounters != nil, let counterCarry {
                plane.flushCounters()
                countedAlready = counterCarry.totals()
            }
            // A takeover forwards at once: the running convey is paused until this one does
            // (unless this one was told to stop meanwhile: `run()` then lets the running one go on).
            if running != nil && !stopRequested() { try plane.startForwarding() }
            // Out of the pause: the document is read once the workers forward.
            if let running, let document = handedCounters, let counterCarry {
                do throws(CarriedCountersError) {
                    let outcome = counterCarry.carryOn(try CarriedCounters(decoding: document), countedAlready)
                    logger.notice("takeover: counters carried on from pid \(running.facts.pid): \(outcome.description)")
                } catch {
                    logger.warning("takeover: the counters pid \(running.facts.pid) handed over do not read (\(error)): this convey counts afresh")
                }
            }
            return Running(service: plane, stats: { plane.dataPlaneStats() },
                           flows: { query throws(FlowQueryError) in try await plane.listFlows(query) },
                           natAddresses: facts.natAddresses)
        }

        /// The running convey's workers, sockets and flows, under this convey's own program,
        /// swapped in for the running one's. Nothing here is undone on failure: closing the
        /// connection (`running` released) tells the running convey to go on as before, and
        /// this convey's program, if swapped in, puts the running one's back as it goes.
        ///
        /// What can be done while the running convey still forwards is done before it pauses:
        /// this convey's program is loaded and swapped in with the running sockets in its map
        /// (the running workers serve what it steers meanwhile), and its flow tables are made.
        /// The pause then only covers the frames' and flows' hand-over.
        func takeOver<Handler: PacketHandler & FlowCarrying & SendableMetatype>(
            from running: XDPTakeover, nat: (addresses: [IPAddress], ports: ClosedRange<UInt16>)?,
            handler: (Int) -> Handler
        ) throws -> XSKDataPath<Handler> {
            if let reason = running.facts.mismatch(mode: mode, workers: queues.count, natAddresses: nat?.addresses ?? [],
                                                   natPorts: nat?.ports) {
                running.abort(reason)
                throw XDPStartError("--takeover: \(reason); the running convey goes on")
            }
            /// This convey's program, with `sockets` in its XSKMAP, swapped in for the running one's.
            func swapIn(claimFD: Int32, sockets: [(queue: UInt32, fd: Int32)]) throws -> SteeringProgram {
                guard let claim = InterfaceClaim.adopting(claimFD, for: interface) else {
                    XDPTakeover.close([claimFD])
                    throw XDPStartError("--takeover: the running convey's claim on \(ifaceName) did not arrive as one; it goes on")
                }
                let program = try SteeringProgram(replacingOn: interface, mode: running.facts.attachMode, claim: claim)
                for socket in sockets {
                    try XSKSocket.register(socket.fd, queue: socket.queue, inXSKMap: program.xsksMapFD, interface: ifaceName)
                }
                for vip in vips { try program.addVIP(vip, protocol: .tcp) }
                if let nat { try program.setNATRange(addresses: nat.addresses, ports: nat.ports) }
                // One that gave up waiting (a load past its timeout) has kept its own program:
                // swapping now would leave it forwarding under a program it no longer steers.
                guard !running.runningConveyLeft else {
                    throw XDPStartError("--takeover: the convey serving \(ifaceName) (pid \(running.facts.pid)) stopped waiting "
                                        + "for this one; it goes on")
                }
                try program.replaceAttached()
                return program
            }
            // The forwarders (their tables) need nothing the pause brings: made before it.
            var prepared: [Handler?] = (0..<queues.count).map { handler($0) }
            let program: SteeringProgram
            let handed: XDPTakeover.Handed
            if running.facts.handsSocketsFirst {
                let early = try running.sockets()
                defer { XDPTakeover.close(early.sockets.map(\.fd)) }  // the XSKMAP holds the sockets
                program = try swapIn(claimFD: early.claimFD, sockets: early.sockets)
                handed = try running.pause()
                XDPTakeover.close([handed.claimFD])  // this convey holds the claim since `sockets`
            } else {
                handed = try running.pause()
                do {
                    program = try swapIn(claimFD: handed.claimFD,
                                         sockets: handed.workers.map { (queue: $0.worker.queue, fd: $0.socketFD) })
                } catch {
                    XDPTakeover.close(handed.workers.flatMap { [$0.socketFD, $0.memoryFD] })
                    throw error
                }
            }
            if !handed.drained.isEmpty { operatorDrains?.adopt(handed.drained, running.facts.pid) }
            handedCounters = handed.countersDocument
            if let problem = handed.countersProblem {
                logger.warning("takeover: the counters pid \(running.facts.pid) handed over do not read (\(problem)): this convey counts afresh")
            } else if handed.countersDocument == nil && counterCarry != nil {
                logger.info(running.facts.handsCounters
                            ? "takeover: pid \(running.facts.pid) handed no counters over (it logs why): this convey counts afresh"
                            : "takeover: pid \(running.facts.pid) hands no counters over (a convey from before 2026-12-08): this convey counts afresh")
            }
            // The carried flows need the routes: their servers' backend slots.
            control.refresh(force: true)
            let now = XSKWorker<Handler>.monotonicNanoseconds()
            var carried = FlowImportResult()
            let path = try XSKDataPath<Handler>(adopting: handed.workers, interface: interface, program: program) { i in
                var h = prepared[i].take()!
                let forwarder = handed.forwarders[i]
                carried = carried + h.importFlows(forwarder, now: now)
                return h
            }
            var text = "takeover: received \(ifaceName) from pid \(running.facts.pid): \(queues.count) worker(s) with their "
                + "sockets and frames, \(carried.imported) flow(s)"
            if carried.leftOut > 0 {
                text += "; \(carried.leftOut) flow(s) could not go on (VIP no longer a frontend: \(carried.noFrontend), server "
                    + "gone or moved: \(carried.noServer), table full: \(carried.tableFull), NAT port: \(carried.natPortUnavailable))"
            }
            logger.notice("\(text)")
            return path
        }

        switch mode {
        case .dsr:
            return try start(nat: nil) { i, counters in
                DSRForwarder(settings: ForwarderSettings(config: config, workerIndex: i, workerCount: queues.count),
                             routes: routes, counters: counters)
            }
        case .passthrough:
            let nat = try natSettings(config: config, interface: interface, workers: queues.count)
            for address in nat.addresses where !interface.has(address) {
                // Legitimate when routed here, but usually a typo: nobody answers ARP/ND for it.
                let prefix = address.isIPv4 ? 32 : 128
                let text = "xdp.nat_addr \(address) is not an address of \(ifaceName): backends reach it only if this "
                    + "host answers ARP/ND for it (ip addr add \(address)/\(prefix) dev \(ifaceName)) or their route sends it here"
                logger.warning("\(text)")
            }
            let reverse = NATReverseMap()
            return try start(nat: nat) { i, counters in
                var settings = ForwarderSettings(config: config, workerIndex: i, workerCount: queues.count,
                                                 natAddresses: nat.addresses, natPorts: nat.ports)
                settings.natPortStart = .random(in: 0...65_535)
                return PassthroughForwarder(settings: settings, routes: routes, reverseMap: reverse, counters: counters)
            }
        }
    }

    /// What to tell the operator when `[passthrough] workers` serves fewer RX queues than the
    /// NIC spreads flows over: an AF_XDP socket receives only from its own queue, so VIP
    /// traffic hashed to the others reaches no socket and goes to the kernel, which resets or
    /// drops it. Nil when every queue that receives hashed flows has a worker (the NIC has no
    /// more queues, or its RSS table was narrowed to them).
    /// `capped`: `[passthrough] workers` set the number (else it was one per queue at start,
    /// and the NIC has gained queues since).
    public static func uncoveredQueuesWarning(interface name: String, rxQueues: Int, rssSpan: Int?, workers: Int,
                                              capped: Bool = true) -> String? {
        let receiving = min(rxQueues, rssSpan ?? rxQueues)
        guard receiving > workers else { return nil }
        let served = workers == 1 ? "queue 0" : "queues 0-\(workers - 1)"
        let text = "\(name) spreads flows over \(receiving) RX queues and convey's \(workers) worker(s) serve \(served): "
            + "VIP traffic the NIC puts on the others reaches no socket and goes to the kernel (steering.passed_no_socket), "
            + "which drops or resets it. "
        guard capped else { return text + "Restart convey to serve them all (it starts one worker per queue)" }
        return text + "[passthrough] workers = \(workers): narrow the NIC to the workers (ethtool -L \(name) combined "
            + "\(workers), or its RSS table: ethtool -X \(name) equal \(workers)) and restart convey, or set workers = 0 "
            + "(one per queue)"
    }

    /// What to tell the operator when an interface carries VLANs (`vlanDevices` on it) but
    /// moves received tags out of the frame before XDP runs (`stripsTags`; nil: the driver
    /// does not say): convey would then take a tagged packet to a VIP for an untagged one and
    /// answer it untagged, instead of leaving it to the kernel. Nil when there is nothing to say.
    public static func vlanWarning(interface name: String, vlanDevices: [String], stripsTags: Bool?) -> String? {
        guard !vlanDevices.isEmpty, stripsTags != false else { return nil }
        let strips = stripsTags == true ? "moves their tags" : "may move their tags (its driver does not say)"
        return "\(name) carries VLANs (\(vlanDevices.joined(separator: ", "))) and its receive VLAN offload "
            + "\(strips) out of the frame before XDP runs: convey cannot tell a tagged packet from an untagged one, so "
            + "a tagged packet to a VIP would be balanced and answered untagged. Turn the offload off "
            + "(ethtool -K \(name) rxvlan off) so tagged packets stay the kernel's, or run convey on an interface without VLANs"
    }

    /// The NAT source addresses (at most one per family) and ports: the configured ones, else
    /// the interface's first IPv4 and first global IPv6 address, and the ports above the
    /// kernel's ephemeral range. Every frontend's family must have an address.
    static func natSettings(config: ConveyConfig, interface: NetworkInterface,
                            workers: Int) throws -> (addresses: [IPAddress], ports: ClosedRange<UInt16>) {
        guard let nat = natAddresses(config: config, interface: interface), !nat.addresses.isEmpty else {
            throw XDPStartError("xdp.nat_addr: \(interface.name) has no IPv4 or global IPv6 address to use as the " +
                                "NAT source; set [xdp] nat_addr")
        }
        if let problem = natFamilyProblems(config: config, nat: nat).first {
            throw XDPStartError("\(problem.path.joined(separator: ".")): \(problem.message)")
        }
        let addresses = nat.addresses
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
        // The kernel's own connections from a local address take ports in the ephemeral range
        // (for both families), where replies would be taken for NAT flows.
        if addresses.contains(where: interface.has), let facts,
           let conflict = NATPortRange.conflict(of: ports, with: facts) {
            throw XDPStartError("xdp.nat_ports: \(conflict)")
        }
        guard ports.count >= workers else {
            throw XDPStartError("xdp.nat_ports: \(ports.count) port(s) cannot be shared by \(workers) workers")
        }
        return (addresses, ports)
    }

    /// The NAT source addresses passthrough uses with `config` on `interface`, and where they
    /// come from (for messages): `[xdp] nat_addr`, else, for each family some frontend's VIP
    /// has, the interface's first IPv4 address or first stable global IPv6 address (not
    /// temporary, deprecated or tentative: a NAT source must outlive its flows; so the ports of
    /// a family no VIP uses stay the kernel's). Nil when neither is known (no `nat_addr`, and
    /// the interface is not on this host).
    public static func natAddresses(config: ConveyConfig,
                                    interface: NetworkInterface?) -> (addresses: [IPAddress], source: String)? {
        if !config.xdp.natAddresses.isEmpty {
            return (config.xdp.natAddresses, "nat_addr is \(config.xdp.natAddresses.map(\.description).joined(separator: ", "))")
        }
        guard let interface else { return nil }
        let families = Set(config.frontends.map(\.listen.address.isIPv4))
        let addresses = [families.contains(true) ? interface.ipv4.first(where: NATAddressFamilies.isDefaultCandidate) : nil,
                         families.contains(false) ? interface.stableGlobalIPv6 : nil]
            .compactMap { $0 }
        return (addresses, "nat_addr is not set and \(interface.name) has " +
                           (addresses.isEmpty ? "no usable address" : addresses.map(\.description).joined(separator: " and ")))
    }

    /// A problem for each frontend whose VIP family has no NAT address (see `NATAddressFamilies`).
    public static func natFamilyProblems(config: ConveyConfig, nat: (addresses: [IPAddress], source: String),
                                         atRestart: Bool = false) -> [(path: [String], message: String)] {
        NATAddressFamilies.problems(frontends: config.frontends, addresses: nat.addresses, source: nat.source,
                                    atRestart: atRestart)
    }
}
