import Balancer

// The first pass reads header fields out of whole words loaded from the frame, as a
// little-endian CPU lays them out (see `lookUp`).
#if !_endian(little)
#error("the AF_XDP forwarders assume a little-endian CPU")
#endif

/// The state and steps the DSR and passthrough forwarders share: routes adoption, the flow
/// table, backend choice, flow lifetime, NAT port ownership and counters.
///
/// Everything the packet path touches is reached through raw pointers cached at adoption
/// (`routes` is held strongly only to keep them valid), so a packet causes no reference
/// counting, no allocation and no lock. One core belongs to one worker thread.
struct ForwarderCore {
    let settings: ForwarderSettings
    let publisher: PacketRoutesPublisher
    let counters: ForwarderCounters
    let c: CounterView
    /// Open flows per backend over every worker (`leastconn`).
    let openFlows: OpenFlowView

    private(set) var routes: PacketRoutes
    private(set) var generation: UInt64 = 0
    var frontends: UnsafeMutablePointer<PacketRoutes.Frontend>
    var backends: UnsafeMutablePointer<PacketRoutes.Backend>
    var backendCount: Int = 0
    var slots: UnsafeMutablePointer<UInt32>
    var sourcePrefixes: UnsafeMutablePointer<SourceFilter.Prefix>
    var vipBuckets: UnsafeMutablePointer<UInt16>
    var vipMask: Int = 0
    /// True when the routes have exactly one frontend: the lookup is one comparison.
    var singleFrontend = false
    /// With one frontend, its index (indices stay with their VIP across reloads, so it need
    /// not be 0).
    var singleFrontendIndex = 0
    /// With one IPv4 frontend: its address and port as the 8 frame bytes from the IPv4
    /// destination on read them (address, source port, destination port), masked by
    /// `vipWordMask` (which drops the source port), so the first pass recognises it with one
    /// load and one comparison. Otherwise a mask of 0 and a word of 1: never equal.
    var vipWord: UInt64 = 1
    var vipWordMask: UInt64 = 0
    var interfaceMAC: UInt64 = 0
    /// Per frontend: the next position in its weighted sequence (wrr) or candidate list (leastconn ties).
    var cursors: [Int] = []

    /// The batch's first-pass results (see `FrameLookup`).
    let lookupBuffer = FrameLookupBuffer()
    let lookups: UnsafeMutablePointer<FrameLookup>

    let tableStorage: FlowTableStorage
    var table: FlowTable
    var sweepCursor = 0
    /// `/flows` requests: the channel, and the last request this worker answered.
    let listing: FlowListing
    var listingServed: UInt64 = 0
    /// A flow listing is asked for or under way.
    var isListing: Bool { listing.requested.load(ordering: .relaxed) != listingServed }
    /// The routes generation held when the current full sweep began (see `FlowSweepProgress`).
    var sweepBegunUnder: UInt64 = 0
    /// Published to the routes publisher, which reuses a retired backend slot only once every
    /// worker's table is clean of it.
    let sweepProgress: FlowSweepProgress
    /// Sweep work owed, in slot × nanoseconds (see `ForwarderSettings.fullSweepInterval`).
    var sweepCredit: UInt64 = 0
    var lastSweep: UInt64 = 0
    /// The batch's clock (monotonic nanoseconds).
    var now: UInt64 = 0

    /// Passthrough only: this worker's NAT ports and the shared reply map.
    let natEnabled: Bool
    let natIPv4: UInt32
    /// The IPv6 NAT address (hi, lo), and which families have one.
    let natV6: (hi: UInt64, lo: UInt64)
    let hasNAT4: Bool
    /// Passthrough: all workers' NAT ports (a reply may be to another worker's port).
    let natPorts: ClosedRange<UInt16>
    /// Passthrough with an IPv4 NAT address (segments to it are backends' replies): that
    /// address as the first pass loads a destination (memory order, widened); otherwise a
    /// value above 32 bits, which no destination equals.
    let replyAddressWord: UInt64
    /// `natPorts` as lower bound and span, so the first pass checks a port with one compare.
    let natPortSpan: UInt16
    let hasNAT6: Bool
    let portStorage: NATPortStorage
    var ports: NATPortPool
    /// Passthrough: ports of flows opened by a SYN, oldest first (see `reclaimHalfOpenPort`).
    var halfOpen: HalfOpenPorts
    let halfOpenStorage: HalfOpenPortsStorage
    let reverseMap: NATReverseMap?
    let reverse: NATReverseView?

    init(settings: ForwarderSettings, publisher: PacketRoutesPublisher, reverseMap: NATReverseMap?,
         counters: ForwarderCounters?) {
        self.settings = settings
        self.publisher = publisher
        let counters = counters ?? ForwarderCounters(backendSlots: publisher.maxBackendSlots)
        precondition(counters.backendSlots >= publisher.maxBackendSlots,
                     "counters for \(counters.backendSlots) backends, routes may use \(publisher.maxBackendSlots)")
        self.counters = counters
        c = CounterView(counters)
        listing = counters.listing
        openFlows = OpenFlowView(publisher.openFlows)
        let (routes, _) = publisher.current()
        self.routes = routes
        frontends = routes.frontends
        backends = routes.backends
        slots = routes.slots
        sourcePrefixes = routes.sourcePrefixes
        vipBuckets = routes.vipBuckets
        lookups = lookupBuffer.lookups
        tableStorage = FlowTableStorage(capacity: settings.capacity)
        // Seed from the storage address and the worker index: differs per table and run.
        let seed = UInt64(UInt(bitPattern: tableStorage.entries)) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(settings.workerIndex)
        table = FlowTable(storage: tableStorage, capacity: settings.capacity, window: settings.probeWindow, seed: seed)
        natEnabled = reverseMap != nil
        if case .v4(let a) = settings.natAddress { natIPv4 = a } else { natIPv4 = 0 }
        hasNAT4 = settings.natAddress?.isIPv4 == true
        natPorts = settings.natPorts ?? 1...1
        replyAddressWord = reverseMap != nil && hasNAT4 ? UInt64(natIPv4.bigEndian) : .max
        natPortSpan = natPorts.upperBound &- natPorts.lowerBound
        let v6 = [settings.natAddressV6, settings.natAddress].compactMap { $0 }.first { !$0.isIPv4 }
        natV6 = v6.map(StableHash.widened) ?? (0, 0)
        hasNAT6 = v6 != nil
        portStorage = NATPortStorage(range: reverseMap != nil ? settings.workerNATPorts : nil, start: settings.natPortStart)
        ports = NATPortPool(storage: portStorage)
        halfOpenStorage = HalfOpenPortsStorage(ports: portStorage.size)
        halfOpen = HalfOpenPorts(storage: halfOpenStorage)
        self.reverseMap = reverseMap
        reverse = reverseMap.map(NATReverseView.init)
        // Registered before adopting (as clean of nothing), so no publish in between can
        // reuse a slot without counting this worker.
        let progress = FlowSweepProgress(cleanThrough: 0)
        publisher.register(progress)
        sweepProgress = progress
        adopt()
        // The table is empty: clean of everything missing from the routes just adopted.
        sweepBegunUnder = generation
        progress.completedSweep(begunUnder: generation)
    }

