import Balancer
import XSK

/// A one-frontend setup as the runtime builds it: VIP 10.77.0.100:80 in front of backends
/// 10.77.0.21... with MACs 02:00:00:00:00:21..., published through a `PacketRoutesPublisher`.
struct RoutesFixture {
    static let vip = Endpoint(address: .v4(0x0A4D_0064), port: 80)
    static let interfaceMAC = MACAddress(rawValue: TestFrames.lbMAC)

    var config: ConveyConfig
    let runtime: BalancerRuntime
    let publisher: PacketRoutesPublisher
    /// MACs the neighbour table knows (edit and call `republish`).
    var macs: [IPAddress: MACAddress]

    static func backendAddress(_ i: Int) -> Endpoint { Endpoint(address: .v4(0x0A4D_0000 + UInt32(20 + i)), port: 8080) }
    static func backendMAC(_ i: Int) -> UInt64 { 0x02_00_00_00_00_00 | UInt64(0x20 + i) }

    /// Backends 1...count with `weights` (default 1 each) and `limits` (`max_connections`,
    /// default none), all with MACs unless in `withoutMAC`; `decoys` shifts their backend slots.
    init(balance: BalanceAlgorithm, count: Int = 3, weights: [Int]? = nil, limits: [Int]? = nil,
         withoutMAC: Set<Int> = [], maxBackendSlots: Int = 64, decoys: Int = 0) {
        config = Self.makeConfig(balance: balance, count: count, weights: weights, limits: limits)
        runtime = BalancerRuntime(config: config)
        publisher = PacketRoutesPublisher(maxBackendSlots: maxBackendSlots)
        if decoys > 0 {
            // Servers of another pool published first take the first backend slots, so these
            // routes number the fixture's servers from `decoys` on (as another process may).
            let servers = (1...decoys).map { i in
                ServerConfig(name: "d\(i)", address: Endpoint(address: .v4(0x0A4D_0100 + UInt32(i)), port: 8080))
            }
            let decoy = ConveyConfig(frontends: [FrontendConfig(name: "web", listen: Self.vip, pool: "decoy", balance: balance)],
                                     pools: [PoolConfig(name: "decoy", drainTimeout: .seconds(30), servers: servers)])
            publisher.publish(snapshot: BalancerRuntime(config: decoy).snapshots.load().value, backendMACs: [:],
                              interfaceMAC: Self.interfaceMAC)
        }
        macs = [:]
        for i in 1...count where !withoutMAC.contains(i) {
            macs[Self.backendAddress(i).address] = MACAddress(rawValue: Self.backendMAC(i))
        }
        republish()
    }

    static func makeConfig(balance: BalanceAlgorithm, count: Int, weights: [Int]?, limits: [Int]? = nil) -> ConveyConfig {
        let servers = (1...count).map { i in
            ServerConfig(name: "s\(i)", address: backendAddress(i), weight: weights?[i - 1] ?? 1,
                         maxConnections: limits?[i - 1] ?? 0)
        }
        return ConveyConfig(frontends: [FrontendConfig(name: "web", listen: vip, pool: "pool", balance: balance)],
                            pools: [PoolConfig(name: "pool", drainTimeout: .seconds(30), servers: servers)])
    }

    /// Publishes routes from the runtime's current snapshot (optionally edited).
    @discardableResult
    func republish(edit: (inout ForwardingSnapshot) -> Void = { _ in }) -> PacketRoutes {
        var snapshot = runtime.snapshots.load().value
        edit(&snapshot)
        return publisher.publish(snapshot: snapshot, backendMACs: macs, interfaceMAC: Self.interfaceMAC)
    }

    /// The backend number (1-based) whose MAC `mac` is.
    static func backendNumber(mac: UInt64) -> Int? {
        let n = Int(mac & 0xff) - 0x20
        return mac & ~0xff == 0x02_00_00_00_00_00 && n >= 1 ? n : nil
    }
}

/// A client frame to the fixture's VIP.
func clientFrame(client: UInt32 = 0x0A4D_000A, port: UInt16, flags: UInt8, payload: [UInt8] = [],
                 ipOptions: [UInt8] = [], seq: UInt32 = 1000) -> [UInt8] {
    TestFrames.ipv4TCP(src: client, dst: 0x0A4D_0064, sport: port, dport: 80, flags: flags, ipOptions: ipOptions,
                       payload: payload, seq: seq)
}

let second: UInt64 = 1_000_000_000
