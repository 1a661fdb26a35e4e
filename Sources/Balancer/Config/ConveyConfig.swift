/// The whole validated configuration: what `convey --check` prints and what reload swaps in.
///
/// A value type: the loader builds it from TOML, validation guarantees its invariants
/// (every frontend names a pool that exists and has servers, weights in range, NAT ports sane),
/// and everything downstream reads it without re-checking.
public struct ConveyConfig: Sendable, Equatable {
    /// Frontends (listeners / VIPs), sorted by name.
    /// Whether some server's `addr` is a host name (looked up at each load).
    public var namesHosts: Bool { pools.contains { $0.servers.contains { $0.hostName != nil } } }

    public var frontends: [FrontendConfig]
    /// Backend pools, sorted by name.
    public var pools: [PoolConfig]
    public var stats: StatsConfig
    public var proxy: ProxySettings
    public var passthrough: PassthroughConfig
    public var xdp: XDPConfig

    public init(frontends: [FrontendConfig], pools: [PoolConfig], stats: StatsConfig = .init(),
                proxy: ProxySettings = .init(), passthrough: PassthroughConfig = .init(),
                xdp: XDPConfig = .init()) {
        self.frontends = frontends.sorted { $0.name < $1.name }
        self.pools = pools.sorted { $0.name < $1.name }
        self.stats = stats
        self.proxy = proxy
        self.passthrough = passthrough
        self.xdp = xdp
    }

    /// The pool called `name`, if any.
    public func pool(named name: String) -> PoolConfig? { pools.first { $0.name == name } }
}

/// One listener: `[frontends.NAME]`.
public struct FrontendConfig: Sendable, Equatable {
    public var name: String
    /// `listen_addr`: the VIP and port clients connect to.
    public var listen: Endpoint
    /// `backend`: the name of the pool that serves it.
    public var pool: String
    public var balance: BalanceAlgorithm
    /// 0 = unlimited. Proxy mode stops accepting at the limit (clients wait in the listen
    /// queue); the AF_XDP modes drop new SYNs while the frontend's open flows are at it.
    public var maxConnections: Int
    public var proxyProtocol: ProxyProtocolVersion
    /// `log_connections` (proxy mode): log one line per connection when it ends.
    public var logConnections: Bool
    /// `allow` / `deny`: the client addresses that may connect.
    public var sources: SourceFilter
    /// `accept_proxy_protocol` (proxy mode): every client connection opens with a PROXY
    /// header (v1 or v2) from a balancer in front, whose client address is the client's.
    public var acceptProxyProtocol: Bool
    /// `proxy_protocol_peers`: with `acceptProxyProtocol`, the balancers (address prefixes)
    /// whose connections open with a header; a client from elsewhere is its own client, sends
    /// none and cannot forge one. Empty: every peer sends one.
    public var proxyProtocolPeers: SourceFilter
    /// `tcp_keepalive` (proxy mode): seconds of silence after which the kernel probes both
    /// sockets of a connection (the client's and the server's), so a peer that vanished is
    /// found and its connection closed, and middleboxes keep the idle connection's state, as
    /// HAProxy's `option tcpka` and nginx's `so_keepalive`. 0: off (the system's default).
    public var tcpKeepalive: Int

    public init(name: String, listen: Endpoint, pool: String, balance: BalanceAlgorithm = .wrr,
                maxConnections: Int = 0, proxyProtocol: ProxyProtocolVersion = .none, logConnections: Bool = false,
                sources: SourceFilter = SourceFilter(), acceptProxyProtocol: Bool = false,
                proxyProtocolPeers: SourceFilter = SourceFilter(), tcpKeepalive: Int = 0) {
        self.tcpKeepalive = tcpKeepalive
        self.acceptProxyProtocol = acceptProxyProtocol
        self.proxyProtocolPeers = proxyProtocolPeers
        self.name = name
        self.listen = listen
        self.pool = pool
        self.balance = balance
        self.maxConnections = maxConnections
        self.proxyProtocol = proxyProtocol
        self.logConnections = logConnections
        self.sources = sources
    }
}

/// `balance = ...`: how a frontend picks a server for a new connection.
/// `on_down`: what becomes of a server's open connections when its health checks (or
/// `error_limit`) mark it down. New connections leave it either way.
public enum ServerDownAction: String, Sendable, CaseIterable {
    /// They go on (the default, as HAProxy's and IPVS's): a server that fails its checks may
    /// still serve what it holds, and a dead one's connections end by themselves.
    case keep
    /// They are closed at once, as HAProxy's `on-marked-down shutdown-sessions` and IPVS's
    /// `expire_nodest_conn`: proxy mode resets both sides, the AF_XDP modes forget the flows
    /// and answer their next segments with resets, so clients learn now, not after their own
    /// retransmission timeouts, and reconnect to a server that is up.
    case close
}