    // MARK: Per frame

    /// Counts received frames (once per frame, or once per batch).
    @inline(__always)
    func countReceived(frames: Int, bytes: UInt64) {
        c.add(ForwarderCounters.rxPackets, UInt64(frames))
        c.add(ForwarderCounters.rxBytes, bytes)
    }

    /// The TCP frame, or nil after counting why it is dropped (no buffer, not TCP over
    /// IPv4/IPv6, malformed). Counts nothing else. With `acceptingTooBig`, an unsupported
    /// frame that is an ICMP "too big" (`ICMPTooBig`) is left uncounted for the caller.
    @inline(__always)
    func parse(_ packet: UnsafeMutableRawBufferPointer, acceptingTooBig: Bool = false) -> (UnsafeMutableRawPointer, TCPFrame)? {
        guard let p = packet.baseAddress else {
            c.drop(.malformed)
            return nil
        }
        switch FrameParser.classify(p, length: packet.count) {
        case .tcp(let frame): return (p, frame)
        case .unsupported:
            if acceptingTooBig && ICMPTooBig.parse(p, length: packet.count) != nil { return nil }
            c.drop(.unsupported)
            return nil
        case .malformed:
            c.drop(.malformed)
            return nil
        }
    }

    /// The 8 bytes of an IPv4 TCP frame from the destination address on (address, source
    /// port, destination port) as `UnsafeRawPointer.loadUnaligned` reads them, for `address`
    /// and `port`, and the mask that keeps all but the source port.
    static func destinationWord(address: UInt32, port: UInt16) -> (word: UInt64, mask: UInt64) {
        var word: UInt64 = 0
        var mask: UInt64 = 0
        withUnsafeMutableBytes(of: &word) { Wire.store32($0.baseAddress!, 0, address); Wire.store16($0.baseAddress!, 6, port) }
        withUnsafeMutableBytes(of: &mask) { Wire.store32($0.baseAddress!, 0, .max); Wire.store16($0.baseAddress!, 6, .max) }
        return (word, mask)
    }

    /// The first pass over one frame of a batch (see `FrameLookup`): a plain IPv4 TCP segment
    /// to a VIP gets its frontend, flow key and home slot, and that slot starts loading;
    /// anything else is left to the full path.
    ///
    /// Passthrough: a plain IPv4 segment to a port of the IPv4 NAT address is a backend's
    /// reply; its reverse-map entry starts loading instead.
    @inline(__always)
    func lookUp(_ frame: PacketFrame) -> FrameLookup {
        let p = frame.base
        guard FrameParser.plainIPv4TCP(p, length: frame.length) != nil else { return FrameLookup(home: FrameLookup.full) }
        // Bytes 30–37 as one little-endian word (x86-64, arm64): the destination address in
        // the low half as the frame holds it, the destination port in the top 16 bits.
        let destination = p.loadUnaligned(fromByteOffset: 30, as: UInt64.self)
        if destination & vipWordMask == vipWord {
            return lookUpFlow(p, frontend: singleFrontendIndex)
        }
        if UInt64(UInt32(truncatingIfNeeded: destination)) == replyAddressWord {
            let port = UInt16(bigEndian: UInt16(truncatingIfNeeded: destination >> 48))
            guard port &- natPorts.lowerBound <= natPortSpan else { return FrameLookup(home: FrameLookup.full) }
            // `replyAddressWord` matches only with a reverse map.
            reverse.unsafelyUnwrapped.prefetch(port)
            return FrameLookup(home: FrameLookup.reply, clientLo: UInt64(port))
        }
        let dst = Wire.load32(p, 30)
        let dstPort = Wire.load16(p, 36)
        let frontend = frontendIndex(hi: 0, lo: 0xffff_0000_0000 | UInt64(dst), port: dstPort)
        guard frontend >= 0 else { return FrameLookup(home: FrameLookup.full) }
        return lookUpFlow(p, frontend: frontend)
    }

    /// The first pass over (part of) a batch: every frame's `lookUp`, into `lookups`.
    @inline(__always)
    func lookUp(batch frames: UnsafeBufferPointer<PacketFrame>) {
        var i = 0
        while i < frames.count {
            lookups[i] = lookUp(frames[i])
            i &+= 1
        }
    }

    /// `lookUp` once the frontend is known (inlined twice, so the single-VIP case reads its
    /// frontend index from the forwarder instead of the VIP table).
    @inline(__always)
    private func lookUpFlow(_ p: UnsafeMutableRawPointer, frontend: Int) -> FrameLookup {
        // A segment that opens or closes its flow takes the full path (its state changes).
        guard p.load(fromByteOffset: 47, as: UInt8.self) & (TCPHeader.syn | TCPHeader.fin | TCPHeader.rst) == 0 else {
            return FrameLookup(home: FrameLookup.full)
        }
        let clientLo = 0xffff_0000_0000 | UInt64(Wire.load32(p, 26))
        let key = FlowEntry.key(port: Wire.load16(p, 34), vip: frontend)
        let home = table.home(hi: 0, lo: clientLo, key: key)
        table.prefetch(home: home)
        return FrameLookup(home: home, clientLo: clientLo, key: key)
    }

