/// One server the health checker watches: who it is, where it listens, and how to check it.
///
/// A value, compared as a whole on reload: `HealthChecker.update(targets:)` keeps the state of a
/// target whose id, address and check settings are all unchanged, and starts any other afresh.
public struct HealthTarget: Equatable, Sendable, CustomStringConvertible {
    /// The server's identity across reloads (pool and server name).
    public var id: ServerID
    /// The address checks connect to (the server's `addr`).
    public var address: Endpoint
    /// Interval, timeout, rise, fall, send and expect of the server's pool.
    public var check: HealthCheckConfig

    /// A target for server `id` at `address`, checked as `check` says.
    public init(id: ServerID, address: Endpoint, check: HealthCheckConfig) {
        self.id = id
        self.address = address
        self.check = check
    }

    /// `pool/name (ip:port)`, as log lines name a server.
    public var description: String { "\(id) (\(address))" }

    /// One target per server of every pool in `config`, in pool then server order: what the
    /// runtime hands to `HealthChecker.update(targets:)` at start and on every reload.
    ///
    /// Servers with weight 0 are checked too, so that an operator who raises the weight again
    /// gets a server whose health is already known.
    public static func targets(for config: ConveyConfig) -> [HealthTarget] {
        config.pools.flatMap { pool in
            pool.servers.map { server in
                HealthTarget(id: ServerID(pool: pool.name, name: server.name), address: server.address,
                             check: pool.health)
            }
        }
    }
}
