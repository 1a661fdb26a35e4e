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
public struct DSRForwarder: PacketHandler, FrameLookupBatching {
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

    public var hasWorkBetweenBatches: Bool { core.isListing }

    /// Two passes (see `FrameLookup`): every frame's lookup, starting its slot's load; then
    /// each frame, where an established flow's segment costs its MAC rewrite and the rest
    /// goes through `process`.
    public mutating func handle(batch frames: UnsafeBufferPointer<PacketFrame>,
                                verdicts: UnsafeMutablePointer<PacketVerdict>) {
        handle(parts: frames, verdicts: verdicts)
    }

    @inline(__always)
    mutating func handle(part frames: UnsafeBufferPointer<PacketFrame>, verdicts: UnsafeMutablePointer<PacketVerdict>) {
        core.lookUp(batch: frames)
        let lookups = core.lookups
        let steady = core.steadyPath()
        var bytes: UInt64 = 0
        var i = 0
        while i < frames.count {
            let frame = frames[i]
            bytes &+= UInt64(truncatingIfNeeded: frame.length)
            let l = lookups[i]
            if l.home >= 0, let e = steady.flow(l, frame: frame.base) {
                let slot = e.pointee.backendSlot
                EthernetHeader(frame.base).store(steady.backends[Int(slot)].ethernet)
                steady.c.add(steady.c.backend(slot) &+ 2, UInt64(truncatingIfNeeded: frame.length))
                verdicts[i] = .transmit
            } else {
                verdicts[i] = process(frame.buffer)
            }
            i &+= 1
        }
        core.countReceived(frames: frames.count, bytes: bytes)
    }

    public mutating func handle(_ packet: UnsafeMutableRawBufferPointer) -> PacketVerdict {
        core.countReceived(frames: 1, bytes: UInt64(packet.count))
        return process(packet)
    }

    /// The whole path for one frame, counted as received already.
    @inline(never)
    private mutating func process(_ packet: UnsafeMutableRawBufferPointer) -> PacketVerdict {
        let length = packet.count
        guard let (p, frame) = core.parse(packet, acceptingTooBig: true) else {
            guard let p = packet.baseAddress, let message = ICMPTooBig.parse(p, length: length) else { return .drop }
            return forward(message, frame: p, length: length)
        }
        let tcp = TCPHeader(p + frame.tcpOffset)
        let vipPort = tcp.destinationPort
        let i: Int
        // Two copies of the lookup, so IPv4's constant high address words fold away.
        if !frame.isIPv6 {
            let ip = IPv4Header(p + frame.ipOffset)
            let frontend = core.frontendIndex(hi: 0, lo: 0xffff_0000_0000 | UInt64(ip.destination), port: vipPort)
            guard frontend >= 0 else { return notForUs() }
            i = core.track(clientHi: 0, clientLo: 0xffff_0000_0000 | UInt64(ip.source), clientPort: tcp.sourcePort,
                           frontend: frontend, flags: tcp.flags, frame: p, headers: frame)
        } else {
            let ip = IPv6Header(p + frame.ipOffset)
            let dst = ip.destination
            let frontend = core.frontendIndex(hi: dst.hi, lo: dst.lo, port: vipPort)
            guard frontend >= 0 else { return notForUs() }
            let src = ip.source
            i = core.track(clientHi: src.hi, clientLo: src.lo, clientPort: tcp.sourcePort, frontend: frontend,
                           flags: tcp.flags, frame: p, headers: frame)
        }
        guard i >= 0 else { return i == ForwarderCore.answerWithReset ? core.answerReset(p, frame) : .drop }
        let slot = core.table.entry(at: i).pointee.backendSlot
        EthernetHeader(p).store(core.backends[Int(slot)].ethernet)
        core.c.add(core.c.backend(slot) &+ 2, UInt64(truncatingIfNeeded: length))
        return .transmit
    }

    /// An ICMP "too big" about a VIP's segment (steered here only in DSR): to the backend that
    /// holds the connection (its tracked flow's, or the hash's for `maglev` and `source`
    /// frontends, as for a segment taken up mid-flow), with the frame untouched but its MACs.
    /// No flow is created or refreshed.
    @inline(never)
    private mutating func forward(_ message: ICMPTooBig, frame p: UnsafeMutableRawPointer, length: Int) -> PacketVerdict {
        let frontend = core.frontendIndex(hi: message.vipHi, lo: message.vipLo, port: message.vipPort)
        guard frontend >= 0 else { return notForUs() }
        var slot = UInt32.max
        if let tracked = core.trackedBackendSlot(clientHi: message.clientHi, clientLo: message.clientLo,
                                                 clientPort: message.clientPort, frontend: frontend) {
            slot = tracked
        } else if core.placesByHash(frontend: frontend) {
            slot = core.pick(frontend: frontend, clientHi: message.clientHi, clientLo: message.clientLo,
                             clientPort: message.clientPort, vipHi: message.vipHi, vipLo: message.vipLo,
                             vipPort: message.vipPort)
        }
        guard slot != UInt32.max, Int(slot) < core.backendCount, core.backends[Int(slot)].unusableBits == 0 else {
            core.c.drop(.icmpNoFlow)
            return .drop
        }
        EthernetHeader(p).store(core.backends[Int(slot)].ethernet)
        core.c.add(core.c.backend(slot) &+ 2, UInt64(truncatingIfNeeded: length))
        core.c.add(ForwarderCounters.icmpForwarded, 1)
        return .transmit
    }

    @inline(never)
    private func notForUs() -> PacketVerdict {
        core.c.drop(.notForUs)
        return .drop
    }
}

extension ForwarderCore {
    /// The backend slot of the tracked flow (`client`, `vip`), if any.
    func backendSlot(client: Endpoint, vip: Endpoint) -> Int? {
        let v = StableHash.widened(vip.address)
        let f = frontendIndex(hi: v.hi, lo: v.lo, port: vip.port)
        guard f >= 0 else { return nil }
        let a = StableHash.widened(client.address)
        return trackedBackendSlot(clientHi: a.hi, clientLo: a.lo, clientPort: client.port, frontend: f).map(Int.init)
    }

    /// The backend slot of the flow of (client, `clientPort`) to frontend index `frontend`,
    /// if this worker tracks one. A lookup only: the flow is neither refreshed nor created.
    func trackedBackendSlot(clientHi: UInt64, clientLo: UInt64, clientPort: UInt16, frontend: Int) -> UInt32? {
        let key = FlowEntry.key(port: clientPort, vip: frontend)
        let i = table.find(hi: clientHi, lo: clientLo, key: key, home: table.home(hi: clientHi, lo: clientLo, key: key))
        return i < 0 ? nil : table.entry(at: i).pointee.backendSlot
    }
}
