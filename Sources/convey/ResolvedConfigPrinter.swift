import Balancer

/// Prints a configuration with every default filled in, in the TOML of CONFIG.md, so an
/// operator sees exactly what `convey` will run (`convey --check`).
enum ResolvedConfigPrinter {
    static func render(_ c: ConveyConfig, mode: ConveyMode, file: String) -> String {
        var out = "# \(file): valid (mode: \(mode.rawValue))\n"
        func q(_ s: String) -> String { "\"" + s.replacingAll("\\", "\\\\").replacingAll("\"", "\\\"") + "\"" }
        /// One address as a string (as most configs write it), two as an array.
        func natAddr(_ addresses: [IPAddress]) -> String {
            addresses.count > 1 ? "[" + addresses.map { q($0.description) }.joined(separator: ", ") + "]"
                                : q(addresses.first?.description ?? "")
        }
        func secs(_ d: Duration) -> String {
            let (s, atto) = d.components
            return atto == 0 ? "\(s)" : String(Double(s) + Double(atto) / 1e18)
        }
        for f in c.frontends {
            out += "\n[frontends.\(f.name)]\nlisten_addr = \(q(f.listen.description))\nbackend = \(q(f.pool))\n"
            out += "balance = \(q(f.balance.rawValue))\nmax_connections = \(f.maxConnections)\n"
            out += "proxy_protocol = \(q(f.proxyProtocol.rawValue))\n"
        }
        for p in c.pools {
            out += "\n[backends.\(p.name)]\nhealth_check_interval = \(secs(p.health.interval))\n"
            out += "health_check_timeout = \(secs(p.health.timeout))\nrise = \(p.health.rise)\nfall = \(p.health.fall)\n"
            out += "health_check_send = \(q(String(decoding: p.health.send, as: UTF8.self)))\n"
            out += "health_check_expect = \(q(String(decoding: p.health.expect, as: UTF8.self)))\n"
            out += "connect_timeout = \(secs(p.connectTimeout))\nidle_timeout = \(secs(p.idleTimeout))\n"
            out += "drain_timeout = \(secs(p.drainTimeout))\n"
            for s in p.servers {
                out += "  [backends.\(p.name).servers.\(s.name)]\n  addr = \(q(s.address.description))\n  weight = \(s.weight)\n"
            }
        }
        out += "\n[stats]\naddr = \(q(c.stats.address.description))\nport = \(c.stats.port)\n"
        out += "\n[proxy]\nworkers = \(c.proxy.workers)\n"
        out += "\n[passthrough]\nconnection_tracker_capacity = \(c.passthrough.connectionTrackerCapacity)\n"
        out += "workers = \(c.passthrough.workers)\nstats_update_frequency = \(secs(c.passthrough.statsUpdateFrequency))\n"
        out += "\n[xdp]\niface = \(q(c.xdp.iface ?? ""))\nattach = \(q(c.xdp.attach.rawValue))\n"
        out += "zero_copy = \(q(c.xdp.zeroCopy.rawValue))\nnat_addr = \(natAddr(c.xdp.natAddresses))\n"
        out += "nat_ports = \(q(c.xdp.natPorts.map { "\($0.lowerBound)-\($0.upperBound)" } ?? ""))\n"
        out += "syn_timeout = \(secs(c.xdp.synTimeout))\nestablished_timeout = \(secs(c.xdp.establishedTimeout))\n"
        out += "closing_timeout = \(secs(c.xdp.closingTimeout))\n"
        return out
    }
}

extension String {
    func replacingAll(_ target: String, _ replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
