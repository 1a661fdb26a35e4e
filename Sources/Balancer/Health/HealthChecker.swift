#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Active health checks of every server, shared by all modes (proxy, passthrough, DSR).
///
/// **What a check is.** A TCP connect with a timeout; then, when the pool sets
/// `health_check_send`, those bytes are written; when it sets `health_check_expect`, the reply
/// is read until it has that many bytes (or the server closes, or the timeout passes) and must
/// start with them. The timeout bounds the whole check. See `HealthProbe`.
///
/// **State.** Every server starts up, so traffic flows at once, and is checked right away
/// (after a small per-target jitter, see `HealthCheckSchedule`). `fall` failed checks in a row
/// take it down, `rise` passed checks in a row bring it back (`HealthState`). Each transition is
/// logged at notice level with the server and the reason, and reported to `onChange`, on which
/// the runtime republishes the forwarding snapshot.
///
/// **Concurrency.** One lightweight task per target sleeps until its next check is due and
/// awaits a check that runs entirely on the SwiftNIO event loops: checks of different servers
/// run concurrently, a silent server delays no other, and no data-path thread is involved.
///
/// **Lifecycle.** A `ServiceLifecycle.Service`: checks run between the start of `run()` and
/// graceful shutdown or cancellation, after which `run()` stops every check and returns.
/// `update(targets:)` may be called at any time (before `run()` too) and replaces the target set
/// live on config reload: a target whose id, address and check settings are unchanged keeps its
/// state and its schedule; a new one, or one whose address changed, starts afresh (up,
/// unchecked); one whose check settings alone changed is checked afresh but keeps its verdict
/// (down stays down until `rise` checks pass); a removed one stops, and its status
/// disappears. A target that was down and starts afresh (up) is reported to `onChange` like
/// any other transition, so the runtime never keeps a stale "down".
///
/// The checker knows nothing of proxy or XSK; it only reports health.
public final class HealthChecker: Service, Sendable {
    /// Called on every up↔down transition with the server and its new status.
    ///
    /// Runs on the checker's tasks (or, for a target a reload restarted, on the caller of
    /// `update(targets:)`), one call at a time. It should be quick, must not block, and must not
    /// call `update(targets:)`; reading `status(of:)` is fine.
    public typealias ChangeHandler = @Sendable (ServerID, HealthStatus) -> Void

    private let probe: HealthProbe
    private let logger: Logger
    private let onChange: ChangeHandler
    private let registry: Mutex<Registry>
    /// Held while a transition is logged and reported (see `deliver`); taken before `registry`.
    private let delivery = Mutex<Void>(())

    /// Creates a checker for `targets`; checks begin when `run()` starts.
    ///
    /// - Parameters:
    ///   - targets: the servers to watch; later replaced with `update(targets:)`.
    ///   - group: the event loops checks run on (the process-wide NIO singleton by default).
    ///   - logger: where transitions are logged (notice) and single checks traced (trace).
    ///   - onChange: called on every up↔down transition.
    public init(targets: [HealthTarget] = [],
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                logger: Logger,
                onChange: @escaping ChangeHandler = { _, _ in }) {
        self.probe = HealthProbe(group: group)
        self.logger = logger
        self.onChange = onChange
        self.registry = Mutex(Registry())
        update(targets: targets)
    }

