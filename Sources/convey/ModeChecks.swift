import Balancer
import XSK

/// Checks that depend on the mode and on this host, beyond what the file alone can tell.
enum ModeChecks {
    /// Each problem names the line of its key (or of the key's table).
    static func problems(for mode: ConveyMode, loaded: LoadedConfig) -> [ConfigProblem] {
        let config = loaded.config
        var out: [ConfigProblem] = []
        func problem(_ key: String, _ message: String) { out.append(loaded.problem(key: key, message)) }
        guard mode != .proxy else { return out }
        if config.xdp.iface == nil {
            problem("xdp.iface", "\(mode.rawValue) mode needs an interface: pass --iface NAME or set [xdp] iface")
        }
        if mode == .passthrough {
            // Every VIP's family needs a NAT address: the configured ones, or (when the
            // interface is on this host to ask) the interface's.
            let interface = config.xdp.iface.flatMap { try? NetworkInterface(named: $0) }
            if let nat = XDPDataPlaneSetup.natAddresses(config: config, interface: interface) {
                for p in XDPDataPlaneSetup.natFamilyProblems(config: config, nat: nat) { problem(p.key, p.message) }
            }
            for p in NATAddressFamilies.serverProblems(config: config) { problem(p.key, p.message) }
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
