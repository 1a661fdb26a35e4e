import Balancer

/// One server of a hand-built pool.
struct ServerSpec {
    var name: String
    var weight: Int = 1
    var state: ServerState = .up
}

/// Builds the `FrontendRoute` a data path would receive, the way `BalancerRuntime` does:
/// servers 10.77.1.1:80, 10.77.1.2:80, ... in the given order, `selectable` = the up servers of
/// positive weight, and for `maglev`/`source` a Maglev table over `selectable` in order.
func makeRoute(_ balance: BalanceAlgorithm, _ specs: [ServerSpec], withMaglevTable: Bool = true,
               tableSize: Int = MaglevTable.defaultSize) -> FrontendRoute {
    let servers = specs.enumerated().map { i, spec in
        ServerRoute(id: ServerID(pool: "web_pool", name: spec.name),
                    address: Endpoint(address: .v4(0x0A4D_0100 + UInt32(i + 1)), port: 80),
                    weight: spec.weight, state: spec.state, counters: ServerCounters())
    }
    let selectable = servers.indices.filter { servers[$0].state == .up && servers[$0].weight > 0 }
    let hashing = balance == .maglev || balance == .source
    let table = hashing && withMaglevTable
        ? MaglevTable(backends: selectable.map { (servers[$0].address.description, servers[$0].weight) },
                      size: tableSize)
        : nil
    let config = FrontendConfig(name: "web", listen: vip, pool: "web_pool", balance: balance)
    return FrontendRoute(config: config, pool: PoolConfig(name: "web_pool", servers: []),
                         servers: servers, selectable: selectable, maglev: table,
                         counters: FrontendCounters())
}

/// Servers named a, b, c, ... of weight 1, all up.
func equalServers(_ count: Int) -> [ServerSpec] {
    (0..<count).map { ServerSpec(name: "s\($0)") }
}

/// The VIP every test frontend listens on.
let vip = Endpoint(address: .v4(0x0A4D_0064), port: 80)  // 10.77.0.100:80

/// A client connection to the test VIP from 10.77.x.y:port.
func flow(client: UInt32, port: UInt16) -> FlowKey {
    FlowKey(client: Endpoint(address: .v4(0x0A4D_0000 | (client & 0xffff)), port: port), vip: vip)
}

/// The names of the servers `picks` chose, for readable expectations.
func names(_ picks: [Int?], in route: FrontendRoute) -> [String] {
    picks.map { $0.map { route.servers[$0].id.name } ?? "none" }
}