public enum BalanceAlgorithm: String, Sendable, CaseIterable {
    /// Smooth weighted round robin (nginx-style): exact proportions, evenly interleaved.
    case wrr
    /// Fewest current connections, weighted.
    case leastconn
    /// Maglev consistent hashing of the connection's 5-tuple.
    case maglev
    /// Hash of the client address: one client sticks to one server.
    case source
}

/// `proxy_protocol = ...`: the PROXY protocol header sent to servers in proxy mode.
public enum ProxyProtocolVersion: String, Sendable, CaseIterable {
    case none, v1, v2
}

/// One backend pool: `[backends.NAME]`.
public struct PoolConfig: Sendable, Equatable {
    public var name: String
    public var health: HealthCheckConfig
    public var connectTimeout: Duration
    public var idleTimeout: Duration
    public var drainTimeout: Duration
    /// `slow_start`: a server its health checks bring back up takes a share of new
    /// connections that grows from almost nothing to its weight's over this time (`wrr` and
    /// `leastconn` frontends), so a cold server is not handed every new client at once (with
    /// `leastconn`, its empty connection count would draw them all). Zero: off.
    public var slowStart: Duration
    /// `error_limit` (proxy mode): this many connection attempts in a row to a server that
    /// fail (refused, unreachable, timed out; a successful one starts the count again) mark it
    /// down at once, as `fall` failed checks would, instead of its clients' connects failing
    /// over to other servers until the next checks notice; its checks bring it back after
    /// `rise` passes. Zero: off (only the health checks decide).
    public var errorLimit: Int
    /// `queue_timeout` (proxy mode): how long a client waits for a place at a server with
    /// `max_connections` before it is closed (counted in `queue_timeouts`). The file's
    /// default is the pool's `connect_timeout`, as HAProxy's `timeout queue`.
    public var queueTimeout: Duration
    /// `max_queue` (proxy mode): at most this many clients of one frontend wait for a place
    /// at this pool's servers; one more is closed at once (counted in `queue_full`), as
    /// HAProxy answers past its `maxqueue`, rather than holding it until `queue_timeout`.
    /// Zero: no limit.
    public var maxQueue: Int
    /// `on_down`: what becomes of a server's open connections when it is marked down.
    public var onDown: ServerDownAction
    /// Servers, sorted by name.
    public var servers: [ServerConfig]

    public init(name: String, health: HealthCheckConfig = .init(), connectTimeout: Duration = .seconds(2),
                idleTimeout: Duration = .seconds(300), drainTimeout: Duration = .seconds(30),
                slowStart: Duration = .zero, errorLimit: Int = 0, queueTimeout: Duration? = nil, maxQueue: Int = 0,
                onDown: ServerDownAction = .keep, servers: [ServerConfig]) {
        self.onDown = onDown
        self.queueTimeout = queueTimeout ?? connectTimeout
        self.maxQueue = maxQueue
        self.slowStart = slowStart
        self.errorLimit = errorLimit
        self.name = name
        self.health = health
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.drainTimeout = drainTimeout
        self.servers = servers.sorted { $0.name < $1.name }
    }
}

/// Active health checking of every server in a pool.
public struct HealthCheckConfig: Sendable, Equatable {
    public var interval: Duration
    public var timeout: Duration
    /// Consecutive successes that bring a down server back.
    public var rise: Int
    /// Consecutive failures that take an up server out.
    public var fall: Int
    /// Bytes sent after connecting (empty: connect only).
    public var send: [UInt8]
    /// Prefix the reply must start with (empty: any reply, or none).
    public var expect: [UInt8]
    /// The PROXY protocol header a check opens with (v1 `PROXY UNKNOWN`, v2 `LOCAL`), for
    /// servers that require one on every connection. Nil: as the frontends using the pool send
    /// (see `HealthTarget.targets`).
    public var proxyProtocol: ProxyProtocolVersion?
    /// `health_check_port`: the port checks connect to on every server's address, for servers
    /// whose health is served apart from their traffic (a status port, or DSR backends that
    /// serve only the VIP); a server's own `health_check_port` outranks it. Nil: each
    /// server's own port.
    public var port: UInt16?
    /// `health_check_http`: checks are HTTP requests judged by their status (nil: a TCP
    /// connect, with `send` and `expect` if set; the two exclude each other).
    public var http: HTTPHealthCheck?

    public init(interval: Duration = .seconds(5), timeout: Duration = .seconds(1), rise: Int = 2,
                fall: Int = 3, send: [UInt8] = [], expect: [UInt8] = [], proxyProtocol: ProxyProtocolVersion? = nil,
                port: UInt16? = nil, http: HTTPHealthCheck? = nil) {
        self.proxyProtocol = proxyProtocol
        self.port = port
        self.http = http
        self.interval = interval
        self.timeout = timeout
        self.rise = rise
        self.fall = fall
        self.send = send
        self.expect = expect
    }
}

