import Balancer
import XSK

/// Checks that depend on the mode and on this host, beyond what the file alone can tell.
enum ModeChecks {
    /// Each problem names the line of its key (or of the key's table). `runningNAT`: on a
    /// reload, the NAT addresses the running passthrough data plane resolved at start (the
    /// file's `nat_addr` applies only on restart, and the interface's addresses may have moved).
    /// `drainingVIPs`: on a reload, the addresses of frontends still draining, which keep
    /// their place in the steering program's VIP map until their drain ends.
    static func problems(for mode: ConveyMode, loaded: LoadedConfig, runningNAT: [IPAddress]? = nil,
                         drainingVIPs: [Endpoint] = []) -> [ConfigProblem] {
        let config = loaded.config
        var out: [ConfigProblem] = []
        func problem(_ key: String, _ message: String) { out.append(loaded.problem(key: key, message)) }
        guard mode != .proxy else { return out }
        let vips = Set(config.frontends.map(\.listen)).union(drainingVIPs)
        if vips.count > SteeringProgram.maxVIPs {
            let draining = vips.count - Set(config.frontends.map(\.listen)).count
            problem("frontends", "\(vips.count) VIPs\(draining > 0 ? " (\(draining) of them still draining)" : ""): the "
                    + "\(mode.rawValue) mode steers at most \(SteeringProgram.maxVIPs)")
        }
        if config.xdp.iface == nil {
            problem("xdp.iface", "\(mode.rawValue) mode needs an interface: pass --iface NAME or set [xdp] iface")
        }
        if mode == .passthrough {
            // Every VIP's family needs a NAT address: the configured ones, or (when the
            // interface is on this host to ask) the interface's.
            let nat = runningNAT.map {
                ($0, "the running NAT addresses are \($0.map(\.description).joined(separator: ", ")); a new nat_addr needs a restart")
            } ?? XDPDataPlaneSetup.natAddresses(config: config, interface: config.xdp.iface.flatMap { try? NetworkInterface(named: $0) })
            if let nat {
                for p in XDPDataPlaneSetup.natFamilyProblems(config: config, nat: nat) {
                    out.append(loaded.problem(path: p.path, p.message))
                }
            }
            for p in NATAddressFamilies.serverProblems(config: config) { out.append(loaded.problem(path: p.path, p.message)) }
            let facts = try? NATPortRange.LocalPortFacts.current()
            if let range = config.xdp.natPorts, let facts,
               let conflict = NATPortRange.conflict(of: range, with: facts) {
                problem("xdp.nat_ports", conflict)
            } else if config.xdp.natPorts == nil, let facts, NATPortRange.defaultRange(facts) == nil {
                problem("xdp.nat_ports", NATPortRange.noDefaultRange)
            }
        }
        return out
    }
}