    /// What the second pass of a batch reads, copied out of the forwarder once per batch so
    /// that it stays in registers across the frames (the full path, a call that may change
    /// the forwarder, would otherwise make every frame reload it). Nothing in it changes
    /// within a batch: routes and the clock move only in `beginBatch`.
    struct SteadyPath {
        let table: FlowTable
        let backends: UnsafeMutablePointer<PacketRoutes.Backend>
        let now: UInt64
        let c: CounterView
        /// Passthrough: the reply map (nil otherwise; a `FrameLookup.reply` implies one).
        let reverse: NATReverseView?

        /// The flow of a looked-up frame (`p`, a plain IPv4 segment), its last-seen time
        /// updated, when the segment simply continues it (see `isSteady`) close enough to the
        /// client's sequence window that the window need not move (`isNearWindow`); nil sends
        /// the frame down the full path.
        @inline(__always)
        func flow(_ l: FrameLookup, frame p: UnsafeMutableRawPointer) -> UnsafeMutablePointer<FlowEntry>? {
            let found = table.findIPv4(lo: l.clientLo, key: l.key, home: l.home)
            guard found >= 0 else { return nil }
            let e = table.entry(at: found)
            // The sequence number is read here, not in the first pass: carried through the
            // batch it costs a register over the loop (measured: passthrough 159.2 instead of
            // 153.2 instructions a packet, DSR 137.3 instead of 136.3, storing per packet both ways).
            guard ForwarderCore.isSteady(e, now: now, backends: backends),
                  ForwarderCore.isNearWindow(e, sequence: TCPHeader(p + (EthernetHeader.length + 20)).sequenceNumber)
            else { return nil }
            e.pointee.lastSeen = now
            return e
        }
    }

    @inline(__always)
    func steadyPath() -> SteadyPath {
        SteadyPath(table: table, backends: backends, now: now, c: c, reverse: reverse)
    }

    /// True when a segment that neither opens nor closes the flow `e` continues it unchanged:
    /// established, within its idle time, to a usable backend.
    ///
    /// No bounds check on the backend slot: a flow's slot came from routes of this publisher,
    /// whose registry only grows, so it is below every later routes' `backendCount`.
    @inline(__always)
    static func isSteady(_ e: UnsafeMutablePointer<FlowEntry>, now: UInt64,
                         backends: UnsafeMutablePointer<PacketRoutes.Backend>) -> Bool {
        e.pointee.state == .established && !isExpired(e, now: now)
            && backends[Int(e.pointee.backendSlot)].unusableBits == 0
    }

    // MARK: Per batch

    /// Adopts newer routes if published, and sweeps the slots the elapsed time pays for.
    mutating func beginBatch(now: UInt64) {
        self.now = now
        if publisher.generation != generation { adopt() }
        let interval = max(1, settings.fullSweepInterval)
        let slots = UInt64(table.slotCount)
        if now > lastSweep {
            let elapsed = min(now &- lastSweep, interval)
            sweepCredit = min(sweepCredit &+ elapsed &* slots, slots &* interval)
            lastSweep = now
        }
        // Paced by the clock alone (the worker also calls this after idle sleeps), so the whole
        // table is checked once per interval however busy or idle the worker is.
        let budget = min(sweepCredit / interval, UInt64(max(0, settings.sweepPerBatch)))
        if budget > 0 {
            sweep(Int(budget))
            sweepCredit &-= budget &* interval
        }
        if _slowPath(listing.requested.load(ordering: .relaxed) != listingServed),
           let served = listing.step(table: table, now: now) {
            listingServed = served
        }
    }

    private mutating func adopt() {
        let (routes, generation) = publisher.current()
        self.routes = routes
        self.generation = generation
        frontends = routes.frontends
        backends = routes.backends
        backendCount = routes.backendCount
        slots = routes.slots
        sourcePrefixes = routes.sourcePrefixes
        vipBuckets = routes.vipBuckets
        vipMask = routes.vipMask
        singleFrontend = routes.presentFrontendCount == 1
        singleFrontendIndex = max(0, routes.singleFrontendIndex)
        vipWord = 1
        vipWordMask = 0
        let single = frontends[singleFrontendIndex]
        if singleFrontend, let vip = StableHash.mappedIPv4(hi: single.vipHi, lo: single.vipLo) {
            (vipWord, vipWordMask) = Self.destinationWord(address: vip, port: single.vipPort)
        }
        interfaceMAC = routes.interfaceMAC.rawValue
        // Workers start their weighted sequences at different places, so together they
        // interleave servers instead of all sending their first flows to the same one. A
        // frontend's cursor carries on across new routes (which come every second during a
        // slow_start ramp): restarting it would favour the sequence's first servers on a
        // worker that sees few new flows between publications.
        let previous = cursors
        cursors = (0..<routes.frontendCount).map { i in
            if i < previous.count, previous[i] != 0 { return previous[i] }
            let f = routes.frontends[i]
            let n = Int(f.sequenceCount > 0 ? f.sequenceCount : f.candidatesCount)
            return n == 0 ? 0 : n * settings.workerIndex / settings.workerCount
        }
    }

