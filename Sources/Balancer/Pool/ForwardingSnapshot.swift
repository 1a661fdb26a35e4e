/// Identifies a server across reloads: same pool, same server name.
public struct ServerID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var pool: String
    public var name: String

    public init(pool: String, name: String) {
        self.pool = pool
        self.name = name
    }

    /// By pool, then name (the order of logs and reports).
    public static func < (a: ServerID, b: ServerID) -> Bool { (a.pool, a.name) < (b.pool, b.name) }

    public var description: String { "\(pool)/\(name)" }
}

/// Whether a server takes new connections.
public enum ServerState: String, Sendable, CaseIterable {
    /// Healthy and weighted: takes new flows.
    case up
    /// Failed its health checks: takes no new flows; established ones continue.
    case down
    /// Weight 0 or removed from the config: no new flows; established ones continue until
    /// they end or the pool's drain timeout passes. Or drained by the operator at runtime
    /// (`BalancerRuntime.setDrained`): established ones continue until they end.
    case drain
    /// A backup server, healthy and weighted, held in reserve: it takes new flows only while
    /// no non-backup server of its pool can (then its state is `up`).
    case standby
}

/// Which servers of its pool take a frontend's new connections.
public enum ServingServers: String, Sendable, Equatable {
    /// Its servers (the non-backup ones, when the pool has backups).
    case servers
    /// Its backup servers: no other server of the pool can.
    case backups
    /// None: no server of the pool can take a new connection.
    case none
}

/// Everything a data path needs to place and keep connections, as one immutable value.
///
/// Built by `BalancerRuntime` on every config reload, health change and drain expiry, and
/// published through `SnapshotPublisher`; data-path threads adopt it between batches.
public struct ForwardingSnapshot: Sendable {
    public var frontends: [FrontendRoute]

    public init(frontends: [FrontendRoute]) { self.frontends = frontends }

    /// The live route of the frontend called `name` (else its draining one).
    public func frontend(named name: String) -> FrontendRoute? {
        frontends.first { $0.name == name && !$0.isDraining } ?? frontends.first { $0.name == name }
    }
}

/// One frontend with the servers of its pool, as of one snapshot.
public struct FrontendRoute: Sendable {
    public var config: FrontendConfig
    /// The pool's timeouts and health settings.
    public var pool: PoolConfig
    /// Every server of the pool that still holds or may take flows, in a stable order,
    /// including draining ones (removed servers stay here until their drain time passes).
    public var servers: [ServerRoute]
    /// Indices into `servers` that may take new flows: the non-backup servers that are up
    /// with weight > 0, or, when there is none, the backup servers that are.
    public var selectable: [Int]
    /// Indices into `servers` of the backups in state `standby`: the AF_XDP data plane turns
    /// to them when no selectable server has a MAC address yet.
    public var standbyBackups: [Int]
    /// Prebuilt consistent-hash table over `selectable` for `maglev` and `source` frontends
    /// (the table build is too costly to repeat per data-path thread).
    public var maglev: MaglevTable?
    public var counters: FrontendCounters
    /// The frontend, or this listen address of it, left the configuration: no listener and
    /// no new connections; its open ones go on (on `servers`, all draining) until the
    /// drain ends and the route leaves the snapshot. A frontend that moved to another address
    /// has two routes with its name: this one at the old address, and its live one.
    public var isDraining: Bool
    /// For `wrr`: one smooth weighted round-robin cycle over `selectable`, as indices into
    /// `servers`, which every data-path thread walks with the frontend's shared cursor
    /// (`FrontendCounters.wrrPosition`), so turns interleave across threads too. Empty when
    /// the algorithm is another, or the cycle would exceed `maxWRRCycle` (then each thread
    /// runs its own round robin: the proportions still hold).
    public var wrrCycle: [Int32]

    /// The longest shared `wrr` cycle a route holds (256 KiB).
    public static let maxWRRCycle = 1 << 16

    public var name: String { config.name }

    /// New flows go to backup servers: no non-backup server of the pool can take them. (A
    /// pool of backups only is never "on backup": its servers are all it has.)
    public var onBackup: Bool {
        guard let first = selectable.first, servers[first].isBackup else { return false }
        return pool.servers.contains { !$0.backup }
    }

    /// Which of its pool's servers take this frontend's new flows.
    public var serving: ServingServers {
        selectable.isEmpty ? .none : (onBackup ? .backups : .servers)
    }

    public init(config: FrontendConfig, pool: PoolConfig, servers: [ServerRoute], selectable: [Int],
                standbyBackups: [Int] = [], maglev: MaglevTable?, counters: FrontendCounters, isDraining: Bool = false) {
        self.isDraining = isDraining
        self.standbyBackups = standbyBackups
        self.config = config
        self.pool = pool
        self.servers = servers
        self.selectable = selectable
        self.maglev = maglev
        self.counters = counters
        var cycle: [Int32] = []
        if config.balance == .wrr,
           let order = SmoothWeightedRoundRobin.cycle(weights: selectable.map { servers[$0].weight }, limit: Self.maxWRRCycle) {
            cycle = order.map { Int32(selectable[$0]) }
        }
        self.wrrCycle = cycle
    }
}

/// One server as a data path sees it.
public struct ServerRoute: Sendable {
    public var id: ServerID
    public var address: Endpoint
    /// The weight schedulers use: the configured one, but while a `slow_start` ramp runs in
    /// the pool (`wrr` and `leastconn` frontends), every weight is scaled by
    /// `slowStartScale` and the ramping server's grows from 1 to its full scaled weight.
    public var weight: Int
    /// `weight = ...` in the file (what `/stats` shows).
    public var configuredWeight: Int
    /// How far its `slow_start` ramp has come: 100 when none runs.
    public var slowStartPercent: Int
    public var state: ServerState
    /// `backup = true`: takes new flows only while no non-backup server of the pool can.
    public var isBackup: Bool
    /// False once a draining server's drain timeout has passed, or while it is down in a pool
    /// with `on_down = "close"`: its remaining flows are closed.
    public var keepsFlows: Bool
    /// `keepsFlows` is false because the server is down and its pool says `on_down = "close"`
    /// (what a data path names as the reason its connections end).
    public var closedWhileDown: Bool
    /// `max_connections` (0: none): see `ServerConfig.maxConnections`.
    public var maxConnections: Int
    public var counters: ServerCounters

    /// Weights in a pool with a `slow_start` ramp under way are multiplied by this, so that a
    /// server of weight 1 can ramp in steps too.
    public static let slowStartScale = 16

    public init(id: ServerID, address: Endpoint, weight: Int, state: ServerState, isBackup: Bool = false,
                keepsFlows: Bool = true, closedWhileDown: Bool = false, counters: ServerCounters, configuredWeight: Int? = nil,
                slowStartPercent: Int = 100, maxConnections: Int = 0) {
        self.closedWhileDown = closedWhileDown
        self.maxConnections = maxConnections
        self.configuredWeight = configuredWeight ?? weight
        self.slowStartPercent = slowStartPercent
        self.isBackup = isBackup
        self.id = id
        self.address = address
        self.weight = weight
        self.state = state
        self.keepsFlows = keepsFlows
        self.counters = counters
    }
}
