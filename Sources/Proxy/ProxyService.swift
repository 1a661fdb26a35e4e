#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Logging
import ServiceLifecycle
import Synchronization

/// Proxy mode: the epoll + splice TCP balancer (convey's default mode, no privileges needed).
///
/// ## Starting it
/// ```swift
/// let publisher = SnapshotPublisher(runtime.currentSnapshot)   // the runtime keeps publishing
/// let proxy = ProxyService(snapshots: publisher, settings: config.proxy, logger: logger)
/// let group = ServiceGroup(configuration: .init(
///     services: [.init(service: proxy), /* runtime, stats HTTP, ... */],
///     gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
/// try await group.run()
/// ```
/// `run()` binds one listening socket per frontend of the snapshot current at that moment,
/// shared by the `settings.workers` event loops (0: one per online CPU; see `Listener`), and throws
/// `ProxyError.bindFailed` naming the frontend and address if any bind fails, before any
/// traffic is taken. The loops run on their own threads. On graceful shutdown (SIGTERM through
/// the service group) each loop closes its listeners, lets connections finish for up to their
/// pool's `drain_timeout`, closes the rest, and `run()` returns. Task cancellation closes
/// everything at once.
///
/// Reload: `prepare(frontends:)` binds the listeners of new frontends and addresses (refusing
/// the reload if one cannot be had), then publish the new `ForwardingSnapshot`; each loop
/// adopts it between epoll batches (see `EventLoop`), taking up the new listeners and closing
/// those of removed frontends and left addresses, whose open connections drain.
///
/// `status()` gives the stats service per-loop figures; traffic counters live in the snapshot's
/// `FrontendCounters` / `ServerCounters` (tx = client→server, rx = server→client).
public final class ProxyService: Service, Sendable {
    private let snapshots: SnapshotPublisher<ForwardingSnapshot>
    private let settings: ProxySettings
    private let logger: Logger
    private let tuning: ProxyTuning
    /// Take over the listening sockets of the convey running the same configuration, or bind
    /// beside them where it hands none (`--takeover`).
    private let takeover: Bool
    /// The abstract socket of the listener handover (see `ListenerHandover`): answered while
    /// running, asked at a takeover's start. Nil: neither.
    private let handoverName: String?
    /// The operator's drains a handover passes on (see `OperatorDrains`).
    private let operatorDrains: OperatorDrains?
    /// The counters a takeover carries: this convey's final counts, to the convey that took its
    /// listeners; the replaced convey's, once it stops, into this one's.
    private let counterCarry: CounterCarry?
    /// The replaced convey's counters, awaited once a takeover asked for them.
    private let predecessorCounters = PredecessorCounters()
    /// Called once every frontend listens and the loops run, with the pid of the convey a
    /// takeover took listeners from (nil: none answered).
    private let onListening: @Sendable (_ takenFrom: Int32?) -> Void
    /// The pid of the convey this one's takeover took listeners from (0: none).
    private let takenFrom = Atomic<Int32>(0)

    private enum Phase {
        case idle
        case running(Running)
        case finished
    }

    private struct Running {
        var controls: [LoopControl]
        /// The listener groups bound, by frontend and configured address: the real address.
        var bound: [ListenerKey: Endpoint]
        /// Graceful shutdown began: the loops have closed their listeners and take no more.
        var draining = false
    }

    private let phase = Mutex<Phase>(.idle)
    /// Listener groups some of whose sockets close with the convey a takeover replaces (bound
    /// beside its sockets, none handed, or handed ones beyond this convey's loops): for the
    /// start's note on `tcp_migrate_req`.
    private let besideBound = Mutex(0)
    /// The handover channel's socket a takeover received, for this convey's own handover server.
    private let inheritedChannel = Mutex<UnixMessageSocket?>(nil)
    /// A takeover's start got an answer from a convey: the handover name is that one's.
    private let answeredByConvey = Atomic<Bool>(false)
    /// Serialises binding: `start()` and `prepare(frontends:)` (control plane only).
    private let binding = Mutex(())

