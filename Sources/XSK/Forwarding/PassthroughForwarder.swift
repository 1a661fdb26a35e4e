import Balancer

/// Passthrough full NAT: a client's segment to VIP:port leaves as NAT address:NAT port →
/// backend address:port, and the backend's reply to NAT address:NAT port leaves as VIP:port →
/// client address:port. MACs: the backend's (or the client's, stored with the flow) as
/// destination, the interface's as source. IPv4 header and TCP checksums are adjusted
/// incrementally (RFC 1624, pseudo-header included); TTL, options and payload are left as
/// received.
///
/// Each worker owns a disjoint slice of the NAT ports (`NATPortPool`), and publishes every
/// port's reply rewrite in the shared `NATReverseMap`, because the backend's reply may arrive on
/// another worker's queue. A reply is accepted only from the backend address and port its NAT
/// port was given to ("unknown reply" otherwise), so nobody can inject into a flow by guessing
/// a port.
///
/// IPv4 and IPv6: a flow keeps its family (IPv4 client → IPv4 backend from the IPv4 NAT
/// address; IPv6 likewise from `settings.natAddressV6`); a family without a NAT address, or a
/// backend of the other family, drops the SYN as "no backend". IPv6 has no header checksum;
/// the TCP checksum is adjusted for the 128-bit pseudo-header addresses.
///
/// One value per worker; all workers share one `NATReverseMap` and one publisher.
public struct PassthroughForwarder: PacketHandler, FrameLookupBatching {
    var core: ForwarderCore
    let natLo: UInt64
    let natLow: UInt16
    let natHigh: UInt16

    /// A forwarder for worker `settings.workerIndex`: `settings.natAddress` (IPv4) and/or
    /// `settings.natAddressV6` and `settings.natPorts` must be set; `reverseMap` is the one map every worker of the process shares.
    /// `counters` as for `DSRForwarder`. Build it on its worker thread (it is not Sendable).
    public init(settings: ForwarderSettings, routes publisher: PacketRoutesPublisher, reverseMap: NATReverseMap,
                counters: ForwarderCounters? = nil) {
        precondition(settings.natAddress != nil || settings.natAddressV6 != nil, "passthrough needs a NAT address")
        precondition(settings.natPorts != nil, "passthrough needs NAT ports")
        core = ForwarderCore(settings: settings, publisher: publisher, reverseMap: reverseMap, counters: counters)
        natLo = 0xffff_0000_0000 | UInt64(core.natIPv4)
        natLow = settings.natPorts?.lowerBound ?? 1
        natHigh = settings.natPorts?.upperBound ?? 0
    }

    /// This worker's counters (read them from any thread).
    public var counters: ForwarderCounters { core.counters }

    /// Flows in this worker's table now.
    public var flowCount: Int { core.table.count }

    /// Free NAT ports of this worker.
    public var freeNATPorts: Int { core.ports.available }

    /// The backend slot of the tracked flow (`client`, `vip`), if any (tests, diagnostics).
    public func backendSlot(client: Endpoint, vip: Endpoint) -> Int? { core.backendSlot(client: client, vip: vip) }

    /// The NAT port of the tracked flow (`client`, `vip`), if any (tests, diagnostics).
    public func natPort(client: Endpoint, vip: Endpoint) -> UInt16? {
        let v = StableHash.widened(vip.address)
        let f = core.frontendIndex(hi: v.hi, lo: v.lo, port: vip.port)
        guard f >= 0 else { return nil }
        let a = StableHash.widened(client.address)
        let key = FlowEntry.key(port: client.port, vip: f)
        let i = core.table.find(hi: a.hi, lo: a.lo, key: key, home: core.table.home(hi: a.hi, lo: a.lo, key: key))
        return i < 0 ? nil : core.table.entry(at: i).pointee.natPort
    }

    public mutating func beginBatch(now: UInt64) { core.beginBatch(now: now) }

    public var hasWorkBetweenBatches: Bool { core.isListing }