    /// Checks `count` slots from the sweep cursor: ends expired flows and flows whose backend
    /// is gone or whose drain has ended, and moves passthrough flows the backend closed to the
    /// closing state.
    mutating func sweep(_ count: Int) {
        var i = sweepCursor
        let mask = table.mask
        for _ in 0..<count {
            let e = table.entry(at: i)
            if e.pointee.state != .empty {
                if isExpired(e) {
                    end(i, Self.expiryCounter(e))
                } else if !keepsFlows(e.pointee.backendSlot) || !frontends[e.pointee.vipIndex].present {
                    // Its backend is gone or drained, or its VIP is no longer routed.
                    end(i, ForwarderCounters.flowsEnded)
                } else if e.pointee.state != .closing, e.pointee.natPort != 0, let reverse {
                    // The backend sent RST, or FIN after the client's FIN (seen by whichever
                    // worker got the reply): the connection is over. A FIN alone is a
                    // half-close: the client may still send, so the flow stays open.
                    switch reverse.serverClose(e.pointee.natPort) {
                    case .reset: startClosing(e)
                    case .finished where e.pointee.clientFinished: startClosing(e)
                    default: break
                    }
                }
            }
            i = (i &+ 1) & mask
            if i == 0 {
                // A full pass over the table, all of it under routes at least this new.
                sweepProgress.completedSweep(begunUnder: sweepBegunUnder)
                sweepBegunUnder = generation
            }
        }
        sweepCursor = i
    }

    // MARK: Flows

    /// The frontend index for a destination (widened address, port), or -1.
    @inline(__always)
    func frontendIndex(hi: UInt64, lo: UInt64, port: UInt16) -> Int {
        if singleFrontend {
            let f = frontends + singleFrontendIndex
            return f.pointee.vipLo == lo && f.pointee.vipPort == port && f.pointee.vipHi == hi ? singleFrontendIndex : -1
        }
        var b = PacketRoutes.vipHash(hi: hi, lo: lo, port: port) & vipMask
        while true {
            let v = Int(vipBuckets[b])
            if v == 0 { return -1 }
            let f = frontends + (v &- 1)
            if f.pointee.vipLo == lo, f.pointee.vipPort == port, f.pointee.vipHi == hi { return v &- 1 }
            b = (b &+ 1) & vipMask
        }
    }

    @inline(__always)
    func isExpired(_ e: UnsafeMutablePointer<FlowEntry>) -> Bool { Self.isExpired(e, now: now) }

    /// True when the flow `e` has been idle longer than its state's timeout at `now`.
    @inline(__always)
    static func isExpired(_ e: UnsafeMutablePointer<FlowEntry>, now: UInt64) -> Bool {
        let seen = e.pointee.lastSeen
        return now > seen && now &- seen > e.pointee.idleTimeout
    }

    @inline(__always)
    func keepsFlows(_ slot: UInt32) -> Bool {
        let s = Int(slot)
        guard s < backendCount else { return false }
        let flags = backends[s].flags
        return flags & PacketRoutes.Backend.present != 0 && flags & PacketRoutes.Backend.keepsFlows != 0
    }

    /// How a flow past its idle time is counted: a closing one (FIN or RST seen) has simply
    /// ended; any other was abandoned (`flowsExpired`).
    @inline(__always)
    static func expiryCounter(_ e: UnsafeMutablePointer<FlowEntry>) -> Int {
        e.pointee.state == .closing ? ForwarderCounters.flowsEnded : ForwarderCounters.flowsExpired
    }

    /// Moves a flow to the closing state, counted once: its closing time runs from now (the
    /// batch in which the close was seen). In passthrough, which sees both sides, closing
    /// means the connection is over (both FINs, or a RST): its backend's open count
    /// (`current_connections`, `leastconn`, a removed server's drain) drops now, not when the
    /// lingering flow ends, as IPVS moves a closed connection from ActiveConn to InActConn.
    /// DSR sees only the client's side: after its FIN the backend may still be sending, so
    /// the flow counts as open until it ends.
    func startClosing(_ e: UnsafeMutablePointer<FlowEntry>) {
        if e.pointee.state != .closing {
            c.add(ForwarderCounters.flowsClosing, 1)
            if natEnabled {
                c.add(c.backend(e.pointee.backendSlot) &+ 1, 1)
                openFlows.closed(e.pointee.backendSlot)
            }
        }
        e.pointee.state = .closing
        e.pointee.idleTimeout = settings.closingTimeout
        e.pointee.lastSeen = now
    }

    /// Ends the flow in table slot `i`, counting it under `counter`.
    @inline(never)
    mutating func end(_ i: Int, _ counter: Int) {
        let e = table.entry(at: i)
        let closing = e.pointee.state == .closing
        if closing { c.add(ForwarderCounters.flowsClosing, UInt64.max) }  // minus one
        if !(closing && natEnabled) {  // else its close was counted when it began (startClosing)
            c.add(c.backend(e.pointee.backendSlot) &+ 1, 1)
            openFlows.closed(e.pointee.backendSlot)
        }
        let port = e.pointee.natPort
        if port != 0 {
            reverse?.retire(port)
            ports.release(port)
        }
        table.remove(at: i)
        c.add(counter, 1)
        c.set(ForwarderCounters.flowsActive, UInt64(table.count))
    }

    /// Finds or creates the flow of a client→VIP segment and returns its table slot, or -1
    /// after counting why the frame is dropped. Updates the flow's state and last-seen time.
    ///
    /// Inlined into `handle` is only the steady state (an established flow, a segment that
    /// neither opens nor closes it, within its idle time, to a usable backend, near the
    /// client's sequence window: one store); everything else goes to `trackOther`, out of line.
    ///
    /// `frame` is the frame's first byte: the slow path reads the client's MAC from it (and
    /// the VIP from the frontend), and a new flow's SYN checksum through `headers`, so the hot
    /// path keeps no more values alive than it uses.
    @inline(__always)
    mutating func track(clientHi: UInt64, clientLo: UInt64, clientPort: UInt16, frontend: Int, flags: UInt8,
                        frame: UnsafeMutableRawPointer, headers: TCPFrame) -> Int {
        let key = FlowEntry.key(port: clientPort, vip: frontend)
        let home = table.home(hi: clientHi, lo: clientLo, key: key)
        let found = table.find(hi: clientHi, lo: clientLo, key: key, home: home)
        if _fastPath(found >= 0) {
            let e = table.entry(at: found)
            if _fastPath(flags & (TCPHeader.syn | TCPHeader.fin | TCPHeader.rst) == 0
                         && Self.isSteady(e, now: now, backends: backends)
                         && Self.isNearWindow(e, sequence: TCPHeader(frame + headers.tcpOffset).sequenceNumber)) {
                e.pointee.lastSeen = now
                return found
            }
        }
        return trackOther(found: found, clientHi: clientHi, clientLo: clientLo, frontend: frontend, key: key,
                          home: home, flags: flags, frame: frame, headers: headers)
    }

