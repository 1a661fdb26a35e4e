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
/// `run()` binds one `SO_REUSEPORT` listener per frontend of the snapshot current at that moment
/// for each of `settings.workers` event loops (0: one per online CPU), and throws
/// `ProxyError.bindFailed` naming the frontend and address if any bind fails, before any
/// traffic is taken. The loops run on their own threads. On graceful shutdown (SIGTERM through
/// the service group) each loop closes its listeners, lets connections finish for up to their
/// pool's `drain_timeout`, closes the rest, and `run()` returns. Task cancellation closes
/// everything at once.
///
/// Reload: publish a new `ForwardingSnapshot`; each loop adopts it between epoll batches (see
/// `EventLoop`). Frontends are matched by name; listen addresses do not change live.
///
/// `status()` gives the stats service per-loop figures; traffic counters live in the snapshot's
/// `FrontendCounters` / `ServerCounters` (tx = client→server, rx = server→client).
public final class ProxyService: Service, Sendable {
    private let snapshots: SnapshotPublisher<ForwardingSnapshot>
    private let settings: ProxySettings
    private let logger: Logger
    private let tuning: ProxyTuning

    private enum Phase {
        case idle
        case running([LoopControl], [String: Endpoint])
        case finished
    }

    private let phase = Mutex<Phase>(.idle)

    /// A proxy over the frontends of `snapshots`; nothing is bound until `run()`.
    public convenience init(snapshots: SnapshotPublisher<ForwardingSnapshot>, settings: ProxySettings, logger: Logger) {
        self.init(snapshots: snapshots, settings: settings, logger: logger, tuning: ProxyTuning())
    }

    init(snapshots: SnapshotPublisher<ForwardingSnapshot>, settings: ProxySettings, logger: Logger, tuning: ProxyTuning) {
        self.snapshots = snapshots
        self.settings = settings
        self.logger = logger
        self.tuning = tuning
    }

    /// The number of event loops `settings` asks for (0: one per online CPU).
    public var loopCount: Int {
        settings.workers > 0 ? settings.workers : max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Binds, runs the loops until graceful shutdown or cancellation, and returns once every loop
    /// has stopped.
    public func run() async throws {
        let controls = try start()
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await waitForExit(controls)
            } onCancel: {
                for c in controls.controls { c.requestStop() }
            }
        } onGracefulShutdown: {
            for c in controls.controls { c.requestDrain() }
        }
        phase.withLock { $0 = .finished }
        logger.info("proxy stopped")
    }

    /// Per-loop figures and the bound addresses, for the stats service.
    public func status() -> ProxyStatus {
        phase.withLock { phase in
            guard case .running(let controls, let listening) = phase else { return ProxyStatus(loops: [], listening: [:]) }
            let loops = controls.map { c in
                ProxyStatus.Loop(index: c.index,
                                 openConnections: c.openConnections.load(ordering: .relaxed),
                                 acceptedTotal: c.acceptedTotal.load(ordering: .relaxed),
                                 pipesPooled: c.pipesPooled.load(ordering: .relaxed),
                                 pipesInUse: c.pipesInUse.load(ordering: .relaxed),
                                 copyFallbacks: c.copyFallbacks.load(ordering: .relaxed),
                                 draining: c.draining.load(ordering: .relaxed))
            }
            return ProxyStatus(loops: loops, listening: listening)
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
        try phase.withLock { phase in
            guard case .idle = phase else { throw ProxyError.alreadyRunning }
            phase = .running([], [:])
        }
        let (snapshot, generation) = snapshots.load()
        let count = loopCount
        // Bind everything first: loop 0 binds the configured address, the others bind what it
        // got (so a configured port 0 means one ephemeral port shared by all loops).
        var bound: [[Listener]] = []
        var listening: [String: Endpoint] = [:]
        for route in snapshot.frontends {
            try Listener.checkFree(frontend: route.name, address: route.config.listen)
        }
        do {
            for _ in 0..<count {
                var listeners: [Listener] = []
                for route in snapshot.frontends {
                    let address = listening[route.name] ?? route.config.listen
                    do {
                        let listener = try Listener.bind(frontend: route.name, address: address, notSentLowWater: tuning.notSentLowWater)
                        listeners.append(listener)
                        listening[route.name] = listener.address
                    } catch {
                        for l in listeners { SocketCalls.close(l.fd) }
                        throw error
                    }
                }
                bound.append(listeners)
            }
        } catch {
            for listeners in bound { for l in listeners { SocketCalls.close(l.fd) } }
            phase.withLock { $0 = .idle }
            throw error
        }
        var loops: [EventLoop] = []
        do {
            for (i, listeners) in bound.enumerated() {
                loops.append(try EventLoop(index: i, listeners: listeners, snapshot: snapshot, generation: generation,
                                           snapshots: snapshots, tuning: tuning, logger: logger))
            }
        } catch {
            for listeners in bound.dropFirst(loops.count) { for l in listeners { SocketCalls.close(l.fd) } }
            phase.withLock { $0 = .idle }
            throw error
        }
        let controls = loops.map(\.control)
        phase.withLock { $0 = .running(controls, listening) }
        for (name, address) in listening.sorted(by: { $0.key < $1.key }) {
            logger.info("proxy listening", metadata: ["frontend": "\(name)", "address": "\(address)", "loops": "\(count)"])
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
