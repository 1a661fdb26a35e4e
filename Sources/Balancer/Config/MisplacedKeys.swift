/// Keys an operator may write in the wrong table, or by HAProxy's name, and where they go:
/// the unknown-key warning says so instead of only "unknown key".
enum MisplacedKeys {
    static let frontendKeys = ["listen_addr", "backend", "balance", "proxy_protocol", "accept_proxy_protocol", "proxy_protocol_peers", "log_connections", "allow", "deny", "tcp_keepalive"]
    static let poolKeys = ["health_check_interval", "health_check_timeout", "rise", "fall", "health_check_send",
                           "health_check_expect", "health_check_proxy_protocol", "health_check_port", "health_check_http",
                           "health_check_http_host", "health_check_http_status", "connect_timeout", "idle_timeout",
                           "drain_timeout", "slow_start", "error_limit", "queue_timeout",
                           "max_queue", "on_down"]
    static let serverKeys = ["addr", "weight", "backup"]

    /// For a `[frontends.NAME]` table.
    static func inFrontend() -> [String: String] {
        var hints: [String: String] = [:]
        for key in poolKeys { hints[key] = "\(key) is a pool setting: put it under [backends.POOL]" }
        for key in serverKeys { hints[key] = "\(key) is a server setting: put it under [backends.POOL.servers.NAME]" }
        hints["maxconn"] = "HAProxy's maxconn is max_connections here"
        hints["addr"] = "a frontend's address is listen_addr (addr is a server's)"
        for key in ["tcpka", "so_keepalive", "keepalive"] { hints[key] = "TCP keepalive is tcp_keepalive = SECONDS here" }
        return hints
    }

    /// For the `[backends.POOL]` table of pool `pool`.
    static func inPool(_ pool: String) -> [String: String] {
        var hints: [String: String] = [:]
        for key in frontendKeys { hints[key] = "\(key) is a frontend setting: put it under [frontends.NAME]" }
        for key in serverKeys + ["max_connections"] {
            hints[key] = "\(key) is set per server: put it under [backends.\(pool).servers.NAME]"
        }
        hints["max_connections"]! += " (or per frontend, under [frontends.NAME])"
        hints["maxconn"] = "HAProxy's maxconn is max_connections here, set per server under [backends.\(pool).servers.NAME]"
        hints["maxqueue"] = "HAProxy's maxqueue is max_queue here (the clients one frontend may have waiting)"
        for key in ["check_port", "connect_port"] {
            hints[key] = "the port health checks connect to is health_check_port here"
        }
        for key in ["on_marked_down", "on-marked-down", "shutdown_sessions", "expire_nodest_conn"] {
            hints[key] = "on_down = \"close\" closes a server's connections when it is marked down"
        }
        return hints
    }

    /// For a `[backends.POOL.servers.NAME]` table of pool `pool`.
    static func inServer(_ pool: String) -> [String: String] {
        var hints: [String: String] = [:]
        for key in poolKeys { hints[key] = "\(key) is a pool setting: put it under [backends.\(pool)], for all its servers" }
        for key in frontendKeys { hints[key] = "\(key) is a frontend setting: put it under [frontends.NAME]" }
        hints["maxconn"] = "HAProxy's maxconn is max_connections here"
        hints["maxqueue"] = "HAProxy's maxqueue is max_queue here, a pool setting: put it under [backends.\(pool)]"
        hints["port"] = "a server's port goes in addr = \"IP:PORT\"; the port its health checks connect to, if another, "
            + "is health_check_port"
        for key in ["check_port", "connect_port"] {
            hints[key] = "the port health checks connect to is health_check_port here (on a server, or on its pool for all)"
        }
        return hints
    }
}