    /// `track` beyond the steady state: state changes, expiry, a backend that went away, and
    /// new flows.
    @inline(never)
    private mutating func trackOther(found: Int, clientHi: UInt64, clientLo: UInt64, frontend: Int, key: UInt32,
                                     home: Int, flags: UInt8, frame: UnsafeMutableRawPointer, headers: TCPFrame) -> Int {
        let isSYN = flags & (TCPHeader.syn | TCPHeader.ack) == TCPHeader.syn
        if found >= 0 {
            let e = table.entry(at: found)
            if isExpired(e) {
                end(found, Self.expiryCounter(e))
            } else if isSYN && e.pointee.state == .closing {
                // The client reuses its port for a new connection: place it afresh.
                end(found, ForwarderCounters.flowsEnded)
            } else {
                let b = backends + Int(e.pointee.backendSlot)
                if Int(e.pointee.backendSlot) >= backendCount || b.pointee.unusableBits != 0 {
                    if !keepsFlows(e.pointee.backendSlot) {
                        end(found, ForwarderCounters.flowsEnded)
                        c.drop(.backendGone)
                        return Self.answerWithReset
                    } else {
                        c.drop(.noBackend)
                    }
                    return -1
                }
                let sequence = TCPHeader(frame + headers.tcpOffset).sequenceNumber
                if isSYN && e.pointee.state == .syn {
                    // The client's SYN again, perhaps with a new initial sequence number.
                    e.pointee.clientSequence = sequence
                } else if !Self.isInWindow(e, sequence: sequence) {
                    // Forwarded for the backend to judge, but it changes nothing here: a forged
                    // RST or FIN cannot end a connection (nor refresh it). Any other segment
                    // keeps the flow alive, as before, without changing its state.
                    if flags & (TCPHeader.rst | TCPHeader.fin) != 0 {
                        c.add(ForwarderCounters.closesOutOfWindow, 1)
                    } else {
                        e.pointee.lastSeen = now
                    }
                    return found
                } else {
                    Self.follow(e, sequence: sequence)
                }
                if flags & TCPHeader.rst != 0 {
                    startClosing(e)
                } else if flags & TCPHeader.fin != 0 {
                    // Passthrough sees both directions: the flow closes when both sides have
                    // sent FIN (or one RST), so a half-closed connection keeps its flow while the
                    // backend still answers. DSR sees only the client's side: its FIN starts
                    // the closing time. A first ACK that carries the FIN establishes the flow.
                    if e.pointee.state == .syn && flags & (TCPHeader.ack | TCPHeader.syn) == TCPHeader.ack {
                        e.pointee.state = .established
                        e.pointee.idleTimeout = settings.establishedTimeout
                    }
                    e.pointee.clientFinished = true
                    if !natEnabled || e.pointee.natPort == 0 || reverse?.serverClose(e.pointee.natPort) != .open {
                        startClosing(e)
                    }
                } else if e.pointee.state == .syn && flags & (TCPHeader.ack | TCPHeader.syn) == TCPHeader.ack {
                    e.pointee.state = .established
                    e.pointee.idleTimeout = settings.establishedTimeout
                }
                e.pointee.lastSeen = now
                return found
            }
        }
        let vip = frontends + frontend
        return create(clientHi: clientHi, clientLo: clientLo, clientPort: FlowEntry.port(ofKey: key),
                      frontend: frontend, key: key, home: home, vipHi: vip.pointee.vipHi, vipLo: vip.pointee.vipLo,
                      vipPort: vip.pointee.vipPort, flags: flags, frame: frame, headers: headers)
    }

    /// Passthrough: whether (hi, lo) (widened) is one of the NAT addresses, from which no
    /// client connects (the backends' replies would come back to the balancer itself).
    func isNATAddress(_ hi: UInt64, _ lo: UInt64) -> Bool {
        guard natEnabled else { return false }
        if hasNAT4, let v4 = StableHash.mappedIPv4(hi: hi, lo: lo), v4 == natIPv4 { return true }
        return hasNAT6 && hi == natV6.hi && lo == natV6.lo
    }

    /// Whether a client at (hi, lo) (the widened form) may open a connection to `vip`: not
    /// from an address no host can send from, and not from the VIP itself.
    static func isPlausibleClient(hi: UInt64, lo: UInt64, vipHi: UInt64, vipLo: UInt64) -> Bool {
        if hi == vipHi && lo == vipLo { return false }
        if let v4 = StableHash.mappedIPv4(hi: hi, lo: lo) {
            let first = v4 >> 24
            return first != 0 && first != 127 && first < 224
        }
        if hi == 0 && (lo == 0 || lo == 1) { return false }  // ::, ::1
        return hi >> 56 != 0xFF  // multicast
    }

