/// The identity of a new TCP connection as schedulers hash it: client and VIP endpoints (the
/// protocol is always TCP).
public struct FlowKey: Hashable, Sendable {
    public var client: Endpoint
    public var vip: Endpoint

    public init(client: Endpoint, vip: Endpoint) {
        self.client = client
        self.vip = vip
    }

    /// The stable 5-tuple hash (`StableHash.flow`) that `maglev` places the connection by: the
    /// same on every Convey instance and across restarts.
    @inlinable
    public var hash: UInt64 {
        let c = StableHash.widened(client.address)
        let v = StableHash.widened(vip.address)
        return StableHash.flow(clientHi: c.hi, clientLo: c.lo, clientPort: client.port,
                               vipHi: v.hi, vipLo: v.lo, vipPort: vip.port)
    }

    /// The stable client-address hash (`StableHash.source`) that `source` places the
    /// connection by, so every connection of one client lands on the same server.
    @inlinable
    public var sourceHash: UInt64 {
        let c = StableHash.widened(client.address)
        return StableHash.source(clientHi: c.hi, clientLo: c.lo)
    }
}