    /// A proxy over the frontends of `snapshots`; nothing is bound until `run()`.
    ///
    /// - Parameters:
    ///   - takeover: at start, take the listening sockets of the convey answering at
    ///     `handoverName` (both accept from them until that one is stopped), and bind the
    ///     frontends' addresses beside whatever listens there for the rest, to replace it
    ///     without refusing or resetting a client. Without it an address anything else
    ///     listens on fails the start: two instances sharing a port by mistake would each get
    ///     part of the traffic.
    ///   - handoverName: where this convey hands its listeners to the one replacing it, and
    ///     where a takeover asks for them (`handoverName(forConfig:)`); nil: no handover.
    ///   - operatorDrains: the servers drained at runtime, handed on with the listeners and
    ///     taken up from them, so that a takeover keeps them drained.
    ///   - counterCarry: the counters a takeover carries on (`CarriedCounters`): the convey
    ///     being replaced hands its final counts over when it stops; nil: none.
    ///   - onListening: called once every frontend listens and the loops run (a service
    ///     manager's readiness), with the pid of the convey a takeover took listeners from.
    public convenience init(snapshots: SnapshotPublisher<ForwardingSnapshot>, settings: ProxySettings, logger: Logger,
                            takeover: Bool = false, handoverName: String? = nil, operatorDrains: OperatorDrains? = nil,
                            counterCarry: CounterCarry? = nil,
                            onListening: @escaping @Sendable (_ takenFrom: Int32?) -> Void = { _ in }) {
        self.init(snapshots: snapshots, settings: settings, logger: logger, tuning: ProxyTuning(), takeover: takeover,
                  handoverName: handoverName, operatorDrains: operatorDrains, counterCarry: counterCarry,
                  onListening: onListening)
    }

    init(snapshots: SnapshotPublisher<ForwardingSnapshot>, settings: ProxySettings, logger: Logger, tuning: ProxyTuning,
         takeover: Bool = false, handoverName: String? = nil, operatorDrains: OperatorDrains? = nil,
         counterCarry: CounterCarry? = nil,
         onListening: @escaping @Sendable (_ takenFrom: Int32?) -> Void = { _ in }) {
        self.onListening = onListening
        self.operatorDrains = operatorDrains
        self.counterCarry = counterCarry
        self.snapshots = snapshots
        self.settings = settings
        self.logger = logger
        self.tuning = tuning
        self.takeover = takeover
        self.handoverName = handoverName
    }

    /// The handover socket name of the convey running `configPath`: every convey started on
    /// the same file (in the same network namespace) finds the same one.
    public static func handoverName(forConfig configPath: String) -> String {
        ListenerHandover.socketName(forConfig: configPath)
    }