/// One server: `[backends.POOL.servers.NAME]`.
public struct ServerConfig: Sendable, Equatable {
    public var name: String
    public var address: Endpoint
    /// 0 = drain (no new flows); at most `ServerConfig.maxWeight`.
    public var weight: Int
    /// A backup server (`backup = true`) takes new flows only while no other server of its
    /// pool can: every non-backup one is down, at weight 0 or draining. Then all healthy
    /// backups share them by weight, and they stop taking new ones (keeping those they have)
    /// as soon as a non-backup server is back.
    public var backup: Bool
    /// `max_connections`: connections this server holds at most, over every frontend and
    /// event loop or worker (HAProxy's server `maxconn`, IPVS's `u-threshold`). Proxy mode: a
    /// client whose candidate servers are all at their limit waits in its frontend's queue, up
    /// to the pool's `queue_timeout`, for the first place to free. AF_XDP modes: a new flow
    /// goes to a candidate with room, and with none its SYN is dropped (the client sends it
    /// again). Zero: no limit.
    public var maxConnections: Int
    /// `health_check_port` set on this server: the port its checks connect to, outranking its
    /// pool's (HAProxy's server `port`, keepalived's `connect_port`). Nil: the pool's, or the
    /// server's own.
    public var healthCheckPort: UInt16?
    /// The host name `addr` gave instead of an address (`"web1.internal:80"`), which the load
    /// resolved to `address`; nil when `addr` is an address.
    public var hostName: String?

    public static let maxWeight = 1000

    public init(name: String, address: Endpoint, weight: Int = 1, backup: Bool = false, maxConnections: Int = 0,
                healthCheckPort: UInt16? = nil, hostName: String? = nil) {
        self.hostName = hostName
        self.maxConnections = maxConnections
        self.healthCheckPort = healthCheckPort
        self.name = name
        self.address = address
        self.weight = weight
        self.backup = backup
    }
}

/// `[stats]`: where the stats HTTP server listens.
public struct StatsConfig: Sendable, Equatable {
    public var address: IPAddress
    /// 0 disables the stats server.
    public var port: UInt16
    /// The stats server takes commands (`POST /servers/POOL/NAME/drain|ready`): anyone who
    /// can reach its address can then drain servers, so it is off unless asked for.
    public var admin: Bool
    /// `state_file` (an absolute path; with `admin`): where the operator's drains are kept,
    /// so that a restart keeps them (see `DrainStateFile`). Nil: they last until a restart.
    public var stateFile: String?

    public init(address: IPAddress = .v4(0x7F00_0001), port: UInt16 = 7000, admin: Bool = false, stateFile: String? = nil) {
        self.address = address
        self.port = port
        self.admin = admin
        self.stateFile = stateFile
    }
}

/// `[proxy]`: proxy-mode settings.
public struct ProxySettings: Sendable, Equatable {
    /// Event-loop threads; 0 = one per CPU core.
    public var workers: Int

    public init(workers: Int = 0) { self.workers = workers }
}

/// `[passthrough]` (the seed's section, used by both AF_XDP modes).
public struct PassthroughConfig: Sendable, Equatable {
    /// Flows tracked per worker (hard cap; the oldest idle flow is evicted).
    public var connectionTrackerCapacity: Int
    /// Workers; 0 = one per RX queue of the interface.
    public var workers: Int
    public var statsUpdateFrequency: Duration

    public init(connectionTrackerCapacity: Int = 20_000, workers: Int = 0,
                statsUpdateFrequency: Duration = .seconds(5)) {
        self.connectionTrackerCapacity = connectionTrackerCapacity
        self.workers = workers
        self.statsUpdateFrequency = statsUpdateFrequency
    }
}

/// `[xdp]`: AF_XDP data path settings.
public struct XDPConfig: Sendable, Equatable {
    public enum AttachMode: String, Sendable, CaseIterable { case auto, native, skb }
    public enum ZeroCopyMode: String, Sendable, CaseIterable { case auto, on, off }

    /// Interface; `--iface` overrides it.
    public var iface: String?
    public var attach: AttachMode
    public var zeroCopy: ZeroCopyMode
    /// Passthrough source addresses, at most one per family (`nat_addr`); empty = the
    /// interface's first IPv4 address and first global IPv6 address.
    public var natAddresses: [IPAddress]
    /// Passthrough NAT ports; nil = the ports above the kernel's `ip_local_port_range`.
    public var natPorts: ClosedRange<UInt16>?
    public var synTimeout: Duration
    public var establishedTimeout: Duration
    public var closingTimeout: Duration

    public init(iface: String? = nil, attach: AttachMode = .auto, zeroCopy: ZeroCopyMode = .auto,
                natAddresses: [IPAddress] = [], natPorts: ClosedRange<UInt16>? = nil,
                synTimeout: Duration = .seconds(5), establishedTimeout: Duration = .seconds(300),
                closingTimeout: Duration = .seconds(10)) {
        self.iface = iface
        self.attach = attach
        self.zeroCopy = zeroCopy
        self.natAddresses = natAddresses
        self.natPorts = natPorts
        self.synTimeout = synTimeout
        self.establishedTimeout = establishedTimeout
        self.closingTimeout = closingTimeout
    }
}