    /// The new-flow path (a SYN, or a DSR segment `adoptsMidFlow`): kept out of line so
    /// `track`'s hit path inlines into `handle`.
    @inline(never)
    private mutating func create(clientHi: UInt64, clientLo: UInt64, clientPort: UInt16, frontend: Int, key: UInt32,
                                 home: Int, vipHi: UInt64, vipLo: UInt64, vipPort: UInt16, flags: UInt8,
                                 frame: UnsafeMutableRawPointer, headers: TCPFrame) -> Int {
        let isSYN = flags & (TCPHeader.syn | TCPHeader.ack) == TCPHeader.syn
        // What no host would take a connection from, checked on the new-flow path only (frames
        // to group MACs never get here: the steering program leaves them to the kernel).
        // SYN+FIN and SYN+RST open nothing on a real host.
        if flags & TCPHeader.syn != 0 && flags & (TCPHeader.fin | TCPHeader.rst) != 0 {
            c.drop(.malformed)
            return -1
        }
        guard Self.isPlausibleClient(hi: clientHi, lo: clientLo, vipHi: vipHi, vipLo: vipLo), !isNATAddress(clientHi, clientLo)
        else {
            c.drop(.badSource)
            return -1
        }
        guard admitsSource(frontend: frontend, hi: clientHi, lo: clientLo) else {
            // Every packet is a drop; only what would open a connection counts to the frontend
            // (each SYN, its retransmissions too), not a refused client's stray ACKs.
            if isSYN || adoptsMidFlow(frontend: frontend, flags: flags) { c.refuse(.denied, frontend: frontend) } else { c.drop(.denied) }
            return -1
        }
        guard isSYN || adoptsMidFlow(frontend: frontend, flags: flags) else {
            c.drop(.noFlow)
            return Self.answerWithReset
        }
        // Summed only here, once the cheap refusals above have had their say.
        if isSYN && Self.dropsForChecksum(frame, headers, counters: c) { return -1 }
        // The frontend's `max_connections` turns away new connections only (as the server's).
        if isSYN && frontends[frontend].limit != 0 && frontendIsFull(frontend) {
            c.refuse(.overLimit, frontend: frontend)
            return -1
        }
        let clientMAC = EthernetHeader(frame).source
        var slot = pick(frontend: frontend, clientHi: clientHi, clientLo: clientLo, clientPort: clientPort,
                        vipHi: vipHi, vipLo: vipLo, vipPort: vipPort)
        guard slot != UInt32.max, Int(slot) < backendCount else {
            c.refuse(.noBackend, frontend: frontend)
            return -1
        }
        // A server's `max_connections` turns away new connections only: a flow DSR takes up
        // mid-connection already has its server (its hash's).
        if isSYN && backends[Int(slot)].limit != 0 && isFull(slot) {
            // DSR placing by hash does not move a SYN to another server: a later segment of
            // that connection the table no longer holds (a restart, an ECMP move to the other
            // balancer, an eviction) would be taken up on the hash's server, which would reset
            // it. Its client retries instead, as when every server is full.
            slot = !natEnabled && placesByHash(frontend: frontend) ? UInt32.max : leastLoaded(frontend: frontend, skippingFull: true)
            guard slot != UInt32.max else {
                c.refuse(.serversFull, frontend: frontend)
                return -1
            }
        }
        if natEnabled {
            // NAT keeps the family: the backend's must be the client's, with a NAT address of it.
            let clientIsV6 = StableHash.mappedIPv4(hi: clientHi, lo: clientLo) == nil
            let backendIsV6 = backends[Int(slot)].flags & PacketRoutes.Backend.ipv6 != 0
            guard clientIsV6 == backendIsV6, clientIsV6 ? hasNAT6 : hasNAT4 else {
                c.refuse(.noBackend, frontend: frontend)
                return -1
            }
        }
        let at = table.slotForInsert(home: home, now: now, minIdle: settings.minIdleForEviction)
        guard at >= 0 else {
            c.drop(.tableFull)
            return -1
        }
        var natPort: UInt16 = 0
        if natEnabled {
            natPort = ports.allocate()
            if natPort == 0 && isSYN { natPort = reclaimHalfOpenPort() }
            guard natPort != 0 else {
                c.drop(.noNATPort)
                return -1
            }
        }
        if table.entry(at: at).pointee.state != .empty { end(at, ForwarderCounters.flowsEvicted) }
        var entry = FlowEntry(clientHi: clientHi, clientLo: clientLo, lastSeen: now, backendSlot: slot,
                              portAndVIP: key, natPort: natPort, state: isSYN ? .syn : .established)
        entry.idleTimeout = isSYN ? settings.synTimeout : settings.establishedTimeout
        entry.clientSequence = TCPHeader(frame + headers.tcpOffset).sequenceNumber
        if natEnabled {
            setNATRewrite(&entry, clientHi: clientHi, clientLo: clientLo, clientPort: clientPort, vipHi: vipHi,
                          vipLo: vipLo, vipPort: vipPort, backend: backends[Int(slot)], natPort: natPort)
        }
        table.insert(entry, at: at)
        if natEnabled, let reverse {
            let b = backends[Int(slot)]
            let reverseEntry = NATReverseEntry(clientHi: clientHi, clientLo: clientLo, clientPort: clientPort,
                                               clientMAC: clientMAC, vipHi: vipHi, vipLo: vipLo, vipPort: vipPort,
                                               backendHi: b.addressHi, backendLo: b.addressLo, backendPort: b.port,
                                               backendSlot: slot)
            reverse.publish(natPort, reverseEntry, rewrite: replyRewrite(reverseEntry, natPort: natPort))
        }
        if natEnabled && isSYN {
            if halfOpen.isFull {
                var queue = halfOpen
                queue.compact { halfOpenFlow(holding: $0) >= 0 }
                halfOpen = queue
            }
            halfOpen.push(natPort)
        }
        c.add(ForwarderCounters.flowsCreated, 1)
        c.set(ForwarderCounters.flowsActive, UInt64(table.count))
        c.add(c.backend(slot), 1)
        openFlows.opened(slot)
        if !isSYN {
            c.add(ForwarderCounters.flowsAdopted, 1)
            if flags & TCPHeader.fin != 0 { startClosing(table.entry(at: at)) }
        }
        return at
    }

    /// Passthrough, out of NAT ports: ends the oldest flow still waiting for its handshake
    /// (in SYN state, silent for `minIdleForEviction`) and returns its port, or 0 when none
    /// is that old. Counted as an eviction. Stale queue entries (flows established or ended
    /// since) are dropped on the way.
    @inline(never)
    mutating func reclaimHalfOpenPort() -> UInt16 {
        while let port = halfOpen.popOldest() {
            let i = halfOpenFlow(holding: port)
            guard i >= 0 else { continue }
            let flow = table.entry(at: i)
            guard now &- flow.pointee.lastSeen >= settings.minIdleForEviction else {
                halfOpen.restoreOldest(port)
                return 0
            }
            end(i, ForwarderCounters.flowsEvicted)
            return ports.allocate()
        }
        return 0
    }