    /// Runs the checks until graceful shutdown or cancellation, then stops them all and returns
    /// once every check task has ended. May be called once per checker.
    public func run() async throws {
        try registry.withLock { registry throws(HealthCheckerError) in
            guard registry.phase == .idle else { throw .alreadyRun }
            registry.phase = .running
            for entry in registry.entries.values { start(entry, in: &registry) }
        }
        logger.info("health checks started", metadata: ["targets": "\(targetCount)"])

        // Returns on graceful shutdown, throws on cancellation: both end the checks.
        try? await gracefulShutdown()

        let tasks = registry.withLock { registry in
            registry.phase = .stopped
            return Array(registry.tasks.values)
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
        logger.info("health checks stopped")
    }

    /// Replaces the set of watched servers (config reload).
    ///
    /// Unchanged targets (same id, address and check settings) keep their state and schedule;
    /// new and changed ones start unchecked, and are checked shortly; removed ones stop at
    /// once. A new server starts up, and so does one whose address changed (it is another
    /// machine now), which, if it was down, is reported to `onChange`; one whose check
    /// settings alone changed keeps its verdict (a down server stays down until `rise` checks
    /// pass: a reload never sends clients to a server known dead). When two targets share an
    /// id, the first one counts.
    public func update(targets: [HealthTarget]) {
        let (kept, started, stopped, revived, keptDown) = registry.withLock { registry in
            var next: [ServerID: Entry] = [:]
            var kept = 0, started = 0
            var revived: [(target: HealthTarget, token: UInt64)] = []
            var keptDown: [(target: HealthTarget, token: UInt64, status: HealthStatus)] = []
            for target in targets where next[target.id] == nil {
                let old = registry.entries[target.id]
                if let old, old.target == target {
                    next[target.id] = old
                    kept += 1
                    continue
                }
                var entry = Entry(target: target, token: registry.newToken())
                if let old, !old.status.isUp {
                    // The same server: the same address, or the same machine still checked at
                    // the same place (only its traffic port moved).
                    let sameServer = old.target.address == target.address
                        || (old.target.address.address == target.address.address && old.target.checkedAddress == target.checkedAddress)
                    if sameServer {
                        // Only its check changed: the same server, still down until `rise`
                        // checks of the new kind pass.
                        entry.state = HealthState(rise: target.check.rise, fall: target.check.fall, up: false)
                        entry.status.isUp = false
                        // Why it is down stays readable (`/stats` last_check) until a new check says.
                        entry.status.lastResult = old.status.lastResult
                        entry.status.lastCheck = old.status.lastCheck
                        // Said again under the new token: a "down" of the old one still on its
                        // way would be dropped as stale (the runtime ignores a repeat).
                        keptDown.append((target, entry.token, entry.status))
                    } else {
                        revived.append((target, entry.token))
                    }
                }
                next[target.id] = entry
                started += 1
                if registry.phase == .running { start(entry, in: &registry) }
            }
            var stopped = 0
            for (id, old) in registry.entries where next[id]?.token != old.token {
                registry.tasks[old.token]?.cancel()
                stopped += 1
            }
            registry.entries = next
            return (kept, started, stopped, revived, keptDown)
        }
        logger.debug("health check targets updated",
                     metadata: ["kept": "\(kept)", "started": "\(started)", "stopped": "\(stopped)"])
        for (target, token, status) in keptDown { deliver(status, of: target.id, token: token) {} }
        for (target, token) in revived {
            deliver(.unchecked, of: target.id, token: token) {
                logger.notice("server \(target.id) now at \(target.addressText) is up until its checks say otherwise: its address changed",
                              metadata: ["server": "\(target.id)", "address": "\(target.address)"])
            }
        }
    }

    /// Marks `server` down at once, as `fall` failed checks would, for a failure seen outside
    /// the checks (`error_limit`: clients' connections to it failing); its next check comes
    /// within a second (a blip, such as a restart, costs little), and its checks bring it back
    /// after `rise` passes. Logged and reported to `onChange`; nothing happens when it is
    /// already down or not watched.
    public func markDown(_ server: ServerID, because failure: HealthCheckFailure) {
        let now = Date()
        let marked: (HealthTarget, HealthStatus, UInt64)? = registry.withLock { registry in
            guard var entry = registry.entries[server], entry.status.isUp else { return nil }
            entry.state = HealthState(rise: entry.target.check.rise, fall: entry.target.check.fall, up: false)
            entry.status = HealthStatus(isUp: false, consecutiveSuccesses: 0, consecutiveFailures: 0,
                                        checks: entry.status.checks, lastResult: .failed(failure), lastCheck: now)
            // Its check task starts again, first check soon (a result of the old task in
            // flight no longer counts: its token is stale).
            registry.tasks[entry.token]?.cancel()
            entry.token = registry.newToken()
            registry.entries[server] = entry
            if registry.phase == .running {
                start(entry, in: &registry, firstDelay: min(entry.target.check.interval, .seconds(1)))
            }
            return (entry.target, entry.status, entry.token)
        }
        guard let (target, status, token) = marked else { return }
        deliver(status, of: server, token: token) {
            logger.notice("server \(server) at \(target.address) is down: \(failure)",
                          metadata: ["server": "\(server)", "address": "\(target.address)", "reason": "\(failure)"])
        }
    }

    /// The current status of `server`, or nil when it is not watched.
    public func status(of server: ServerID) -> HealthStatus? {
        registry.withLock { $0.entries[server]?.status }
    }

    /// The current status of every watched server (for `/stats` and snapshot building).
    public func allStatuses() -> [ServerID: HealthStatus] {
        registry.withLock { $0.entries.mapValues(\.status) }
    }

    /// How many servers are watched.
    public var targetCount: Int { registry.withLock { $0.entries.count } }

    // MARK: - Per-target tasks

    /// Starts the task that checks `entry` (called under the lock, while running).
    private func start(_ entry: Entry, in registry: inout Registry, firstDelay: Duration? = nil) {
        var random = SystemRandomNumberGenerator()
        let delay = firstDelay ?? HealthCheckSchedule.firstCheckDelay(interval: entry.target.check.interval, using: &random)
        let target = entry.target
        let token = entry.token
        // The task removes itself from `tasks` under the same lock this insertion holds, so the
        // removal always follows the insertion.
        registry.tasks[token] = Task {
            await self.monitor(target, token: token, firstDelay: delay)
            self.registry.withLock { _ = $0.tasks.removeValue(forKey: token) }
        }
    }

    /// Checks `target` on its schedule until the task is cancelled.
    private func monitor(_ target: HealthTarget, token: UInt64, firstDelay: Duration) async {
        let address: Result<SocketAddress, HealthCheckFailure>
        do throws(HealthCheckFailure) {
            address = .success(try HealthProbe.socketAddress(of: target.checkedAddress))
        } catch {
            address = .failure(error)
        }
        // An interval of 0 would spin; validation maps 0 to the default, this is a last guard.
        let interval = max(target.check.interval, .milliseconds(10))
        let clock = ContinuousClock()
        var due = clock.now + firstDelay
        while true {
            do { try await Task.sleep(until: due, clock: clock) } catch { return }
            let result: HealthCheckResult
            switch address {
            case .success(let address):
                guard let checked = await probe.check(target, at: address) else { return }
                result = checked
            case .failure(let failure):
                result = .failed(failure)
            }
            if Task.isCancelled { return }
            record(result, of: target, token: token)
            due = HealthCheckSchedule.nextCheck(after: due, interval: interval, now: clock.now)
        }
    }

    /// Applies one check result to the target's state, then logs and reports a transition.
    private func record(_ result: HealthCheckResult, of target: HealthTarget, token: UInt64) {
        let now = Date()
        let change: (HealthState.Transition, HealthStatus)? = registry.withLock { registry in
            guard var entry = registry.entries[target.id], entry.token == token else { return nil }
            // A check this host could not make leaves the server's state as it was.
            let transition = result.isInconclusive ? nil : entry.state.record(passed: result.passed)
            entry.status = HealthStatus(isUp: entry.state.isUp,
                                        consecutiveSuccesses: entry.state.consecutiveSuccesses,
                                        consecutiveFailures: entry.state.consecutiveFailures,
                                        checks: entry.status.checks + 1, lastResult: result, lastCheck: now)
            registry.entries[target.id] = entry
            return transition.map { ($0, entry.status) }
        }
        logger.trace("health check", metadata: ["server": "\(target.id)", "address": "\(target.address)",
                                                "result": "\(result)"])
        guard let (transition, status) = change else { return }
        deliver(status, of: target.id, token: token) {
            switch transition {
            case .wentDown:
                logger.notice("server \(target.id) at \(target.addressText) is down: \(result) (\(Self.checks(status.consecutiveFailures, "failed")))",
                              metadata: ["server": "\(target.id)", "address": "\(target.address)",
                                         "reason": "\(result)"])
            case .wentUp:
                logger.notice("server \(target.id) at \(target.addressText) is up again (\(Self.checks(status.consecutiveSuccesses, "passed")))",
                              metadata: ["server": "\(target.id)", "address": "\(target.address)",
                                         "reason": "\(result)"])
            }
        }
    }

    /// Logs and reports a transition, unless the target it belongs to has been replaced or
    /// removed by a reload in the meantime, or has already moved on to the opposite state.
    ///
    /// Deliveries are serialized, and each re-checks under `delivery` that its entry is still
    /// current: a result of a replaced target that was recorded just before a reload can then
    /// never reach `onChange` after the reload's own report, which would leave the runtime with a
    /// stale verdict.
    private func deliver(_ status: HealthStatus, of server: ServerID, token: UInt64, log: () -> Void) {
        delivery.withLock { _ in
            let current = registry.withLock { registry -> Bool in
                guard let entry = registry.entries[server] else { return false }
                return entry.token == token && entry.status.isUp == status.isUp
            }
            guard current else { return }
            log()
            onChange(server, status)
        }
    }

    // MARK: - Shared state

    /// What the lock guards: the watched targets and the tasks checking them.
    private struct Registry: ~Copyable {
        enum Phase { case idle, running, stopped }

        var phase = Phase.idle
        var entries: [ServerID: Entry] = [:]
        /// Running check tasks by entry token, including those of just-removed targets that
        /// have not yet noticed their cancellation.
        var tasks: [UInt64: Task<Void, Never>] = [:]
        private var lastToken: UInt64 = 0

        /// A token never used before: tells the task of a replaced target from its successor.
        mutating func newToken() -> UInt64 {
            lastToken += 1
            return lastToken
        }
    }

    /// One watched target and what is known about it.
    private struct Entry {
        var target: HealthTarget
        var token: UInt64
        var state: HealthState
        var status: HealthStatus

        init(target: HealthTarget, token: UInt64) {
            self.target = target
            self.token = token
            self.state = HealthState(rise: target.check.rise, fall: target.check.fall)
            self.status = .unchecked
        }
    }
}

extension HealthChecker {
    /// "1 failed check", "3 failed checks in a row".
    static func checks(_ n: Int, _ kind: String) -> String {
        n == 1 ? "1 \(kind) check" : "\(n) \(kind) checks in a row"
    }
}
