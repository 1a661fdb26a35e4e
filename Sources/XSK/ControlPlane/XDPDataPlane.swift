import Glibc
import Balancer
import Logging
import ServiceLifecycle
import Synchronization

/// Which AF_XDP data plane to run.
public enum XDPForwardingMode: String, Sendable {
    /// Direct server return: MAC rewrite, the backend answers the client itself.
    case dsr
    /// Full NAT: the balancer rewrites both directions.
    case passthrough
}

/// Why an AF_XDP data plane could not start; the message says what to change.
public struct XDPStartError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The running AF_XDP data plane of one interface, as a service: the steering program and the
/// workers (`XSKDataPath`), the forwarders they run, and the control plane that keeps their
/// routes and the shared counters current.
///
/// Setting up (`init`) attaches the program and opens the sockets or throws with nothing left
/// behind; `run()` starts the workers (a takeover starts them as soon as it is set up:
/// `startForwarding()`) and, until shutdown, republishes routes when the
/// runtime's snapshot or a backend's MAC changes and flushes traffic counters every
/// `[passthrough] stats_update_frequency`; on SIGTERM/SIGINT it stops the workers and detaches
/// the program before returning.
public final class XDPDataPlane<Handler: PacketHandler & SendableMetatype>: Service, Sendable {
    public let mode: XDPForwardingMode
    /// Fixed facts about this data plane, shown in `/stats`.
    public let facts: XDPDataPlaneFacts
    private let dataPath: XSKDataPath<Handler>
    private let control: ForwardingControl
    private let counters: [ForwarderCounters]
    private let flusher: Mutex<BackendStatsFlusher>
    private let steering: VIPSteering
    private let statsPeriod: Duration
    private let logger: Logger
    /// `[passthrough] workers` chose the number of workers (else one per RX queue at start).
    private let workersCapped: Bool
    /// Called once the workers forward (a service manager's readiness).
    private let onRunning: @Sendable () -> Void
    /// A takeover in progress (this convey replaces a running one): committed before the
    /// workers start.
    private let takeover: Mutex<XDPTakeover?>
    /// The workers were started (`startForwarding()`).
    private let forwarding = Atomic<Bool>(false)
    /// Whether a stop was asked (a signal) before the service group runs: a takeover then does
    /// not commit.
    private let stopRequested: @Sendable () -> Bool
    /// The pid of the convey this one handed its interface over to (0: none).
    private let handedOverTo = Atomic<Int32>(0)
    /// The operator's runtime drains, which a takeover passes on.
    private let operatorDrains: OperatorDrains?
    /// The counters a takeover hands to the convey replacing this one.
    private let counterCarry: CounterCarry?

    init(mode: XDPForwardingMode, facts: XDPDataPlaneFacts, dataPath: XSKDataPath<Handler>, control: ForwardingControl,
         counters: [ForwarderCounters], statsPeriod: Duration, workersCapped: Bool, logger: Logger,
         takeover: XDPTakeover? = nil, operatorDrains: OperatorDrains? = nil, counterCarry: CounterCarry? = nil,
         stopRequested: @escaping @Sendable () -> Bool = { false },
         onRunning: @escaping @Sendable () -> Void = {}) {
        self.onRunning = onRunning
        self.stopRequested = stopRequested
        self.operatorDrains = operatorDrains
        self.counterCarry = counterCarry
        self.takeover = Mutex(takeover)
        self.mode = mode
        self.facts = facts
        self.dataPath = dataPath
        self.control = control
        self.counters = counters
        flusher = Mutex(BackendStatsFlusher(workers: counters))
        steering = VIPSteering(program: dataPath.program, steered: facts.vips, logger: logger)
        self.statsPeriod = statsPeriod
        self.logger = logger
        self.workersCapped = workersCapped
    }

    /// Starts the workers (once; later calls do nothing). A takeover is committed first, and
    /// the convey being replaced is told once a service manager knows this one as its main
    /// process (`onRunning`). Called by a takeover's setup as soon as the flows are in, so the
    /// running convey's pause does not last through the rest of this convey's start; else by
    /// `run()`. Throws when the running convey did not let go (its program is back) or the
    /// workers could not start.
    public func startForwarding() throws {
        guard !forwarding.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let pending = takeover.withLock { t -> XDPTakeover? in defer { t = nil }; return t }
        if let pending {
            do throws(XDPStartError) { try pending.commit() } catch {
                // Its program back in place of this one's (the running convey does so too).
                dataPath.program.putReplacedBack()
                throw error
            }
            dataPath.program.keepReplacement()
            logger.notice("takeover: the convey serving \(facts.interface) (pid \(pending.facts.pid)) let go; this one forwards now")
        }
        try dataPath.start()
        logger.notice("AF_XDP data plane running", metadata: [
            "mode": "\(mode.rawValue)", "iface": "\(facts.interface)", "attach": "\(dataPath.program.attachMode.rawValue)",
            "zero_copy": "\(dataPath.stats().zeroCopy)", "workers": "\(counters.count)",
        ])
        onRunning()
        // Only now (a service manager has heard MAINPID= from this one) may the old one exit.
        pending?.started()
    }