    /// The table slot of the flow in SYN state that holds NAT `port`, or -1 (the port is free,
    /// or its flow was established or ended since it was queued).
    func halfOpenFlow(holding port: UInt16) -> Int {
        guard let e = reverse?.read(port)?.entry else { return -1 }
        let frontend = frontendIndex(hi: e.vipHi, lo: e.vipLo, port: e.vipPort)
        guard frontend >= 0 else { return -1 }
        let key = FlowEntry.key(port: e.clientPort, vip: frontend)
        let i = table.find(hi: e.clientHi, lo: e.clientLo, key: key, home: table.home(hi: e.clientHi, lo: e.clientLo, key: key))
        guard i >= 0 else { return -1 }
        let flow = table.entry(at: i)
        return flow.pointee.state == .syn && flow.pointee.natPort == port ? i : -1
    }

    /// What `track` returns for a segment of no flow, or of one whose drain ended: dropped
    /// (and counted), and to be answered with a reset (`answerReset`).
    static let answerWithReset = -2

    /// Turns a segment `track` did not forward into the reset its sender is owed (see
    /// `ResetReply`): the sender learns the connection is gone at once instead of
    /// retransmitting into silence. Counted in `resetsSent`.
    @inline(never)
    func answerReset(_ p: UnsafeMutableRawPointer, _ frame: TCPFrame) -> PacketVerdict {
        Self.answerReset(p, frame, counters: c)
    }

    /// True when the SYN (or SYN-ACK) in `frame` is dropped for its checksum, counted as
    /// `unfinished_checksum` or `bad_checksum` (see `SegmentChecksum`); false when it is valid.
    static func dropsForChecksum(_ p: UnsafeMutableRawPointer, _ frame: TCPFrame, counters c: CounterView) -> Bool {
        switch SegmentChecksum.classify(p, frame) {
        case .valid: return false
        case .unfinished: c.drop(.unfinishedChecksum)
        case .wrong: c.drop(.badChecksum)
        }
        return true
    }

    /// `answerReset` for callers that hold only the counters (the passthrough reply path).
    static func answerReset(_ p: UnsafeMutableRawPointer, _ frame: TCPFrame, counters c: CounterView) -> PacketVerdict {
        guard ResetReply.rewrite(p, frame) else { return .drop }
        c.add(ForwarderCounters.resetsSent, 1)
        return .transmit
    }

    /// The frontend's `allow` / `deny` lists admit this client (always, without lists).
    @inline(__always)
    private func admitsSource(frontend: Int, hi: UInt64, lo: UInt64) -> Bool {
        let f = frontends[frontend]
        guard f.denyCount | f.allowCount != 0 else { return true }
        let deny = UnsafeBufferPointer(start: sourcePrefixes + Int(f.sourcesStart), count: Int(f.denyCount))
        let allow = UnsafeBufferPointer(start: sourcePrefixes + Int(f.sourcesStart) + Int(f.denyCount), count: Int(f.allowCount))
        return SourceFilter.admits(hi: hi, lo: lo, deny: deny, allow: allow)
    }

    /// DSR with `maglev` or `source`: a segment of a connection this worker has no flow for —
    /// convey restarted, ECMP moved the connection here from another balancer, or the table
    /// evicted it — is placed by the hash a SYN would have been, so it reaches the backend
    /// that holds the connection (as long as the backends are those it opened with), and
    /// its flow is tracked from then on. Passthrough cannot (the NAT port is lost), nor can
    /// `wrr` or `leastconn` (their choice is not a function of the connection). A reset is
    /// never taken up.
    private func adoptsMidFlow(frontend: Int, flags: UInt8) -> Bool {
        guard !natEnabled, flags & (TCPHeader.rst | TCPHeader.syn) == 0 else { return false }
        return placesByHash(frontend: frontend)
    }

    /// Whether frontend `frontend` places connections by hashing them (`maglev`, `source`), so
    /// that any segment of a connection finds the backend its SYN did.
    func placesByHash(frontend: Int) -> Bool {
        let algorithm = frontends[frontend].algorithm
        return algorithm == PacketRoutes.Frontend.maglev || algorithm == PacketRoutes.Frontend.source
    }

    /// Passthrough: stores in `entry` what every client→backend frame of the flow becomes —
    /// addresses, ports, and the checksum differences, constant per flow.
    func setNATRewrite(_ entry: inout FlowEntry, clientHi: UInt64, clientLo: UInt64, clientPort: UInt16,
                               vipHi: UInt64, vipLo: UInt64, vipPort: UInt16, backend b: PacketRoutes.Backend,
                               natPort: UInt16) {
        let ports = Checksum.delta(clientPort, natPort) &+ Checksum.delta(vipPort, b.port)
        entry.natPorts = (UInt32(natPort) << 16 | UInt32(b.port)).bigEndian
        if StableHash.mappedIPv4(hi: clientHi, lo: clientLo) != nil {
            let client = UInt32(truncatingIfNeeded: clientLo)
            let vip = UInt32(truncatingIfNeeded: vipLo)
            let backend = UInt32(truncatingIfNeeded: b.addressLo)
            let ip = Checksum.delta(client, natIPv4) &+ Checksum.delta(vip, backend)
            entry.natAddresses = (UInt64(natIPv4) << 32 | UInt64(backend)).bigEndian
            entry.ipChecksumDelta = Checksum.storedDelta(ip)
            entry.tcpChecksumDelta = Checksum.storedDelta(ip &+ ports)
        } else {
            let addresses = Checksum.delta(clientHi, natV6.hi) &+ Checksum.delta(clientLo, natV6.lo)
                &+ Checksum.delta(vipHi, b.addressHi) &+ Checksum.delta(vipLo, b.addressLo)
            entry.tcpChecksumDelta = Checksum.storedDelta(addresses &+ ports)
        }
    }

