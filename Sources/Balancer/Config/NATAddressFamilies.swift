/// Passthrough keeps a flow in its family: an IPv4 client reaches an IPv4 backend from the IPv4
/// NAT address, an IPv6 client an IPv6 backend from the IPv6 one. These are the rules that
/// tie the frontends' VIPs to the NAT addresses and to their servers, checked at `--check`, at
/// start and on reload, so that a VIP whose family has no NAT address, or a server of the
/// other family, is refused with a reason instead of having SYNs dropped as "no backend".
public enum NATAddressFamilies {
    /// The family's name as an operator reads it.
    static func family(_ address: IPAddress) -> String { address.isIPv4 ? "IPv4" : "IPv6" }

    /// Whether `address` is usable as a default NAT source: not link-local (169.254.0.0/16,
    /// fe80::/10), which a backend off the link could not answer, nor loopback.
    public static func isDefaultCandidate(_ address: IPAddress) -> Bool {
        switch address {
        case .v4(let a): return a >> 24 != 127 && a >> 16 != 0xA9FE
        case .v6(let hi, let lo): return hi >> 54 != 0x3FA && !(hi == 0 && lo == 1)
        }
    }

    /// One problem for each frontend whose VIP family has no address in `addresses`, keyed by
    /// its `frontends.NAME.listen_addr` (as path components). `source` says where the
    /// addresses came from, for the message ("nat_addr is 10.0.0.2").
    /// `atRestart`: the addresses are the running ones (a reload), which only a restart changes.
    public static func problems(frontends: [FrontendConfig], addresses: [IPAddress],
                                source: String, atRestart: Bool = false) -> [(path: [String], message: String)] {
        frontends.compactMap { f in
            let vip = f.listen.address
            guard !addresses.contains(where: { $0.isIPv4 == vip.isIPv4 }) else { return nil }
            let name = family(vip)
            let example = addresses.map { "\"\($0)\"" } + [vip.isIPv4 ? "\"<IPv4 address>\"" : "\"<IPv6 address>\""]
            return (["frontends", f.name, "listen_addr"],
                    "\(f.listen) is \(name), but passthrough has no \(name) NAT address (\(source)); " +
                    "add one\(atRestart ? " and restart convey" : ""): [xdp] nat_addr = [\(example.joined(separator: ", "))]")
        }
    }

    /// One problem for each frontend listening on a NAT address at a port inside the NAT
    /// range, keyed by its `frontends.NAME.listen_addr`: passthrough takes every packet to
    /// such a port for a backend's reply, so no client could reach that frontend.
    public static func rangeClashes(frontends: [FrontendConfig], addresses: [IPAddress],
                                    ports: ClosedRange<UInt16>) -> [(path: [String], message: String)] {
        frontends.compactMap { f in
            guard addresses.contains(f.listen.address), ports.contains(f.listen.port) else { return nil }
            return (["frontends", f.name, "listen_addr"],
                    "\(f.listen) is on the NAT address \(f.listen.address) inside nat_ports \(ports.lowerBound)-\(ports.upperBound), "
                    + "where passthrough takes every packet for a backend's reply: no client could reach it; give the "
                    + "frontend another port or address, or move [xdp] nat_ports")
        }
    }

    /// One problem for each (server, frontend) pair where the server's family differs from the
    /// VIP of a frontend its pool serves, keyed by the server's `backends.POOL.servers.NAME.addr`
    /// (as path components): passthrough could give it no flow of that frontend, and the SYNs
    /// placed on it would be dropped.
    public static func serverProblems(config: ConveyConfig) -> [(path: [String], message: String)] {
        var out: [(path: [String], message: String)] = []
        for pool in config.pools {
            for f in config.frontends where f.pool == pool.name {
                for server in pool.servers where server.address.address.isIPv4 != f.listen.address.isIPv4 {
                    out.append((["backends", pool.name, "servers", server.name, "addr"],
                                "\(server.address) is \(family(server.address.address)), but frontend '\(f.name)' " +
                                "(\(f.listen)) is \(family(f.listen.address)): passthrough keeps a flow in its family; " +
                                "give this frontend a pool of \(family(f.listen.address)) servers"))
                }
            }
        }
        return out
    }
}
