import Balancer

/// Prints a configuration with every default filled in, in the TOML of CONFIG.md, so an
/// operator sees exactly what `convey` will run (`convey --check`).
enum ResolvedConfigPrinter {
    static func render(_ c: ConveyConfig, mode: ConveyMode, file: String) -> String {
        var out = "# \(file): valid (mode: \(mode.rawValue))\n"
        if mode == .proxy && !(c.xdp.iface ?? "").isEmpty {
            // [xdp] iface set, no mode flag: the file is likely meant for an AF_XDP mode.
            out += "# checked as proxy mode: pass --dsr or --passthrough to check it as that mode runs it\n"
        }
        func q(_ s: String) -> String { tomlString(s) }
        func k(_ s: String) -> String { tomlKey(s) }
        // Settings an AF_XDP mode does not use (it logs a warning when a file sets them).
        let proxyOnly = mode == .proxy ? "" : "  # proxy mode only"
        /// One address as a string (as most configs write it), two as an array.
        func natAddr(_ addresses: [IPAddress]) -> String {
            addresses.count > 1 ? "[" + addresses.map { q($0.description) }.joined(separator: ", ") + "]"
                                : q(addresses.first?.description ?? "")
        }
        func secs(_ d: Duration) -> String { d.configValue }
        for f in c.frontends {
            out += "\n[frontends.\(k(f.name))]\nlisten_addr = \(q(f.listen.description))\nbackend = \(q(f.pool))\n"
            out += "balance = \(q(f.balance.rawValue))\nmax_connections = \(f.maxConnections)\n"
            out += "proxy_protocol = \(q(f.proxyProtocol.rawValue))\(proxyOnly)\n"
            out += "accept_proxy_protocol = \(f.acceptProxyProtocol)\(proxyOnly)\n"
            if !f.proxyProtocolPeers.allow.isEmpty {
                out += "proxy_protocol_peers = [\(f.proxyProtocolPeers.allow.map { q($0.description) }.joined(separator: ", "))]\(proxyOnly)\n"
            }
            out += "log_connections = \(f.logConnections)\(proxyOnly)\n"
            out += "tcp_keepalive = \(f.tcpKeepalive)\(proxyOnly)\(f.tcpKeepalive == 0 && mode == .proxy ? "  # off" : "")\n"
            if !f.sources.allow.isEmpty { out += "allow = [\(f.sources.allow.map { q($0.description) }.joined(separator: ", "))]\n" }
            if !f.sources.deny.isEmpty { out += "deny = [\(f.sources.deny.map { q($0.description) }.joined(separator: ", "))]\n" }
        }
        for p in c.pools {
            out += "\n[backends.\(k(p.name))]\nhealth_check_interval = \(secs(p.health.interval))\n"
            out += "health_check_timeout = \(secs(p.health.timeout))\nrise = \(p.health.rise)\nfall = \(p.health.fall)\n"
            if let http = p.health.http {
                out += "health_check_http = \(q(http.path))\n"
                out += http.host.map { "health_check_http_host = \(q($0))\n" } ?? "# health_check_http_host: the address checked\n"
                out += "health_check_http_status = \(q(http.statusText))\n"
            } else {
                out += "health_check_send = \(q(String(decoding: p.health.send, as: UTF8.self)))\n"
                out += "health_check_expect = \(q(String(decoding: p.health.expect, as: UTF8.self)))\n"
                out += "# health_check_http: not set (checks are TCP connects)\n"
            }
            // Unset, it follows the frontends, but checks on another port inherit no header (see
            // `HealthTarget.targets`): written out, the value would apply to those too.
            let inherited = mode == .proxy ? HealthTarget.frontendHeader(of: p.name, in: c) : .none
            let header = p.health.proxyProtocol ?? (p.health.port == nil ? inherited : .none)
            if let explicit = p.health.proxyProtocol {
                out += "health_check_proxy_protocol = \(q(explicit.rawValue))\n"
            } else {
                out += "# health_check_proxy_protocol = \(q(inherited.rawValue))  (unset: what the pool's frontends send; "
                    + "none on a health_check_port)\n"
            }
            out += p.health.port.map { "health_check_port = \($0)\n" } ?? "# health_check_port: each server's own port\n"
            out += "connect_timeout = \(secs(p.connectTimeout))\(proxyOnly)\nidle_timeout = \(secs(p.idleTimeout))\(proxyOnly)\n"
            out += "drain_timeout = \(secs(p.drainTimeout))\n"
            out += "on_down = \(q(p.onDown.rawValue))\n"
            out += "slow_start = \(secs(p.slowStart))\n"
            out += "error_limit = \(p.errorLimit)\(proxyOnly)\n"
            if p.servers.contains(where: { $0.maxConnections > 0 }) {
                out += "queue_timeout = \(secs(p.queueTimeout))\(proxyOnly)\n"
                out += "max_queue = \(p.maxQueue)\(proxyOnly)\(p.maxQueue == 0 ? "  # no limit" : "")\n"
            } else {
                out += "# queue_timeout = \(secs(p.queueTimeout))  (no server of the pool sets max_connections: no client waits)\n"
                out += "# max_queue = \(p.maxQueue)\n"
            }
            for s in p.servers {
                let addr = s.hostName.map { q("\($0):\(s.address.port)") + "  # resolves to \(s.address) now" } ?? q(s.address.description)
                out += "  [backends.\(k(p.name)).servers.\(k(s.name))]\n  addr = \(addr)\n  weight = \(s.weight)\n  backup = \(s.backup)\n"
                out += "  max_connections = \(s.maxConnections)\n"
                if let port = s.healthCheckPort {
                    let bare = header != .none && p.health.proxyProtocol == nil && port != s.address.port
                    out += "  health_check_port = \(port)\(bare ? "  # checks there send no PROXY header" : "")\n"
                }
            }
        }
        out += "\n[stats]\naddr = \(q(c.stats.address.description))\nport = \(c.stats.port)\nadmin = \(c.stats.admin)\n"
        if let file = c.stats.stateFile { out += "state_file = \(q(file))\n" }
        out += "\n[proxy]\nworkers = \(c.proxy.workers)\(proxyOnly)\n"
        out += "\n[passthrough]\nconnection_tracker_capacity = \(c.passthrough.connectionTrackerCapacity)\n"
        out += "workers = \(c.passthrough.workers)\nstats_update_frequency = \(secs(c.passthrough.statsUpdateFrequency))\n"
        out += "\n[xdp]\niface = \(q(c.xdp.iface ?? ""))\nattach = \(q(c.xdp.attach.rawValue))\n"
        out += "zero_copy = \(q(c.xdp.zeroCopy.rawValue))\nnat_addr = \(natAddr(c.xdp.natAddresses))"
        out += c.xdp.natAddresses.isEmpty ? "  # passthrough, at start: the interface's first IPv4 and first stable global IPv6 address\n" : "\n"
        out += "nat_ports = \(q(c.xdp.natPorts.map { "\($0.lowerBound)-\($0.upperBound)" } ?? ""))"
        out += c.xdp.natPorts == nil ? "  # passthrough, at start: the ports above the kernel's ip_local_port_range\n" : "\n"
        out += "syn_timeout = \(secs(c.xdp.synTimeout))\nestablished_timeout = \(secs(c.xdp.establishedTimeout))\n"
        out += "closing_timeout = \(secs(c.xdp.closingTimeout))\n"
        return out
    }
}

/// `s` as a TOML basic string (JSON's escaping is TOML's), so the printed file reads back as
/// the same value (and `\r\n` is told from `\n`).
func tomlString(_ s: String) -> String { JSONValue.quoted(s) }

/// `s` as a TOML key: bare when it may be (`A-Za-z0-9_-`), quoted otherwise (a dot, a space,
/// anything else), so `[frontends."a.b"]` stays one table.
func tomlKey(_ s: String) -> String {
    let bare = !s.isEmpty && s.unicodeScalars.allSatisfy {
        ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-"
    }
    return bare ? s : tomlString(s)
}
