import ServiceLifecycle

/// `error_limit` (proxy mode): marks a server down once that many of its clients' connection
/// attempts in a row have failed, without waiting for its health checks to notice.
///
/// The event loops count the failures in the server's counters
/// (`ServerCounters.connectFailuresInARow`); this service reads them every `period` and
/// hands a server past its pool's limit to `HealthChecker.markDown`, whose checks then decide
/// when it is back. Reading counters keeps the event loops free of any call into the control
/// plane.
public struct ConnectErrorWatch: Service {
    private let runtime: BalancerRuntime
    private let health: HealthChecker
    private let period: Duration

    public init(runtime: BalancerRuntime, health: HealthChecker, period: Duration = .milliseconds(100)) {
        self.runtime = runtime
        self.health = health
        self.period = period
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            check()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: period) }
        }
    }

    /// One look at every server of the pools that set `error_limit`.
    public func check() {
        // Most configurations set no limit: then there is nothing to read.
        guard runtime.config.pools.contains(where: { $0.errorLimit > 0 }) else { return }
        let view = runtime.view()
        for pool in view.config.pools where pool.errorLimit > 0 {
            for server in pool.servers {
                let id = ServerID(pool: pool.name, name: server.name)
                guard let counters = view.serverCounters[id],
                      counters.connectFailuresInARow.load(ordering: .relaxed) >= Int64(pool.errorLimit) else { continue }
                counters.connectFailuresInARow.store(0, ordering: .relaxed)
                health.markDown(id, because: .clientConnectsFailed(pool.errorLimit))
            }
        }
    }
}