    public func run() async throws {
        if stopRequested() || Task.isCancelled || Task.isShuttingDownGracefully,
           let pending = takeover.withLock({ t -> XDPTakeover? in defer { t = nil }; return t }) {
            // Told to stop before it forwarded: the running convey goes on.
            dataPath.program.putReplacedBack()
            pending.abort("it was told to stop before it took over")
            logger.notice("takeover: stopped before taking \(facts.interface) over; the convey serving it (pid \(pending.facts.pid)) goes on")
            return
        }
        try startForwarding()  // a takeover's setup has done so already
        let server = XDPHandoverServer(plane: handoverPlane(), logger: logger)
        let serving = server.start()
        var interfaceGone = false
        defer {
            // A takeover being answered finishes first (it may still resume the workers).
            if serving { server.stop() }
            dataPath.stop()
            for c in counters { c.listing.close() }  // no worker answers from now on
            flushCounters()
            let successor = handedOverTo.load(ordering: .relaxed)
            logger.notice(successor != 0 ? "AF_XDP data plane handed over to pid \(successor)"
                          : interfaceGone ? "AF_XDP data plane stopped" : "AF_XDP data plane stopped; XDP program detached",
                          metadata: ["iface": "\(facts.interface)"])
        }
        var watch = InterfaceWatch(interface: dataPath.interface, frameSize: dataPath.frameSize, workers: counters.count,
                                   workersCapped: workersCapped, natAddresses: facts.natAddresses)
        // Snapshots (reloads, health, drains) are picked up within 50 ms; the neighbour table
        // and the interface are read every second; counters flush every stats_update_frequency.
        var lastFlush = ContinuousClock.now, lastNeighbours = ContinuousClock.now
        var toldUnfinishedChecksums = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let neighboursDue = ContinuousClock.now - lastNeighbours >= .seconds(1)
            if neighboursDue {
                do throws(InterfaceWatch.Lost) { try watch.check(logger: logger) } catch {
                    // No drain: nothing can reach or leave the flows any more.
                    interfaceGone = true
                    throw XDPStartError(error.description)
                }
                if !toldUnfinishedChecksums { toldUnfinishedChecksums = tellUnfinishedChecksums() }
            }
            control.refresh(readNeighbours: neighboursDue)
            // Every round, not only after a publish: a VIP the map refused is retried.
            steering.sync(to: control.routedVIPs)
            if neighboursDue { lastNeighbours = .now }
            if ContinuousClock.now - lastFlush >= statsPeriod {
                flushCounters()
                lastFlush = .now
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(50)) }
        }
        if !Task.isCancelled && handedOverTo.load(ordering: .relaxed) == 0 { await drain() }
    }

    /// The counters a takeover hands over, with the paused workers' last counts in.
    private func handedCounters() -> (@Sendable () -> CarriedCounters)? {
        guard let carry = counterCarry else { return nil }
        return { [self] in
            flushCounters()
            return carry.totals()
        }
    }

    /// What the takeover server needs of this data plane.
    private func handoverPlane() -> XDPHandoverServer.Plane {
        XDPHandoverServer.Plane(
            facts: { [self] in
                XDPTakeoverFacts(pid: getpid(), mode: mode, attachMode: dataPath.program.attachMode, workers: counters.count,
                                 natAddresses: facts.natAddresses, natPorts: facts.natPorts)
            },
            sockets: { [self] in dataPath.sockets() },
            pause: { [self] in
                dataPath.pause()
                return zip(dataPath.handover(), dataPath.allWorkers).map { sent, worker in
                    let carrying = worker.finalHandler as? any FlowCarrying
                    return (sent, carrying?.exportHandover() ?? ForwarderHandover(flows: [], freeNATPorts: []))
                }
            },
            resume: { [self] in
                do throws(XSKError) { try dataPath.resume() } catch {
                    logger.critical("takeover: cannot restart the workers after an incomplete takeover: \(error)")
                }
            },
            drained: { [self] in operatorDrains?.current() ?? [] },
            counters: handedCounters(),
            handedOver: { [self] pid in
                handedOverTo.store(pid, ordering: .relaxed)
                operatorDrains?.handedOver(pid)
                kill(getpid(), SIGTERM)
            },
            program: dataPath.program)
    }

    /// Logs (once, returning true) that SYNs came with checksums their sender left for offload
    /// to finish (see `SegmentChecksum`): nothing through this balancer can open until the
    /// sender stops offloading, and the counter alone would leave an operator guessing.
    private func tellUnfinishedChecksums() -> Bool {
        let count = counters.reduce(UInt64(0)) { $0 + $1.dropped(.unfinishedChecksum) }
        // A sender that offloads retransmits its SYN: a stray frame or two says nothing yet.
        guard count >= 3 else { return false }
        let text = "SYNs (or, in passthrough, backends' SYN-ACKs) arrive on \(facts.interface) with unfinished TCP "
            + "checksums (left for checksum offload, which no device finishes on this path): convey drops them "
            + "(unfinished_checksum), since their receivers would. Turn TX checksum offload off where they are sent "
            + "from: on veth, on the peer of \(facts.interface) and on the clients' (or backends') own interfaces "
            + "(ethtool -K IFACE tx off)"
        logger.error("\(text)", metadata: ["unfinished_checksum": "\(count)"])
        return true
    }

    /// SIGTERM/SIGINT: no new flows, established ones forwarded until they end or the longest
    /// `drain_timeout` of the frontends' pools passes, then the caller detaches. Closing flows
    /// (FIN or RST seen) are not waited for: they only linger for retransmissions.
    private func drain() async {
        let active = { self.counters.reduce(UInt64(0)) { $0 + $1.snapshot().flowsOpen } }
        guard active() > 0 else { return }
        let timeout = control.longestDrainTimeout
        guard timeout > .zero else { return }
        control.drain()
        logger.notice("draining: no new flows; established ones go on until they end or drain_timeout passes",
                      metadata: ["flows": "\(active())", "drain_timeout": "\(timeout)"])
        let started = ContinuousClock.now
        var lastFlush = started
        // The timeout is read again each round: a reload during the drain that changes
        // drain_timeout moves its end, as it does for proxy mode and for server drains.
        while !Task.isCancelled, ContinuousClock.now < started + control.longestDrainTimeout, active() > 0,
              handedOverTo.load(ordering: .relaxed) == 0 {
            control.refresh(readNeighbours: false)
            steering.sync(to: control.routedVIPs)
            if ContinuousClock.now - lastFlush >= statsPeriod {
                flushCounters()
                lastFlush = .now
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        if handedOverTo.load(ordering: .relaxed) != 0 { return }  // the flows went on in the newcomer
        logger.notice("drain over", metadata: ["flows_left": "\(active())"])
    }

    /// Adds the workers' traffic since the last flush to the servers' and frontends' counters.
    public func flushCounters() {
        flusher.withLock { flusher in
            // Before the routes are read: a retired backend slot is reused only after a whole
            // flush has run since its last flow ended (see `BackendSlotRegistry`).
            control.routes.countersFlushStarting()
            flusher.flush(into: control.routes.current().routes)
        }
    }

    /// `/flows`: the workers' tracked flows matching `query`, with names and addresses.
    public func listFlows(_ query: FlowQuery) async throws(FlowQueryError) -> JSONValue {
        try await FlowListingReport(listings: counters.map(\.listing), routes: control.routes.current().routes,
                                    mode: mode, natAddresses: facts.natAddresses, natPorts: facts.natPorts).run(query)
    }

    /// What `/stats` shows under `dataplane` and `/metrics` exports, read now.
    public func dataPlaneStats() -> DataPlaneStats {
        var facts = self.facts
        facts.vips = steering.steered
        return XDPStatsReport(mode: mode, facts: facts, path: dataPath.stats(),
                       forwarders: counters.map { $0.snapshot() }, unresolved: control.unresolved,
                       neighbourError: control.neighbourError, onBackupForMAC: control.onBackupForMAC).dataPlaneStats
    }
}

/// What was decided at start and does not change while running (but the VIPs, which follow
/// the frontends).
public struct XDPDataPlaneFacts: Sendable {
    public var interface: String
    /// The VIPs steered to the workers (at start: the configured frontends').
    public var vips: [Endpoint]
    /// Passthrough: the NAT source addresses, at most one per family (empty in DSR).
    public var natAddresses: [IPAddress]
    public var natPorts: ClosedRange<UInt16>?
}
