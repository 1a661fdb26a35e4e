import Balancer
import XSK

/// Checks that depend on the mode and on this host, beyond what the file alone can tell.
enum ModeChecks {
    /// Each problem names the line of its key (or of the key's table). `runningNAT`: on a
    /// reload, the NAT addresses the running passthrough data plane resolved at start (the
    /// file's `nat_addr` applies only on restart, and the interface's addresses may have moved).
    /// `running`: on a reload, the routes in force; their VIPs and backend slots (draining
    /// frontends' and servers' included) stay taken until their flows are gone, so they count
    /// against the AF_XDP modes' limits beside the file's.
    static func problems(for mode: ConveyMode, loaded: LoadedConfig, runningNAT: [IPAddress]? = nil,
                         running: ForwardingSnapshot? = nil) -> [ConfigProblem] {
        let config = loaded.config
        var out: [ConfigProblem] = []
        func problem(_ key: String, _ message: String) { out.append(loaded.problem(key: key, message)) }
        guard mode != .proxy else {
            out += selfConnections(loaded, local: { (try? AddressTable.dump().map(\.address)) ?? [] })
            return out
        }
        let wantedVIPs = Set(config.frontends.map(\.listen))
        let vips = wantedVIPs.union(running?.frontends.map(\.config.listen) ?? [])
        if vips.count > SteeringProgram.maxVIPs {
            let draining = vips.count - wantedVIPs.count
            problem("frontends", "\(vips.count) VIPs\(draining > 0 ? " (\(draining) of them still draining)" : ""): the "
                    + "\(mode.rawValue) mode steers at most \(SteeringProgram.maxVIPs)")
        }
        let wanted = slotKeys(config)
        let slots = wanted.union(running.map(slotKeys) ?? [])
        if slots.count > PacketRoutesPublisher.defaultMaxBackendSlots {
            let held = slots.count - wanted.count
            problem("frontends", "\(slots.count) backend slots (one per frontend and server of its pool"
                    + (held > 0 ? "; \(held) of them still held by draining frontends and servers" : "")
                    + "): the \(mode.rawValue) mode has \(PacketRoutesPublisher.defaultMaxBackendSlots)"
                    + (held > 0 ? "; reload again once those drains are over" : ""))
        }
        if config.xdp.iface == nil {
            problem("xdp.iface", "\(mode.rawValue) mode needs an interface: pass --iface NAME or set [xdp] iface")
        }
        if mode == .dsr {
            // DSR rewrites MACs only: a flow reaches the backend on the VIP's port.
            for f in config.frontends {
                guard let pool = config.pool(named: f.pool) else { continue }
                for server in pool.servers where server.address.port != f.listen.port {
                    out.append(loaded.problem(path: ["backends", pool.name, "servers", server.name, "addr"],
                                              "port \(server.address.port) differs from frontend '\(f.name)''s port \(f.listen.port): "
                                              + "DSR does not rewrite ports, so its clients would reach port \(f.listen.port) on "
                                              + "this server while the health checks probe \(server.address.port); use port "
                                              + "\(f.listen.port) (or a pool of its own for each VIP port)"))
                }
            }
        }
        if mode == .passthrough {
            // Every VIP's family needs a NAT address: the configured ones, or (when the
            // interface is on this host to ask) the interface's.
            let nat = runningNAT.map {
                ($0, "the running NAT addresses are \($0.map(\.description).joined(separator: ", ")); a new nat_addr needs a restart")
            } ?? XDPDataPlaneSetup.natAddresses(config: config, interface: config.xdp.iface.flatMap { try? NetworkInterface(named: $0) })
            if let nat {
                for p in XDPDataPlaneSetup.natFamilyProblems(config: config, nat: nat, atRestart: runningNAT != nil) {
                    out.append(loaded.problem(path: p.path, p.message))
                }
            }
            for p in NATAddressFamilies.serverProblems(config: config) { out.append(loaded.problem(path: p.path, p.message)) }
            let facts = try? NATPortRange.LocalPortFacts.current()
            if let nat, let ports = config.xdp.natPorts ?? facts.flatMap(NATPortRange.defaultRange) {
                for p in NATAddressFamilies.rangeClashes(frontends: config.frontends, addresses: nat.0, ports: ports) {
                    out.append(loaded.problem(path: p.path, p.message))
                }
            }
            if let range = config.xdp.natPorts, let facts,
               let conflict = NATPortRange.conflict(of: range, with: facts) {
                problem("xdp.nat_ports", conflict)
            } else if config.xdp.natPorts == nil, let facts, NATPortRange.defaultRange(facts) == nil {
                problem("xdp.nat_ports", NATPortRange.noDefaultRange)
            }
        }
        return out
    }

