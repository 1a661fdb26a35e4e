import Balancer
import Testing

/// The repository root, found from this file's path (tests read `examples/`).
let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(4)  // Tests/BalancerTests/Support/Fixtures.swift
    return parts.joined(separator: "/")
}()

/// Loads TOML text, failing the test with the loader's own message when it is rejected.
func load(_ toml: String) throws -> ConveyConfig {
    try ConfigLoader.load(source: toml, file: "test.toml").config
}

/// The problems a rejected TOML text produces (empty when it loads).
func problems(_ toml: String) -> [ConfigProblem] {
    do {
        _ = try ConfigLoader.load(source: toml, file: "test.toml")
        return []
    } catch {
        return error.problems
    }
}

/// A pool of servers on the given loopback ports, and a frontend in front of it.
func config(ports: [UInt16], weights: [Int]? = nil, balance: BalanceAlgorithm = .wrr,
            drain: Duration = .seconds(30)) -> ConveyConfig {
    let servers = ports.enumerated().map { i, port in
        ServerConfig(name: "s\(i)", address: Endpoint(address: .v4(0x7F00_0001), port: port),
                     weight: weights?[i] ?? 1)
    }
    return ConveyConfig(
        frontends: [FrontendConfig(name: "web", listen: Endpoint(address: .v4(0x7F00_0001), port: 18080),
                                   pool: "pool", balance: balance)],
        pools: [PoolConfig(name: "pool", drainTimeout: drain, servers: servers)])
}

/// The route of `config(...)`'s frontend `web` in the runtime's current snapshot.
func webRoute(_ runtime: BalancerRuntime) throws -> FrontendRoute {
    try #require(runtime.snapshots.load().value.frontend(named: "web"))
}
