import Balancer

/// Direct server return (the IPVS "DR" method): a client's frame to a VIP leaves with the
/// chosen backend's MAC as destination and the interface's MAC as source; IP and TCP are
/// untouched, so no checksum changes. The backend holds the VIP on `lo` and answers the client
/// directly.
///
/// Placement: `maglev` and `source` frontends hash the 5-tuple (or the client address) with
/// `StableHash` into the same Maglev table the runtime builds, so two balancers with one config
/// and one neighbour view choose alike (ECMP in front of several keeps flows intact). `wrr` and
/// `leastconn` use the worker's weighted sequence / open counts. The flow table keeps an
/// established flow on its backend through routes swaps until it ends, or until its backend
/// leaves the routes or its drain ends.
///
/// One value per worker (it owns a flow table); do not share copies across threads.
public struct DSRForwarder: PacketHandler {
    var core: ForwarderCore

    /// A forwarder for worker `settings.workerIndex`, adopting routes from `publisher`, counting
    /// into `counters` (new ones when nil; at least `publisher.maxBackendSlots` backends).
    ///
    /// Not Sendable (it owns a flow table for one thread): build it on its worker thread from
    /// these Sendable parts.
    public init(settings: ForwarderSettings, routes publisher: PacketRoutesPublisher,
                counters: ForwarderCounters? = nil) {
        core = ForwarderCore(settings: settings, publisher: publisher, reverseMap: nil, counters: counters)
    }

    /// This worker's counters (read them from any thread).
    public var counters: ForwarderCounters { core.counters }

    /// Flows in this worker's table now.
    public var flowCount: Int { core.table.count }

    /// The backend slot of the tracked flow (`client`, `vip`), if any (tests, diagnostics).
    public func backendSlot(client: Endpoint, vip: Endpoint) -> Int? { core.backendSlot(client: client, vip: vip) }

    public mutating func beginBatch(now: UInt64) { core.beginBatch(now: now) }

    public mutating func handle(_ packet: UnsafeMutableRawBufferPointer) -> PacketVerdict {
        let length = packet.count
        guard let (p, frame) = core.receive(packet) else { return .drop }
        let tcp = TCPHeader(p + frame.tcpOffset)
        let srcHi: UInt64, srcLo: UInt64, dstHi: UInt64, dstLo: UInt64
        if frame.isIPv6 {
            let ip = IPv6Header(p + frame.ipOffset)
            (srcHi, srcLo) = ip.source
            (dstHi, dstLo) = ip.destination
        } else {
            let ip = IPv4Header(p + frame.ipOffset)
            srcHi = 0
            srcLo = 0xffff_0000_0000 | UInt64(ip.source)
            dstHi = 0
            dstLo = 0xffff_0000_0000 | UInt64(ip.destination)
        }
        let vipPort = tcp.destinationPort
        let frontend = core.frontendIndex(hi: dstHi, lo: dstLo, port: vipPort)
        guard frontend >= 0 else {
            core.c.drop(.notForUs)
            return .drop
        }
        let eth = EthernetHeader(p)
        let i = core.track(clientHi: srcHi, clientLo: srcLo, clientPort: tcp.sourcePort, frontend: frontend,
                           vipHi: dstHi, vipLo: dstLo, vipPort: vipPort, flags: tcp.flags, clientMAC: eth.source)
        guard i >= 0 else { return .drop }
        let slot = core.table.entry(at: i).pointee.backendSlot
        eth.destination = core.backends[Int(slot)].mac
        eth.source = core.interfaceMAC
        core.c.add(core.c.backend(slot) &+ 2, UInt64(length))
        return .transmit
    }
}

extension ForwarderCore {
    /// The backend slot of the tracked flow (`client`, `vip`), if any.
    func backendSlot(client: Endpoint, vip: Endpoint) -> Int? {
        let v = StableHash.widened(vip.address)
        let f = frontendIndex(hi: v.hi, lo: v.lo, port: vip.port)
        guard f >= 0 else { return nil }
        let a = StableHash.widened(client.address)
        let key = FlowEntry.key(port: client.port, vip: f)
        let i = table.find(hi: a.hi, lo: a.lo, key: key, home: table.home(hi: a.hi, lo: a.lo, key: key))
        return i < 0 ? nil : Int(table.entry(at: i).pointee.backendSlot)
    }
}