    /// Proxy mode: servers that are this host on the port of a wildcard frontend (`0.0.0.0:80`
    /// listens on every address, loopback included), so convey would connect to itself. An
    /// exact match of a listen address is refused by the loader already. `local`: the host's
    /// addresses (asked only when a wildcard frontend exists).
    static func selfConnections(_ loaded: LoadedConfig, local: () -> [IPAddress]) -> [ConfigProblem] {
        let config = loaded.config
        let wildcards = config.frontends.filter { $0.listen.address.isUnspecified }
        guard !wildcards.isEmpty else { return [] }
        let addresses = Set(local())
        var out: [ConfigProblem] = []
        for pool in config.pools {
            for server in pool.servers {
                let a = server.address.address
                let isLocal = addresses.contains(a) || a.isLoopback
                guard isLocal, let f = wildcards.first(where: { $0.listen.port == server.address.port && $0.listen.address.isIPv4 == a.isIPv4 })
                else { continue }
                out.append(loaded.problem(path: ["backends", pool.name, "servers", server.name, "addr"],
                                          "\(server.address) is this host, where frontend '\(f.name)' listens on \(f.listen): "
                                          + "convey would connect to itself, each connection opening another until "
                                          + "descriptors run out"))
            }
        }
        return out
    }

    /// Settings the mode does not use, for the start's log and `--check`: proxy mode's
    /// per-connection keys are ignored by the AF_XDP modes, which forward packets (no PROXY
    /// header, no connection log, no connect to fail, no queue).
    static func warnings(for mode: ConveyMode, loaded: LoadedConfig) -> [ConfigProblem] {
        guard mode != .proxy else { return [] }
        var out: [ConfigProblem] = []
        for f in loaded.config.frontends {
            if f.proxyProtocol != .none {
                out.append(loaded.problem(path: ["frontends", f.name, "proxy_protocol"],
                                          "proxy mode only: the \(mode.rawValue) mode forwards packets as they are and "
                                          + "sends no PROXY header (ignored)"))
            }
            if f.acceptProxyProtocol {
                out.append(loaded.problem(path: ["frontends", f.name, "accept_proxy_protocol"],
                                          "proxy mode only: the \(mode.rawValue) mode reads no client bytes, so a PROXY "
                                          + "header from a balancer in front goes on to the servers as it is (they must "
                                          + "accept it themselves)"))
            }
            if f.tcpKeepalive != 0 {
                out.append(loaded.problem(path: ["frontends", f.name, "tcp_keepalive"],
                                          "proxy mode only: the \(mode.rawValue) mode holds no sockets of its clients' "
                                          + "connections (ignored; the endpoints' own keepalives pass through)"))
            }
            if f.logConnections {
                out.append(loaded.problem(path: ["frontends", f.name, "log_connections"],
                                          "proxy mode only: the \(mode.rawValue) mode forwards packets and logs no "
                                          + "connection (ignored; GET /flows lists the tracked ones)"))
            }
        }
        for p in loaded.config.pools where p.errorLimit != 0 {
            out.append(loaded.problem(path: ["backends", p.name, "error_limit"],
                                      "proxy mode only: the \(mode.rawValue) mode makes no connections to servers, so "
                                      + "it sees none fail (ignored; the health checks decide)"))
        }
        for p in loaded.config.pools {
            if p.queueTimeout != p.connectTimeout {
                // Set in the file (its default is the connect_timeout, which these modes do not use either).
                out.append(loaded.problem(path: ["backends", p.name, "queue_timeout"],
                                          "proxy mode only: the \(mode.rawValue) mode queues no client (ignored)"))
            }
            if p.maxQueue != 0 {
                out.append(loaded.problem(path: ["backends", p.name, "max_queue"],
                                          "proxy mode only: the \(mode.rawValue) mode queues no client (ignored)"))
            }
        }
        return out
    }

    /// What an AF_XDP backend slot is held for: a server (at an address) under a frontend's VIP.
    struct SlotKey: Hashable {
        var vip: Endpoint
        var server: ServerID
        var address: Endpoint
    }

    /// The slots `config`'s routes need.
    static func slotKeys(_ config: ConveyConfig) -> Set<SlotKey> {
        var keys = Set<SlotKey>()
        for f in config.frontends {
            for s in config.pool(named: f.pool)?.servers ?? [] {
                keys.insert(SlotKey(vip: f.listen, server: ServerID(pool: f.pool, name: s.name), address: s.address))
            }
        }
        return keys
    }

    /// The slots `snapshot`'s routes hold.
    static func slotKeys(_ snapshot: ForwardingSnapshot) -> Set<SlotKey> {
        Set(snapshot.frontends.flatMap { f in
            f.servers.map { SlotKey(vip: f.config.listen, server: $0.id, address: $0.address) }
        })
    }
}
