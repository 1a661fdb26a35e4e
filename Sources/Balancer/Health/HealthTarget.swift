/// One server the health checker watches: who it is, where it listens, and how to check it.
///
/// A value, compared as a whole on reload: `HealthChecker.update(targets:)` keeps the state of a
/// target whose id, address and check settings are all unchanged, and starts any other afresh.
public struct HealthTarget: Equatable, Sendable, CustomStringConvertible {
    /// The server's identity across reloads (pool and server name).
    public var id: ServerID
    /// The server's address (`addr`), which identifies the machine across reloads.
    public var address: Endpoint
    /// The address checks connect to: `address`, at `health_check_port` when one is set.
    public var checkedAddress: Endpoint
    /// Interval, timeout, rise, fall, send and expect of the server's pool.
    public var check: HealthCheckConfig
    /// The PROXY protocol header each check opens with (resolved: `check.proxyProtocol`, or
    /// what the pool's frontends send).
    public var proxyHeader: ProxyProtocolVersion

    /// A target for server `id` at `address`, checked as `check` says, on port `checkPort`
    /// (the server's own `health_check_port`) or else `check.port` or else its own.
    public init(id: ServerID, address: Endpoint, check: HealthCheckConfig, proxyHeader: ProxyProtocolVersion? = nil,
                checkPort: UInt16? = nil) {
        self.id = id
        self.address = address
        self.checkedAddress = Endpoint(address: address.address, port: checkPort ?? check.port ?? address.port)
        self.check = check
        self.proxyHeader = proxyHeader ?? check.proxyProtocol ?? .none
    }

    /// `pool/name (ip:port)`, or `pool/name (ip:port, checks on port N)`, as log lines name a server.
    public var description: String { "\(id) (\(address)\(checkedElsewhere ? ", checks on port \(checkedAddress.port)" : ""))" }

    /// The server's address, and the port its checks use when that is another:
    /// `10.0.0.5:80` or `10.0.0.5:80 (checks on port 8080)`.
    public var addressText: String {
        checkedElsewhere ? "\(address) (checks on port \(checkedAddress.port))" : "\(address)"
    }

    /// Checks go to another port than the server's traffic (`health_check_port`).
    public var checkedElsewhere: Bool { checkedAddress != address }

    /// One target per server of every pool in `config`, in pool then server order: what the
    /// runtime hands to `HealthChecker.update(targets:)` at start and on every reload.
    ///
    /// Servers with weight 0 are checked too, so that an operator who raises the weight again
    /// gets a server whose health is already known.
    ///
    /// A pool without `health_check_proxy_protocol` is checked with the header its frontends
    /// send when they all send the same one (`frontendsSendHeaders`: proxy mode; the AF_XDP
    /// modes send none): a server that requires the header then sees it on checks too, as
    /// HAProxy's `check-send-proxy` does.
    ///
    /// A check sent to another port (`health_check_port`) reaches a status service, not the
    /// one behind the frontends: it opens with a header only when the pool's
    /// `health_check_proxy_protocol` says so (HAProxy's `check-send-proxy` likewise).
    public static func targets(for config: ConveyConfig, frontendsSendHeaders: Bool = true) -> [HealthTarget] {
        config.pools.flatMap { pool in
            let inherited = frontendsSendHeaders ? frontendHeader(of: pool.name, in: config) : .none
            return pool.servers.map { server in
                var target = HealthTarget(id: ServerID(pool: pool.name, name: server.name), address: server.address,
                                          check: pool.health, checkPort: server.healthCheckPort)
                target.proxyHeader = pool.health.proxyProtocol ?? (target.checkedElsewhere ? .none : inherited)
                return target
            }
        }
    }

    /// The PROXY header every frontend of pool `name` sends, or `.none` when they differ or
    /// there is none.
    public static func frontendHeader(of name: String, in config: ConveyConfig) -> ProxyProtocolVersion {
        let versions = Set(config.frontends.filter { $0.pool == name }.map(\.proxyProtocol))
        return versions.count == 1 ? versions.first! : .none
    }
}