    /// The number of event loops `settings` asks for (0: one per online CPU).
    public var loopCount: Int {
        settings.workers > 0 ? settings.workers : max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Binds, runs the loops until graceful shutdown or cancellation, and returns once every loop
    /// has stopped.
    public func run() async throws {
        let controls = try start()
        let inherited = inheritedChannel.withLock { s -> UnixMessageSocket? in defer { s = nil }; return s }
        let handover = handoverName.map { name in
            HandoverServer(name: name, logger: logger, inherited: inherited, replacing: answeredByConvey.load(ordering: .relaxed),
                           drained: { [operatorDrains] in operatorDrains?.current() ?? [] },
                           handedOver: { [operatorDrains] pid in operatorDrains?.handedOver(pid) }) { [self] () throws(HandoverRefusal) in
                try listenerOffers()
            }
        }
        handover?.start()
        defer { handover?.stop() }
        let from = takenFrom.load(ordering: .relaxed)
        onListening(from > 0 ? from : nil)
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await waitForExit(controls)
            } onCancel: {
                for c in controls.controls { c.requestStop() }
            }
        } onGracefulShutdown: {
            self.phase.withLock { phase in
                guard case .running(var running) = phase else { return }
                running.draining = true
                running.bound = [:]
                phase = .running(running)
            }
            // This convey refuses takeovers from here: its listeners close now.
            handover?.signalStop()
            for c in controls.controls { c.requestDrain() }
        }
        // Every loop has stopped: the counts are final, with the predecessor's if they came
        // (they are not taken up from here on).
        if let handover, let counterCarry {
            handover.stop()
            predecessorCounters.close()
            handover.handCountersOver(counterCarry.totals())
        }
        phase.withLock { $0 = .finished }
        logger.info("proxy stopped")
    }

    /// Per-loop figures and the bound addresses, for the stats service.
    public func status() -> ProxyStatus {
        phase.withLock { phase in
            guard case .running(let running) = phase else { return ProxyStatus(loops: [], listening: [:]) }
            var listening: [String: Endpoint] = [:]
            for (key, address) in running.bound { listening[key.frontend] = address }
            let loops = running.controls.map { c in
                ProxyStatus.Loop(index: c.index,
                                 openConnections: c.openConnections.load(ordering: .relaxed),
                                 acceptedTotal: c.acceptedTotal.load(ordering: .relaxed),
                                 acceptPauses: c.acceptPauses.load(ordering: .relaxed),
                                 pipesPooled: c.pipesPooled.load(ordering: .relaxed),
                                 pipesInUse: c.pipesInUse.load(ordering: .relaxed),
                                 copyFallbacks: c.copyFallbacks.load(ordering: .relaxed),
                                 draining: c.draining.load(ordering: .relaxed))
            }
            return ProxyStatus(loops: loops, listening: listening)
        }
    }

    /// `/flows` in proxy mode: the connections of every event loop matching `query` (see
    /// `ConnectionListingReport`).
    public func listConnections(_ query: FlowQuery) async throws(FlowQueryError) -> JSONValue {
        let controls = phase.withLock { phase -> [LoopControl] in
            guard case .running(let running) = phase else { return [] }
            return running.controls
        }
        guard !controls.isEmpty else { throw .unanswered("the proxy is not running") }
        let report = ConnectionListingReport(controls: controls, snapshot: snapshots.load().value)
        return try await report.run(query)
    }

    /// Readies the listeners a reload to `frontends` needs, before it is applied: for each new
    /// frontend or new listen address, one listening socket shared by the loops (as at start),
    /// handed to the loops, which take them up when they adopt the snapshot that has them.
    /// Throws every `.bindFailed` (each naming its frontend and address), with nothing left
    /// bound, when some cannot be had (the reload is then refused and nothing changes). Listeners of frontends
    /// and addresses `frontends` no longer has are closed by the loops as they adopt it.
    /// Does nothing before `run()` has bound (it binds the snapshot it starts with) or once a
    /// graceful shutdown has begun (no loop accepts any more).
    ///
    /// Waits (up to a second) for every loop to adopt the snapshot published last, so that
    /// an address the previous reload freed (a frontend moved back, or re-added) is free.
    public func prepare(frontends: [FrontendConfig]) throws(ProxyBindFailures) {
        try binding.withLock { _ throws(ProxyBindFailures) in
            guard case .running(let running) = phase.withLock({ $0 }), !running.draining, !running.controls.isEmpty else { return }
            awaitAdoption(of: snapshots.generation, by: running.controls)
            try bindMissing(frontends, running: running)
        }
    }

    /// Wakes the loops so that they adopt the snapshot published last at once (after a
    /// reload), rather than at their next event or timeout.
    public func wakeLoops() {
        guard case .running(let running) = phase.withLock({ $0 }) else { return }
        for c in running.controls { c.wakeToAdopt() }
    }

    /// Binds and hands the listener groups of `frontends` that `running` lacks, and records
    /// them; throws every failure, with nothing bound, when some fail.
    private func bindMissing(_ frontends: [FrontendConfig], running: Running, beside: Bool = false) throws(ProxyBindFailures) {
        let wanted = frontends.map(ListenerKey.init)
        let fresh = try bindGroups(wanted.filter { running.bound[$0] == nil }, loops: running.controls.count, beside: beside)
        // Handed for an earlier reload and never taken (a later file dropped them first).
        for c in running.controls { c.discardHanded(keeping: Set(wanted)) }
        var next: [ListenerKey: Endpoint] = [:]
        for key in wanted { next[key] = running.bound[key] }
        for group in fresh {
            for (c, listener) in zip(running.controls, group.listeners) { c.hand(listener, for: group.key) }
            next[group.key] = group.listeners[0].address
            logger.notice("proxy listening", metadata: ["frontend": "\(group.key.frontend)",
                                                        "address": "\(group.listeners[0].address)",
                                                        "loops": "\(running.controls.count)"])
        }
        phase.withLock { phase in
            guard case .running(var current) = phase, !current.draining else { return }
            current.bound = next
            phase = .running(current)
        }
    }

    /// One listener group per key (see `Listener.bindGroup`), each address first checked free
    /// of other sockets unless `beside` (a takeover's start); throws every failure, with
    /// nothing left bound, when some fail. A key `handed` has sockets for (a takeover's
    /// handover) is served by them, shared among this convey's loops (see
    /// `Listener.adoptGroup`).
    private func bindGroups(_ keys: [ListenerKey], loops: Int, beside: Bool = false) throws(ProxyBindFailures)
        -> [(key: ListenerKey, listeners: [Listener])] {
        var none = HandedListeners()
        return try bindGroups(keys, loops: loops, beside: beside, handed: &none)
    }

    private func bindGroups(_ keys: [ListenerKey], loops: Int, beside: Bool,
                            handed: inout HandedListeners) throws(ProxyBindFailures)
        -> [(key: ListenerKey, listeners: [Listener])] {
        var groups: [(key: ListenerKey, listeners: [Listener])] = []
        var failures: [ProxyError] = []
        for key in keys {
            do throws(ProxyError) {
                let received = handed.take(key.address)
                if !received.isEmpty {
                    let adopted = try Listener.adoptGroup(key, sockets: received, count: loops, owner: handed.owner,
                                                          networkNamespace: handed.networkNamespace, notSentLowWater: tuning.notSentLowWater)
                    groups.append((key, adopted.listeners))
                    noteTakenOver(key, adopted, received: received.count, loops: loops, from: handed.pid)
                    continue
                }
                if !beside {
                    try Listener.checkFree(frontend: key.frontend, address: key.address)
                } else if (try? Listener.checkFree(frontend: key.frontend, address: key.address)) == nil {
                    // Bound beside another process's sockets, which close when it stops.
                    besideBound.withLock { $0 += 1 }
                }
                groups.append((key, try Listener.bindGroup(key, count: loops, notSentLowWater: tuning.notSentLowWater)))
            } catch {
                failures.append(error)
            }
        }
        guard failures.isEmpty else {
            for group in groups { for l in group.listeners { SocketCalls.close(l.fd) } }
            throw ProxyBindFailures(failures: failures)
        }
        return groups
    }

    /// Logs what a takeover took over for `key`, out of `received` sockets.
    private func noteTakenOver(_ key: ListenerKey, _ adopted: Listener.AdoptedGroup, received: Int, loops: Int, from pid: Int32) {
        if adopted.invalid > 0 {
            logger.warning("takeover: frontend \(key.frontend): \(adopted.invalid) of the \(received) socket(s) pid \(pid) handed for \(key.address) were no TCP socket of its user listening there in this network namespace: closed")
        }
        guard adopted.taken > 0 else {
            logger.warning("takeover: frontend \(key.frontend): bound beside the listeners at \(key.address) instead")
            besideBound.withLock { $0 += 1 }
            return
        }
        logger.notice("takeover: took over frontend \(key.frontend)'s \(adopted.taken) listening socket(s) at \(key.address) from the convey being replaced (pid \(pid)), shared by this convey's \(loops) loop(s)")
        if adopted.leftToClose > 0 {
            logger.warning("takeover: frontend \(key.frontend): the convey being replaced handed \(adopted.taken + adopted.leftToClose) socket(s), one per loop, and this one runs \(loops) loop(s): the other \(adopted.leftToClose) close when it stops")
            besideBound.withLock { $0 += 1 }
        }
    }

    /// Copies of every loop's listening sockets, by frontend address, for a takeover's
    /// handover: one per socket (the loops share one per frontend, see `Listener`). Refused
    /// rather than partial (a loop that does not answer, or cannot copy): a socket left out
    /// would close with this convey.
    private func listenerOffers() throws(HandoverRefusal) -> [HandoverServer.Offer] {
        guard case .running(let running) = phase.withLock({ $0 }), !running.draining else {
            throw HandoverRefusal(reason: "it is stopping (its listeners are closing)")
        }
        // Listeners bound for a reload are a loop's only once it has adopted that snapshot.
        binding.withLock { _ in awaitAdoption(of: snapshots.generation, by: running.controls) }
        var order: [Endpoint] = []
        var byAddress: [Endpoint: [Int32]] = [:]
        var seen: Set<SocketIdentity> = []
        func giveUp(_ reason: String) -> HandoverRefusal {
            for fds in byAddress.values { for fd in fds { SocketCalls.close(fd) } }
            return HandoverRefusal(reason: reason)
        }
        for c in running.controls where !c.refusesListeners {
            guard let answer = c.listenerCopies.askBlocking((), timeout: .seconds(2), wake: { c.wake() }) else {
                throw giveUp("its event loop \(c.index) did not answer within 2 s")
            }
            guard let copies = answer else { throw giveUp("its event loop \(c.index) could not copy its listeners (out of descriptors?)") }
            for copy in copies {
                if let identity = SocketCalls.identity(copy.fd), !seen.insert(identity).inserted {
                    SocketCalls.close(copy.fd) // another loop's descriptor of a socket already offered
                    continue
                }
                if byAddress[copy.address] == nil { order.append(copy.address) }
                byAddress[copy.address, default: []].append(copy.fd)
            }
        }
        return order.map { ($0, byAddress[$0]!) }
    }

    /// Waits until every loop that still runs has adopted `generation` (at most a second).
    private func awaitAdoption(of generation: UInt64, by controls: [LoopControl]) {
        let live = controls.filter { !$0.refusesListeners }
        guard live.contains(where: { $0.adoptedGeneration.load(ordering: .acquiring) < generation }) else { return }
        for c in live { c.wakeToAdopt() }
        let deadline = EventLoop.monotonicNow() &+ 1_000_000_000
        while live.contains(where: { $0.adoptedGeneration.load(ordering: .acquiring) < generation }),
              EventLoop.monotonicNow() < deadline {
            usleep(1000)
        }
    }

    // MARK: - Private

    private struct Started: Sendable {
        let controls: [LoopControl]
        let loops: LoopHandoff
    }

    /// Hands the loops to their threads. Each loop is touched by exactly one thread from then
    /// on; this box exists only to carry them across.
    private final class LoopHandoff: @unchecked Sendable {
        var loops: [EventLoop]
        init(_ loops: [EventLoop]) { self.loops = loops }
    }

    private func start() throws -> Started {
        try binding.withLock { _ throws(ProxyError) in try startLocked() }
    }

    private func startLocked() throws(ProxyError) -> Started {
        try phase.withLock { phase throws(ProxyError) in
            guard case .idle = phase else { throw ProxyError.alreadyRunning }
            phase = .running(Running(controls: [], bound: [:]))
        }
        let (snapshot, generation) = snapshots.load()
        let routes = snapshot.frontends.filter { !$0.isDraining }
        let count = loopCount
        // A takeover first asks the running convey for its listening sockets.
        var handed = HandedListeners()
        if takeover, let handoverName {
            do throws(HandoverError) {
                handed = try ListenerHandover.receive(from: handoverName, counters: counterCarry != nil)
                answeredByConvey.store(true, ordering: .relaxed)
                takenFrom.store(handed.pid, ordering: .relaxed)
            } catch {
                logger.warning("takeover: \(error): binding beside the listeners there instead")
            }
        }
        defer { handed.closeAll() }
        // Bind everything before any loop runs: groups[f][loop].
        let groups: [[Listener]]
        do throws(ProxyBindFailures) {
            groups = try bindGroups(routes.map { ListenerKey($0.config) }, loops: count, beside: takeover, handed: &handed).map(\.listeners)
        } catch {
            phase.withLock { $0 = .idle }
            throw error.failures[0]
        }
        if !handed.byAddress.isEmpty {
            let left = handed.byAddress.keys.map { "\($0)" }.sorted().joined(separator: ", ")
            logger.notice("takeover: not taking the listeners at \(left) (no frontend here listens there): they close with the convey being replaced")
        }
        if !handed.drained.isEmpty, let operatorDrains { operatorDrains.adopt(handed.drained, handed.pid) }
        if let channel = handed.counterChannel, let counterCarry {
            predecessorCounters.startWaiting(on: channel, from: handed.pid, carry: counterCarry, logger: logger)
        } else if counterCarry != nil && answeredByConvey.load(ordering: .relaxed) {
            logger.info("takeover: the convey being replaced (pid \(handed.pid)) does not hand its counters over (a convey from before 2026-12-08): this convey's counts start afresh")
        }
        handed.counterChannel = nil
        if let handoverName, let fd = handed.takeChannel() {
            if let channel = UnixMessageSocket.adopting(fd, listeningOn: handoverName) {
                inheritedChannel.withLock { $0 = channel }
            } else {
                SocketCalls.close(fd)
            }
        }
        var loops: [EventLoop] = []
        do {
            for i in 0..<count {
                loops.append(try EventLoop(index: i, of: count, listening: zip(routes, groups.map { $0[i] }).map { ($0, $1) },
                                           generation: generation, snapshots: snapshots, tuning: tuning, logger: logger))
            }
        } catch {
            for i in loops.count..<count { for group in groups { SocketCalls.close(group[i].fd) } }
            phase.withLock { $0 = .idle }
            throw error
        }
        let controls = loops.map(\.control)
        for loop in loops { loop.peers = controls.filter { $0 !== loop.control } }
        var bound: [ListenerKey: Endpoint] = [:]
        for (route, group) in zip(routes, groups) { bound[ListenerKey(route.config)] = group[0].address }
        let running = Running(controls: controls, bound: bound)
        phase.withLock { $0 = .running(running) }
        for (key, address) in bound.sorted(by: { $0.key.frontend < $1.key.frontend }) {
            logger.info("proxy listening", metadata: ["frontend": "\(key.frontend)", "address": "\(address)", "loops": "\(count)"])
        }
        if takeover {
            if besideBound.withLock({ $0 }) > 0 { TakeoverMigration.note(logger: logger) }
            logger.notice("takeover: listening with the convey being replaced")
        }
        // A reload applied while this bound (its prepare found nothing running yet): bind
        // what the snapshot published since then has in addition.
        let latest = snapshots.load()
        if latest.generation != generation {
            do throws(ProxyBindFailures) {
                // Still part of the start: a takeover binds beside the old convey here too.
                try bindMissing(latest.value.frontends.filter { !$0.isDraining }.map(\.config), running: running, beside: takeover)
            } catch {
                for failure in error.failures { logger.error("a frontend added while proxy mode started is not served: \(failure)") }
            }
        }
        return Started(controls: controls, loops: LoopHandoff(loops))
    }

    private func waitForExit(_ started: Started) async {
        let loops = started.loops.loops
        started.loops.loops = []
        let pin = tuning.pinThreads && loops.count <= Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let remaining = ExitLatch(count: loops.count, done: done)
            for (i, loop) in loops.enumerated() {
                let handoff = LoopHandoff([loop])
                let started = LoopThread.start(cpu: pin ? i : nil) {
                    let loop = handoff.loops.removeLast()
                    loop.run()
                    remaining.arrive()
                }
                if !started {
                    logger.error("could not start proxy loop thread \(i)")
                    loop.control.refuseHandedListeners()
                    loop.control.listing.close()
                    loop.control.listenerCopies.close()
                    remaining.arrive()
                }
            }
        }
    }
}

/// Resumes a continuation when the last of `count` loop threads has exited.
private final class ExitLatch: Sendable {
    private let state: Mutex<(remaining: Int, done: CheckedContinuation<Void, Never>?)>

    init(count: Int, done: CheckedContinuation<Void, Never>) {
        state = Mutex((count, done))
        if count == 0 { arrive(countingDown: false) }
    }

    func arrive() { arrive(countingDown: true) }

    private func arrive(countingDown: Bool) {
        let done: CheckedContinuation<Void, Never>? = state.withLock { state in
            if countingDown { state.remaining -= 1 }
            guard state.remaining <= 0, let done = state.done else { return nil }
            state.done = nil
            return done
        }
        done?.resume()
    }
}