    /// Passthrough, IPv4 flows: what every reply of the flow becomes (see `NATReplyRewrite`);
    /// nil for IPv6 flows, whose replies take the full path.
    func replyRewrite(_ e: NATReverseEntry, natPort: UInt16) -> NATReplyRewrite? {
        guard let client = StableHash.mappedIPv4(hi: e.clientHi, lo: e.clientLo),
              let vip = StableHash.mappedIPv4(hi: e.vipHi, lo: e.vipLo),
              let backend = StableHash.mappedIPv4(hi: e.backendHi, lo: e.backendLo) else { return nil }
        let ip = Checksum.delta(backend, vip) &+ Checksum.delta(natIPv4, client)
        let tcp = ip &+ Checksum.delta(e.backendPort, e.vipPort) &+ Checksum.delta(natPort, e.clientPort)
        let ports = (UInt32(e.vipPort) << 16 | UInt32(e.clientPort)).bigEndian
        let ethernet = EthernetAddresses(destination: e.clientMAC, source: interfaceMAC)
        return NATReplyRewrite(
            expectedSource: NATReplyRewrite.source(backend, e.backendPort),
            addresses: (UInt64(vip) << 32 | UInt64(client)).bigEndian,
            portsAndDeltas: UInt64(ports) | UInt64(Checksum.storedDelta(ip)) << 32
                | UInt64(Checksum.storedDelta(tcp)) << 48,
            ethernetFirst8: ethernet.first8,
            ethernetLast4AndSlot: UInt64(ethernet.last4) | UInt64(e.backendSlot) << 32)
    }

    /// True when the server of `slot` has a `max_connections` and its open flows, over every
    /// worker and every frontend it serves, have reached it. Two workers placing a server's
    /// last free flow at the same instant may both take it (one flow over per extra worker),
    /// as IPVS's `u-threshold` check may.
    @inline(__always)
    func isFull(_ slot: UInt32) -> Bool {
        let b = backends + Int(slot)
        return reached(b.pointee.limit, start: b.pointee.limitSlotsStart, count: b.pointee.limitSlotsCount)
    }

    /// True when frontend `frontend` has a `max_connections` and its open flows, over every
    /// worker, have reached it (with the same window as `isFull`).
    func frontendIsFull(_ frontend: Int) -> Bool {
        let f = frontends + frontend
        return reached(f.pointee.limit, start: f.pointee.limitSlotsStart, count: f.pointee.limitSlotsCount)
    }

    /// True when `limit` is set and the open flows of the `count` slots listed in `slots` from
    /// `start` (a server's or frontend's limit group) have reached it.
    @inline(__always)
    private func reached(_ limit: UInt32, start: Int32, count: Int32) -> Bool {
        guard limit != 0 else { return false }
        var open: UInt64 = 0
        for i in 0..<Int(count) { open &+= openFlows.open(slots[Int(start) &+ i]) }
        return open >= UInt64(limit)
    }

    /// The candidate of `frontend` with the fewest open flows over every worker per unit of
    /// weight, ties rotating from the frontend's cursor (`leastconn`'s rule); with
    /// `skippingFull`, only among those with room (a full first choice, whatever the
    /// algorithm). `UInt32.max` when none qualifies.
    mutating func leastLoaded(frontend: Int, skippingFull: Bool) -> UInt32 {
        let f = frontends[frontend]
        let count = Int(f.candidatesCount)
        guard count > 0 else { return UInt32.max }
        var best = UInt32.max
        var bestOpen: UInt64 = 0
        var bestWeight: UInt64 = 1
        var position = cursors[frontend] % count
        var bestPosition = position
        for _ in 0..<count {
            let slot = slots[Int(f.candidatesStart) &+ position]
            if !skippingFull || !isFull(slot) {
                let weight = UInt64(max(1, backends[Int(slot)].weight))
                let open = openFlows.open(slot)
                if best == UInt32.max || open &* bestWeight < bestOpen &* weight {
                    best = slot
                    bestOpen = open
                    bestWeight = weight
                    bestPosition = position
                }
            }
            position = position &+ 1 == count ? 0 : position &+ 1
        }
        // wrr's cursor walks its sequence: only leastconn rotates its ties here.
        if f.algorithm == PacketRoutes.Frontend.leastconn && best != UInt32.max { cursors[frontend] = bestPosition &+ 1 }
        return best
    }

    /// The backend slot for a new flow of `frontend`, or `UInt32.max` when none can take it.
    mutating func pick(frontend: Int, clientHi: UInt64, clientLo: UInt64, clientPort: UInt16,
                       vipHi: UInt64, vipLo: UInt64, vipPort: UInt16) -> UInt32 {
        let f = frontends[frontend]
        let count = Int(f.candidatesCount)
        guard count > 0 else { return UInt32.max }
        switch f.algorithm {
        case PacketRoutes.Frontend.maglev, PacketRoutes.Frontend.source:
            let hash = f.algorithm == PacketRoutes.Frontend.maglev
                ? StableHash.flow(clientHi: clientHi, clientLo: clientLo, clientPort: clientPort,
                                  vipHi: vipHi, vipLo: vipLo, vipPort: vipPort)
                : StableHash.source(clientHi: clientHi, clientLo: clientLo)
            if f.maglevSize > 0 {
                return slots[Int(f.maglevStart) &+ Int(hash % UInt64(f.maglevSize))]
            }
            return slots[Int(f.candidatesStart) &+ Int(hash % UInt64(count))]
        case PacketRoutes.Frontend.leastconn:
            return leastLoaded(frontend: frontend, skippingFull: false)
        default:
            let n = Int(f.sequenceCount)
            guard n > 0 else { return UInt32.max }
            var position = cursors[frontend]
            if position >= n { position = 0 }
            cursors[frontend] = position &+ 1
            return slots[Int(f.sequenceStart) &+ position]
        }
    }
}