    /// Two passes (see `FrameLookup`): every frame's lookup, starting the load of its flow's
    /// slot, or for a backend's reply of its NAT port's reverse entry; then each frame, where
    /// an established flow's segment and a reply cost their rewrite and the rest goes through
    /// `process`.
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
                Self.rewrite(frame.base, ipOffset: EthernetHeader.length, tcpOffset: EthernetHeader.length &+ 20,
                             length: frame.length, flow: e, backends: steady.backends, counters: steady.c)
                verdicts[i] = .transmit
            } else if l.home == FrameLookup.reply,
                      frame.base.load(fromByteOffset: EthernetHeader.length &+ 20 &+ 13, as: UInt8.self) & TCPHeader.syn == 0 {
                // A plain IPv4 frame (checked in the first pass): the headers are at fixed places.
                // A SYN-ACK takes `process`, which checks its checksum.
                let p = frame.base
                verdicts[i] = Self.reply(length: frame.length, ip: IPv4Header(p + EthernetHeader.length),
                                         tcp: TCPHeader(p + (EthernetHeader.length + 20)), eth: EthernetHeader(p),
                                         natPort: UInt16(truncatingIfNeeded: l.clientLo),
                                         reverse: steady.reverse.unsafelyUnwrapped, counters: steady.c)
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
        guard let (p, frame) = core.parse(packet) else { return .drop }
        if frame.isIPv6 { return handle6(p, length: length, frame: frame) }
        let ip = IPv4Header(p + frame.ipOffset)
        let tcp = TCPHeader(p + frame.tcpOffset)
        let eth = EthernetHeader(p)
        let dst = ip.destination
        let dstLo = 0xffff_0000_0000 | UInt64(dst)
        let dstPort = tcp.destinationPort
        if core.hasNAT4 && dstLo == natLo && dstPort >= natLow && dstPort <= natHigh {
            guard let reverse = core.reverse else {
                core.c.drop(.unknownReply)
                return .drop
            }
            // A SYN-ACK's checksum is looked at only once it is known to come from the port's
            // backend (`reply` counts any other as unknown_reply), as for IPv6 below.
            if _slowPath(tcp.flags & TCPHeader.syn != 0), let (r, _) = reverse.readRewrite(dstPort),
               Self.comesFromBackend(r, ip: ip, tcp: tcp), ForwarderCore.dropsForChecksum(p, frame, counters: core.c) {
                return .drop
            }
            return Self.reply(length: length, ip: ip, tcp: tcp, eth: eth, natPort: dstPort, reverse: reverse, counters: core.c)
        }
        let frontend = core.frontendIndex(hi: 0, lo: dstLo, port: dstPort)
        guard frontend >= 0 else {
            core.c.drop(.notForUs)
            return .drop
        }
        let i = core.track(clientHi: 0, clientLo: 0xffff_0000_0000 | UInt64(ip.source), clientPort: tcp.sourcePort,
                           frontend: frontend, flags: tcp.flags, frame: p, headers: frame)
        guard i >= 0 else { return i == ForwarderCore.answerWithReset ? core.answerReset(p, frame) : .drop }
        Self.rewrite(p, ipOffset: frame.ipOffset, tcpOffset: frame.tcpOffset, length: length,
                     flow: core.table.entry(at: i), backends: core.backends, counters: core.c)
        return .transmit
    }

    /// An IPv4 client's segment of `flow` leaves for the backend: the rewrite computed when the
    /// flow started (`FlowEntry`: addresses, ports and checksum differences as they lie in the
    /// frame, so nothing is swapped), the backend's MAC, and its byte count.
    @inline(__always)
    private static func rewrite(_ p: UnsafeMutableRawPointer, ipOffset: Int, tcpOffset: Int, length: Int,
                                flow e: UnsafeMutablePointer<FlowEntry>,
                                backends: UnsafeMutablePointer<PacketRoutes.Backend>, counters c: CounterView) {
        let slot = e.pointee.backendSlot
        let ipBase = p + ipOffset
        let tcpBase = p + tcpOffset
        let ipSum = ipBase.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
        ipBase.storeBytes(of: Checksum.adjustStored(ipSum, storedDelta: e.pointee.ipChecksumDelta),
                          toByteOffset: 10, as: UInt16.self)
        let tcpSum = tcpBase.loadUnaligned(fromByteOffset: 16, as: UInt16.self)
        tcpBase.storeBytes(of: Checksum.adjustStored(tcpSum, storedDelta: e.pointee.tcpChecksumDelta),
                           toByteOffset: 16, as: UInt16.self)
        ipBase.storeBytes(of: e.pointee.natAddresses, toByteOffset: 12, as: UInt64.self)
        tcpBase.storeBytes(of: e.pointee.natPorts, toByteOffset: 0, as: UInt32.self)
        EthernetHeader(p).store(backends[Int(slot)].ethernet)
        c.add(c.backend(slot) &+ 2, UInt64(truncatingIfNeeded: length))
    }

    /// A backend's IPv4 segment to NAT address:`natPort`: back to the client as from the VIP,
    /// with the rewrite computed when the flow started (`NATReplyRewrite`), if it comes from
    /// the backend the port was given to.
    @inline(__always)
    private static func reply(length: Int, ip: IPv4Header, tcp: TCPHeader, eth: EthernetHeader, natPort: UInt16,
                              reverse: NATReverseView, counters c: CounterView) -> PacketVerdict {
        guard let (r, version) = reverse.readRewrite(natPort), comesFromBackend(r, ip: ip, tcp: tcp) else {
            return unknownReply(eth.base, length: length, port: natPort, reverse: reverse, counters: c)
        }
        if _slowPath(tcp.flags & (TCPHeader.fin | TCPHeader.rst) != 0) {
            reverse.markClosedByServer(natPort, version: version, reset: tcp.flags & TCPHeader.rst != 0)
        }
        let ipSum = ip.base.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
        ip.base.storeBytes(of: Checksum.adjustStored(ipSum, storedDelta: r.ipChecksumDelta), toByteOffset: 10,
                           as: UInt16.self)
        let tcpSum = tcp.base.loadUnaligned(fromByteOffset: 16, as: UInt16.self)
        tcp.base.storeBytes(of: Checksum.adjustStored(tcpSum, storedDelta: r.tcpChecksumDelta), toByteOffset: 16,
                            as: UInt16.self)
        ip.base.storeBytes(of: r.addresses, toByteOffset: 12, as: UInt64.self)
        tcp.base.storeBytes(of: r.ports, toByteOffset: 0, as: UInt32.self)
        eth.store(r.ethernet)
        let slot = r.backendSlot
        if Int(slot) < c.backendSlots { c.add(c.backend(slot) &+ 3, UInt64(truncatingIfNeeded: length)) }
        return .transmit
    }

    /// Whether an IPv4 segment comes from the backend `r`'s port was given to.
    @inline(__always)
    private static func comesFromBackend(_ r: NATReplyRewrite, ip: IPv4Header, tcp: TCPHeader) -> Bool {
        r.expectedSource == NATReplyRewrite.source(stored: ip.base.loadUnaligned(fromByteOffset: 12, as: UInt32.self),
                                                   tcp.base.loadUnaligned(fromByteOffset: 0, as: UInt16.self))
    }

    /// A segment to a NAT port that is not the reply of that port's flow, counted as
    /// `unknown_reply`. If the port carries no flow, it is a backend's on a connection that is
    /// over (the flow's drain ended, or convey restarted): answered with a reset, so the
    /// backend closes its side. One to a live port from another source (spoofing) is only
    /// dropped.
    @inline(never)
    private static func unknownReply(_ p: UnsafeMutableRawPointer, length: Int, port: UInt16, reverse: NATReverseView?,
                                     counters c: CounterView) -> PacketVerdict {
        c.drop(.unknownReply)
        guard reverse?.isIdle(port) == true, case .tcp(let frame) = FrameParser.classify(p, length: length) else { return .drop }
        return ForwarderCore.answerReset(p, frame, counters: c)
    }

    /// The IPv6 half of `handle`: client → VIP or a backend's reply to the IPv6 NAT address.
    private mutating func handle6(_ p: UnsafeMutableRawPointer, length: Int, frame: TCPFrame) -> PacketVerdict {
        let ip = IPv6Header(p + frame.ipOffset)
        let tcp = TCPHeader(p + frame.tcpOffset)
        let eth = EthernetHeader(p)
        let src = ip.source
        let dst = ip.destination
        let srcPort = tcp.sourcePort
        let dstPort = tcp.destinationPort
        if core.hasNAT6, dst.hi == core.natV6.hi, dst.lo == core.natV6.lo, dstPort >= natLow, dstPort <= natHigh {
            guard let reverse = core.reverse, let (r, version) = reverse.read(dstPort),
                  r.backendHi == src.hi, r.backendLo == src.lo, r.backendPort == srcPort else {
                return Self.unknownReply(p, length: length, port: dstPort, reverse: core.reverse, counters: core.c)
            }
            if tcp.flags & TCPHeader.syn != 0, ForwarderCore.dropsForChecksum(p, frame, counters: core.c) { return .drop }
            if tcp.flags & (TCPHeader.fin | TCPHeader.rst) != 0 {
                reverse.markClosedByServer(dstPort, version: version, reset: tcp.flags & TCPHeader.rst != 0)
            }
            let sum = Checksum.delta(src.hi, r.vipHi) &+ Checksum.delta(src.lo, r.vipLo)
                &+ Checksum.delta(dst.hi, r.clientHi) &+ Checksum.delta(dst.lo, r.clientLo)
                &+ Checksum.delta(srcPort, r.vipPort) &+ Checksum.delta(dstPort, r.clientPort)
            tcp.checksum = Checksum.adjust(tcp.checksum, delta: sum)
            ip.source = (r.vipHi, r.vipLo)
            ip.destination = (r.clientHi, r.clientLo)
            tcp.sourcePort = r.vipPort
            tcp.destinationPort = r.clientPort
            eth.destination = r.clientMAC
            eth.source = core.interfaceMAC
            if Int(r.backendSlot) < core.c.backendSlots { core.c.add(core.c.backend(r.backendSlot) &+ 3, UInt64(truncatingIfNeeded: length)) }
            return .transmit
        }
        let frontend = core.frontendIndex(hi: dst.hi, lo: dst.lo, port: dstPort)
        guard frontend >= 0 else {
            core.c.drop(.notForUs)
            return .drop
        }
        let i = core.track(clientHi: src.hi, clientLo: src.lo, clientPort: srcPort, frontend: frontend,
                           flags: tcp.flags, frame: p, headers: frame)
        guard i >= 0 else { return i == ForwarderCore.answerWithReset ? core.answerReset(p, frame) : .drop }
        let e = core.table.entry(at: i)
        let slot = e.pointee.backendSlot
        let b = core.backends + Int(slot)
        let tcpSum = tcp.base.loadUnaligned(fromByteOffset: 16, as: UInt16.self)
        tcp.base.storeBytes(of: Checksum.adjustStored(tcpSum, storedDelta: e.pointee.tcpChecksumDelta),
                            toByteOffset: 16, as: UInt16.self)
        ip.source = core.natV6
        ip.destination = (b.pointee.addressHi, b.pointee.addressLo)
        tcp.base.storeBytes(of: e.pointee.natPorts, toByteOffset: 0, as: UInt32.self)
        eth.store(b.pointee.ethernet)
        core.c.add(core.c.backend(slot) &+ 2, UInt64(truncatingIfNeeded: length))
        return .transmit
    }
}
