#if canImport(Glibc)
import Glibc
#endif
import Balancer
import CLinux
import Logging
import SystemPackage
import Synchronization

/// One proxy event loop: a thread of its own, its own epoll, its own descriptor of each
/// frontend's listening socket (shared by the loops, see `Listener`), its own connections and
/// pipes. Loops share nothing but the snapshot publisher and
/// the (atomic) counters, so nothing on the data path takes a lock.
///
/// ## A connection's life
/// 1. *Accept*: `accept4` until `EAGAIN` (edge-triggered) or until the frontend holds
///    `max_connections`: then its clients wait in the kernel's accept queue, as HAProxy's
///    `maxconn` makes them, and are taken as its connections close. The frontend's scheduler
///    picks a server (with `accept_proxy_protocol`, once the client's PROXY header has come
///    and named the client: see `readProxyHeader`).
/// 2. *Connect*: non-blocking; completion shows as writability without `EPOLLERR`/`EPOLLHUP`
///    (`tcp_poll` reports no writability while `SYN_SENT`, so the event bits alone tell; no
///    `getsockopt` per connection). Refusal, error or `connect_timeout` moves to the next server
///    (`Scheduler.fallback`) until every selectable server was tried; then the client is closed
///    and counted in `noBackend`.
/// 3. *Established*: the PROXY header (if configured) is written, then each event pumps the
///    direction(s) it concerns (`Direction.pump`). A reset or error on either side closes both
///    (the other side gets a reset too). When both directions have passed on their end of
///    stream, both sockets are closed normally.
/// 4. *Timeouts*: a sweep every `sweepInterval` closes connections idle for `idle_timeout` and
///    fails connects past their deadline; while draining, it closes what outlives `drain_timeout`.
///
/// ## Server limits (`max_connections` on a server)
/// A connect first takes one of its server's places (`ServerCounters.reservePlace`); a server
/// whose places are all taken is passed over like one that refused, but without counting a
/// failure. A client whose every candidate was full (or refused) waits, accepted, in its
/// frontend's `WaitQueue` in this loop: after every batch the loop retries the oldest waiting
/// clients while some selectable server has a place; a place freed in another loop wakes this
/// one (`peers`). A client still waiting after `queue_timeout` is closed and counted; one
/// that resets meanwhile leaves the queue. Backup servers standing by do not take the clients
/// of full servers: they stand in for servers that fail, not for busy ones.
///
/// ## Snapshots
/// Between epoll batches the loop compares the publisher's generation with its own; on change it
/// adopts the new snapshot: new connections use it at once, established ones keep their server
/// (re-indexed by `ServerID`) unless that server left the frontend or has `keepsFlows == false`,
/// in which case they are closed. Frontends are matched by name and configured listen address:
/// a new one (or a new address) takes up the listener the service handed over for it, a
/// removed or draining one closes its listener (new clients are refused by the kernel) while
/// its open connections go on until their drain ends.
final class EventLoop {
    /// A loop-local view of one frontend at one listen address. Entries stay (connections
    /// name them by index) until the frontend left the snapshot and its last connection
    /// ended; a new frontend then reuses the entry.
    struct LoopFrontend {
        var key: ListenerKey
        var name: String { key.frontend }
        var listener: Listener?
        /// `listener` is in this loop's epoll, so its wake-ups reach this loop. A loop that
        /// cannot accept (`atLimit`, `acceptStalled`, accepting paused) takes it out, so that
        /// the shared socket's exclusive wake-ups go to loops (or, after a takeover,
        /// processes) that can; it is put back once accepting works again (see `acceptAll`).
        var inWakeUps = false
        /// This loop's connections of this frontend (to know when the entry is free again).
        var connections = 0
        /// `accept` failed (out of descriptors or memory) with clients still queued: retried
        /// on every sweep, since edge-triggered epoll reports a queued client only once.
        var acceptStalled = false
        /// The frontend holds `max_connections` with clients possibly queued: accepting resumes
        /// when one of its connections closes (here at once, in another loop by the next
        /// sweep) and the episode ends when the queue is empty.
        var atLimit = false
        /// Nil once the frontend disappeared from the snapshot (new clients are then closed).
        var route: FrontendRoute?
        var scheduler: Scheduler?
        var counters: FrontendCounters
        var connectTimeout: UInt64
        var idleTimeout: UInt64
        var drainTimeout: UInt64
        var proxyProtocol: ProxyProtocolVersion
        var maxConnections: Int
        var logConnections: Bool
        /// `tcp_keepalive` seconds (0: off), set on the listener (its accepted sockets inherit
        /// it) and on each server socket.
        var tcpKeepalive: Int
        /// `accept_proxy_protocol`: clients open with a PROXY header naming the real client.
        var acceptProxyProtocol: Bool
        /// `proxy_protocol_peers`: the peers that send one (empty: all).
        var proxyProtocolPeers: SourceFilter
        /// `queue_timeout` of the frontend's pool, in nanoseconds.
        var queueTimeout: UInt64
        /// `max_queue` of the frontend's pool (0: no limit).
        var maxQueue = 0
        /// This loop's clients of the frontend waiting for a server place.
        var waiting = WaitQueue()
        /// `allow` / `deny`.
        var sources: SourceFilter
        var vip: Endpoint

        /// The loop's view of `route`, listening on `listener` (nil: not listening here).
        init(_ route: FrontendRoute, listener: Listener?) {
            key = ListenerKey(route.config)
            self.listener = listener
            counters = route.counters
            connectTimeout = 0
            idleTimeout = 0
            drainTimeout = 0
            queueTimeout = 0
            proxyProtocol = route.config.proxyProtocol
            maxConnections = route.config.maxConnections
            logConnections = route.config.logConnections
            tcpKeepalive = route.config.tcpKeepalive
            acceptProxyProtocol = route.config.acceptProxyProtocol
            proxyProtocolPeers = route.config.proxyProtocolPeers
            sources = route.config.sources
            vip = listener?.address ?? route.config.listen
            follow(route)
            if let listener, tcpKeepalive > 0 { SocketCalls.setKeepalive(listener.fd, idle: tcpKeepalive) }
        }

        /// Takes up what `route` (this frontend in a newer snapshot) says; the listener and
        /// this loop's connections stay.
        mutating func follow(_ route: FrontendRoute) {
            self.route = route
            scheduler = Scheduler(route: route)
            counters = route.counters
            connectTimeout = EventLoop.nanoseconds(route.pool.connectTimeout)
            idleTimeout = EventLoop.nanoseconds(route.pool.idleTimeout)
            drainTimeout = EventLoop.nanoseconds(route.pool.drainTimeout)
            queueTimeout = EventLoop.nanoseconds(route.pool.queueTimeout)
            maxQueue = route.pool.maxQueue
            proxyProtocol = route.config.proxyProtocol
            maxConnections = route.config.maxConnections
            logConnections = route.config.logConnections
            if route.config.tcpKeepalive != tcpKeepalive {
                tcpKeepalive = route.config.tcpKeepalive
                // One socket shared by the loops: each sets the same value.
                if let listener { SocketCalls.setKeepalive(listener.fd, idle: tcpKeepalive) }
            }
            acceptProxyProtocol = route.config.acceptProxyProtocol
            proxyProtocolPeers = route.config.proxyProtocolPeers
            sources = route.config.sources
        }
    }

    private enum TokenKind: UInt64 {
        case wake = 0, listener = 1, client = 2, backend = 3
    }

    static let sweepInterval: UInt64 = 100_000_000

    let control: LoopControl
    private let snapshots: SnapshotPublisher<ForwardingSnapshot>
    private var generation: UInt64
    private var logger: Logger
    private let epoll: Epoll
    private var frontends: [LoopFrontend]
    private var slab = ConnectionSlab()
    private var pipes: PipePool
    /// The buffer every direction's first bytes pass through (see `Direction`); holds nothing
    /// between two pumps.
    private let scratch: UnsafeMutableRawBufferPointer
    private let forceCopy: Bool
    /// `ProxyTuning.proxyHeaderTimeout`, in nanoseconds.
    private let proxyHeaderTimeout: UInt64
    /// `TCP_NOTSENT_LOWAT` for backend sockets (see `ProxyTuning.notSentLowWater`).
    private let notSentLowWater: Int
    private var now: UInt64 = 0
    /// Counts `epoll_wait` returns: the batch whose events are being dispatched. Starts at 1
    /// after the first wait, so a connection's `backendReplacedInBatch` of 0 matches none.
    private var batch: UInt64 = 0
    private var lastSweep: UInt64 = 0
    private var drainStarted: UInt64 = 0
    private var isDraining = false
    /// When the next accept pause may be logged (one warning per 10 s; all are counted).
    private var nextAcceptWarning: UInt64 = 0
    /// When the next bad PROXY header may be logged (one warning per 10 s; all are counted).
    private var nextHeaderWarning: UInt64 = 0
    /// Descriptors kept for the moment they run out (see `DescriptorReserve`).
    private var reserve: DescriptorReserve
    /// Out of descriptors: no listener is accepted on, and no pipe made or pooled, until the
    /// reserve is whole again.
    private var acceptPaused = false {
        didSet { pipes.mayGrow = !acceptPaused }
    }
    /// A connection of a frontend at its limit closed in this batch: accept its queued clients.
    private var limitFreed = false
    /// This loop's connections waiting for a server place (`Connection.Phase.queued`).
    private var queuedCount = 0
    /// The frontend `serveWaiting` serves first next time (they take turns).
    private var serveFirst = 0
    /// A connection that used a limited server place ended here, or a peer woke this loop
    /// for one: `serveWaiting` may send a client to a failing server.
    private var placeFreed = false
    /// `wait` ran: a pass of `serveWaiting` sent a client back (see there).
    private var waitedAgain = false
    /// The other loops of the service, woken when this one frees a server place while they
    /// hold waiting clients. Set before the loop's thread starts.
    var peers: [LoopControl] = []

    /// Builds a loop around listeners already bound, one per live route of the snapshot of
    /// `generation` (the service binds them all before starting any thread, so a bind error
    /// stops `run()` before any traffic is taken).
    /// Loop `index` of `loops` (the loops share the process's pipe budget).
    init(index: Int, of loops: Int = 1, listening: [(FrontendRoute, Listener)], generation: UInt64,
         snapshots: SnapshotPublisher<ForwardingSnapshot>, tuning: ProxyTuning, logger: Logger) throws(ProxyError) {
        let epoll: Epoll
        do { epoll = try Epoll() } catch { throw .loopSetupFailed(what: "epoll_create1", errno: error) }
        let wake = cl_eventfd_nonblock()
        guard wake >= 0 else { throw .loopSetupFailed(what: "eventfd", errno: Errno(rawValue: errno)) }
        self.epoll = epoll
        self.control = LoopControl(index: index, wakeFD: wake)
        control.adoptedGeneration.store(generation, ordering: .relaxed)
        self.snapshots = snapshots
        self.generation = generation
        var logger = logger
        logger[metadataKey: "loop"] = "\(index)"
        self.logger = logger
        // Pooled pipes hold descriptors connections may need: at most 1/16 of the limit per
        // loop (two descriptors each), whatever the tuning allows.
        let openFiles = DescriptorReserve.openFilesLimit()
        self.pipes = PipePool(limit: min(tuning.pooledPipesPerLoop, max(16, Int(min(openFiles, 1 << 24) / 16))),
                              pipeSize: tuning.pipeSize, sharedBy: loops)
        reserve = DescriptorReserve(size: DescriptorReserve.size(forLimit: openFiles))
        self.scratch = .allocate(byteCount: max(tuning.scratchSize, 1), alignment: 64)
        self.forceCopy = tuning.forceCopy
        self.proxyHeaderTimeout = Self.nanoseconds(tuning.proxyHeaderTimeout)
        self.notSentLowWater = tuning.notSentLowWater
        self.frontends = []
        do {
            try epoll.add(wake, events: Epoll.readInterest, token: Self.token(.wake, 0, 0))
            for (i, (_, listener)) in listening.enumerated() {
                try epoll.add(listener.fd, events: Epoll.listenerInterest, token: Self.token(.listener, i, 0))
            }
        } catch {
            // The listeners are not the loop's yet: the caller closes them.
            throw .loopSetupFailed(what: "epoll_ctl", errno: error)
        }
        self.frontends = listening.map { route, listener in
            var frontend = LoopFrontend(route, listener: listener)
            frontend.inWakeUps = true
            return frontend
        }
    }

    deinit {
        for f in frontends { if let l = f.listener { SocketCalls.close(l.fd) } }
        scratch.deallocate()
    }

    // MARK: - The loop

    /// Runs until a stop request, or a drain request once every connection has ended.
    func run() {
        now = Self.monotonicNow()
        lastSweep = now
        while true {
            if control.stopRequested.load(ordering: .acquiring) { break }
            if !isDraining && control.drainRequested.load(ordering: .acquiring) { beginDrain() }
            if isDraining && slab.live == 0 { break }
            let waiting = frontends.contains { $0.atLimit || $0.acceptStalled }
            let timeout: Int32 = slab.live > 0 || isDraining || waiting ? 100 : 250
            let ready = epoll.wait(timeoutMilliseconds: timeout)
            batch &+= 1
            now = Self.monotonicNow()
            let published = snapshots.generation
            if published != generation { adopt() }
            for i in 0..<ready {
                let (events, token) = epoll.event(i)
                dispatch(events: events, token: token)
            }
            if limitFreed {
                limitFreed = false
                for f in frontends.indices where frontends[f].atLimit { acceptAll(frontend: f) }
            }
            if now &- lastSweep >= Self.sweepInterval {
                sweep()
                lastSweep = now
            }
            if queuedCount > 0 { serveWaiting(probingFailing: placeFreed) }
            placeFreed = false
            if control.listing.pending.load(ordering: .relaxed) > 0 {
                control.listing.serve { listConnections($0) }
            }
            if control.listenerCopies.pending.load(ordering: .relaxed) > 0 {
                control.listenerCopies.serve { copyListeners() }
            }
            control.openConnections.store(slab.live, ordering: .relaxed)
            control.pipesPooled.store(pipes.count, ordering: .relaxed)
        }
        closeEverything()
        control.listing.close()
        control.listenerCopies.close()
    }

    @inline(__always)
    private func dispatch(events: UInt32, token: UInt64) {
        let kind = TokenKind(rawValue: token & 3)!
        let index = Int(truncatingIfNeeded: (token >> 2) & 0x3FFF_FFFF)
        switch kind {
        case .wake:
            var value: UInt64 = 0
            _ = Glibc.read(control.wakeFD, &value, 8)
            // Acquires the place a peer freed before it woke us (see `LoopControl.wakeForPlace`);
            // a freed place may send one waiting client to a failing server (see `serveWaiting`).
            if control.placeWakePending.exchange(false, ordering: .sequentiallyConsistent) { placeFreed = true }
        case .listener:
            acceptAll(frontend: index, arrival: true)
        case .client, .backend:
            guard index < slab.highWater else { return }
            let conn = slab.slots + index
            guard conn.pointee.phase != .free, conn.pointee.generation == UInt32(truncatingIfNeeded: token >> 32) else { return }
            // Read before adopt() replaced this backend socket: the old one's news.
            if kind == .backend && conn.pointee.backendReplacedInBatch == batch { return }
            if kind == .backend && conn.pointee.phase == .connecting {
                connectProgress(index, events: events)
            } else if conn.pointee.phase == .established {
                service(index, events: events, fromClient: kind == .client)
            } else if conn.pointee.phase == .awaitingHeader {
                if kind == .client { readProxyHeader(index, events: events) }
            } else if kind == .client && events & (CL_EPOLLHUP | CL_EPOLLERR) != 0 {
                // The client reset (or failed) while its connect was in flight or while it
                // waited for a place: neither is worth finishing. (Edge-triggered: this is
                // the only report of it.) A half-close (EPOLLRDHUP alone) is a client that sent
                // its request and waits for the answer.
                close(index, abort: true, end: .clientError(SocketCalls.pendingError(conn.pointee.client) ?? .connectionReset))
            }
        }
    }

    // MARK: - Accept

    /// Accepts frontend `f`'s queued clients. `arrival`: a client is known to wait (the
    /// listener's readiness, or a sweep that found one queued), not a plain retry.
    private func acceptAll(frontend f: Int, arrival: Bool = false) {
        // Full before accepting anything on an arrival: that client waits. Full after
        // accepting some: the limit was reached, nobody is known to wait.
        var arrival = arrival
        guard let listener = frontends[f].listener else { return }
        guard !acceptPaused else {
            frontends[f].acceptStalled = true
            withdrawListener(f)
            return
        }
        var peer = sockaddr_storage()
        let counters = frontends[f].counters
        let limit = Int64(frontends[f].maxConnections)
        // With a limit, a place is taken before each `accept`, so loops accepting at once
        // never exceed it together.
        let reserved = limit > 0
        var acceptedAny = false
        while true {
            if reserved && !counters.reservePlace(limit: limit) {
                frontends[f].atLimit = true
                // An arrival reported to a loop that was busy may have been taken by another
                // loop since: count only a client that still waits.
                if arrival && !counters.inOverLimitEpisode && SocketCalls.hasQueuedClient(listener.fd) {
                    counters.beginOverLimitEpisode()
                }
                withdrawListener(f)
                return
            }
            let accepted: Int32?
            do { accepted = try SocketCalls.accept(listener.fd, peer: &peer) } catch {
                if reserved { counters.connectionClosed() }
                acceptFailed(f, listener: listener, error)
                withdrawListener(f)
                return
            }
            guard let fd = accepted else {
                if reserved { counters.connectionClosed() }
                if acceptedAny || !frontends[f].inWakeUps { requeueListener(f, listener) }
                frontends[f].acceptStalled = false
                frontends[f].atLimit = false
                counters.endOverLimitEpisode()
                return
            }
            control.acceptedTotal.wrappingAdd(1, ordering: .relaxed)
            acceptedAny = true
            arrival = false
            admit(fd, peer: peer, frontend: f, reserved: reserved)
        }
    }

    /// Puts this loop at the back of the shared listening socket's wait queue: after it has
    /// accepted clients, to take part again after `withdrawListener`, or for a listener new
    /// to this loop. `EPOLLEXCLUSIVE`
    /// wakes the first loop of that queue that waits in `epoll_wait`, so without this the
    /// first loop to register would take every client that arrives while it is idle, and the
    /// others only what comes while it is busy. Re-adding puts the registration last; a client
    /// queued meanwhile is reported by the add itself. Two `epoll_ctl` calls per batch of
    /// accepts.
    private func requeueListener(_ f: Int, _ listener: Listener) {
        if frontends[f].inWakeUps { epoll.remove(listener.fd) }
        frontends[f].inWakeUps = false
        do {
            try epoll.add(listener.fd, events: Epoll.listenerInterest, token: Self.token(.listener, f, 0))
            frontends[f].inWakeUps = true
        } catch {
            // The other loops are woken meanwhile; the sweep tries again (see `sweep`).
            logger.warning("epoll_ctl for a listener failed: \(error); this loop takes the frontend's clients at its sweeps until it works again",
                           metadata: ["frontend": "\(frontends[f].name)"])
        }
    }

    /// Takes this loop out of the shared listening socket's wake-ups while it cannot accept:
    /// an exclusive wake-up that reached it would reach no loop that can. The sweep retries
    /// (see `sweep`), and `requeueListener` puts it back.
    private func withdrawListener(_ f: Int) {
        guard frontends[f].inWakeUps, let listener = frontends[f].listener else { return }
        epoll.remove(listener.fd)
        frontends[f].inWakeUps = false
    }

    /// Starts a connection for client `fd`. `reserved`: its place under `max_connections` is
    /// already taken (and counted open).
    private func admit(_ fd: Int32, peer: sockaddr_storage, frontend f: Int, reserved: Bool) {
        let counters = frontends[f].counters
        // TCP_NODELAY and TCP_NOTSENT_LOWAT are inherited from the listener (see `Listener.bind`).
        let client = Endpoint(sockaddr: peer) ?? Endpoint(address: .v4(0), port: 0)
        if frontends[f].acceptProxyProtocol
            && (frontends[f].proxyProtocolPeers.isEmpty || frontends[f].proxyProtocolPeers.admits(client.address)) {
            // The client is the one its header names: nothing is decided before it comes.
            guard let index = open(fd, client: client, frontend: f, reserved: reserved) else { return }
            slab.slots[index].phase = .awaitingHeader
            slab.slots[index].connectDeadline = now &+ proxyHeaderTimeout
            readProxyHeader(index, events: 0)
            return
        }
        /// Closed at once (reset when `abort`) and counted in `counter`: it never had a slot.
        func refuse(_ counter: borrowing Atomic<Int64>, abort: Bool, _ end: ConnectionEnd) {
            if reserved { counters.connectionClosed() }
            counter.wrappingAdd(1, ordering: .relaxed)
            if abort { SocketCalls.closeAbortively(fd) } else { SocketCalls.close(fd) }
            if frontends[f].logConnections { logConnection(client, to: frontends[f].name, end, frontend: f) }
        }
        let placement = placement(of: client, frontend: f)
        switch placement {
        case .denied:
            // Reset as soon as accepted: the kernel completed the handshake.
            refuse(counters.denied, abort: true, .denied)
            return
        case .noServer:
            refuse(counters.noBackend, abort: false, .noServer(failedConnects: 0))
            return
        case .wait, .connect:
            break
        }
        guard let index = open(fd, client: client, frontend: f, reserved: reserved) else { return }
        start(index, placement)
    }

    /// Where a new client of frontend `f` goes.
    private enum Placement {
        /// The frontend's `allow` / `deny` lists refuse it.
        case denied
        /// No server can take it (none selectable, or the frontend left).
        case noServer
        /// Clients of the frontend wait for a server place (in this loop or another): this
        /// one waits behind them rather than take the next place first.
        case wait
        /// To the scheduler's choice among `route`'s servers.
        case connect(Int, FrontendRoute)
    }

    private func placement(of client: Endpoint, frontend f: Int) -> Placement {
        if !frontends[f].sources.isEmpty && !frontends[f].sources.admits(client.address) { return .denied }
        guard let route = frontends[f].route else { return .noServer }
        if frontends[f].counters.queued.load(ordering: .relaxed) > 0 { return .wait }
        let key = FlowKey(client: client, vip: frontends[f].vip)
        guard let choice = frontends[f].scheduler?.pick(for: key, in: route) else { return .noServer }
        return .connect(choice, route)
    }

    /// A slot for client `fd`, connecting (its epoll registration made and counted open); nil
    /// when it could not be registered (then closed).
    private func open(_ fd: Int32, client: Endpoint, frontend f: Int, reserved: Bool) -> Int? {
        let counters = frontends[f].counters
        let index = slab.allocate()
        let conn = slab.slots + index
        conn.pointee.phase = .connecting
        conn.pointee.client = fd
        conn.pointee.frontend = f
        conn.pointee.clientAddress = client
        conn.pointee.frontendCounters = counters
        conn.pointee.lastActive = now
        conn.pointee.openedAt = now
        if reserved { counters.reservedConnectionOpened() } else { counters.connectionOpened() }
        frontends[f].connections += 1
        do {
            try epoll.add(fd, events: Epoll.socketInterest, token: Self.token(.client, index, conn.pointee.generation))
        } catch {
            logger.warning("epoll_ctl for a client failed: \(error)")
            close(index, abort: true, end: .localError(error))
            return nil
        }
        return index
    }

    /// Sends connection `index` (connecting, no server yet) where `placement` says.
    private func start(_ index: Int, _ placement: Placement) {
        let conn = slab.slots + index
        conn.pointee.phase = .connecting
        switch placement {
        case .denied:
            conn.pointee.frontendCounters?.denied.wrappingAdd(1, ordering: .relaxed)
            close(index, abort: true, end: .denied)
        case .noServer:
            conn.pointee.frontendCounters?.noBackend.wrappingAdd(1, ordering: .relaxed)
            close(index, abort: false, end: .noServer(failedConnects: 0))
        case .wait:
            wait(index)
        case .connect(let choice, let route):
            conn.pointee.firstChoice = choice
            connect(index, to: choice, route: route)
        }
    }

    // MARK: - PROXY header (accept_proxy_protocol)

    /// Reads the PROXY header connection `index`'s client opens with (peeked until whole, then
    /// taken, leaving the client's own bytes queued), and sends the client on as the one it
    /// names. A client that sends something else is closed, counted in `bad_proxy_header`
    /// and logged (at most once per 10 s per loop); one that closes first (a balancer's TCP
    /// health check) is just closed.
    private func readProxyHeader(_ index: Int, events: UInt32) {
        let conn = slab.slots + index
        let fd = conn.pointee.client
        let limit = min(scratch.count, ProxyHeaderReader.maximumLength)
        let peeked: Int?
        do { peeked = try SocketCalls.peek(fd, scratch.baseAddress!, limit) } catch {
            close(index, abort: true, end: .clientError(error))
            return
        }
        guard let n = peeked else { return }  // nothing yet: its bytes' arrival reports again
        guard n > 0 else {
            close(index, abort: false, end: .closedBeforeProxyHeader)
            return
        }
        switch ProxyHeaderReader.read(UnsafeRawBufferPointer(rebasing: scratch[0..<n])) {
        case .incomplete:
            if n == limit {
                badProxyHeader(index, "no whole header in its first \(limit) bytes")
            } else if events & (CL_EPOLLRDHUP | CL_EPOLLHUP | CL_EPOLLERR) != 0 {
                // Nothing more will come (edge-triggered: this is the only report of it).
                badProxyHeader(index, "a header cut short by the client's close")
            }
        case .invalid(let reason):
            badProxyHeader(index, reason)
        case .header(let length, let source, let destination):
            let taken: Int?
            do { taken = try SocketCalls.read(fd, scratch.baseAddress!, length) } catch {
                close(index, abort: true, end: .clientError(error))
                return
            }
            // The bytes were peeked: all of them are there to take.
            guard taken == length else {
                badProxyHeader(index, "its \(length) bytes could not be taken (\(taken ?? 0) were)")
                return
            }
            if let source { conn.pointee.clientAddress = source }
            conn.pointee.headerDestination = destination
            start(index, placement(of: conn.pointee.clientAddress, frontend: conn.pointee.frontend))
        }
    }

    /// Closes a client whose PROXY header did not read (or did not come), counting and
    /// logging it.
    private func badProxyHeader(_ index: Int, _ reason: String) {
        let conn = slab.slots + index
        let f = conn.pointee.frontend
        conn.pointee.frontendCounters?.badProxyHeader.wrappingAdd(1, ordering: .relaxed)
        if now >= nextHeaderWarning && !frontends[f].logConnections {
            nextHeaderWarning = now &+ 10_000_000_000
            logger.warning("a client (\(conn.pointee.clientAddress)) sent \(reason): closed (accept_proxy_protocol: every connection must open with a PROXY header from the balancer in front; further ones are counted in bad_proxy_header, logged at most every 10 s)",
                           metadata: ["frontend": "\(frontends[f].name)"])
        }
        close(index, abort: true, end: .badProxyHeader(reason))
    }

    /// `accept` failed: the client stays queued (for `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`),
    /// so the listener is retried on every sweep until its queue is empty.
    private func acceptFailed(_ f: Int, listener: Listener, _ error: Errno) {
        if error == .tooManyOpenFiles { pauseForDescriptors() }
        // A retry that fails again is the same pause.
        guard !frontends[f].acceptStalled else { return }
        frontends[f].acceptStalled = true
        notePause(error, at: listener.address, frontend: frontends[f].name)
    }

    /// Counts a pause in accepting (one per episode) and logs it at most every 10 s, with what
    /// to do.
    private func notePause(_ error: Errno, at address: Endpoint, frontend: String) {
        control.acceptPauses.wrappingAdd(1, ordering: .relaxed)
        guard now >= nextAcceptWarning else { return }
        nextAcceptWarning = now &+ 10_000_000_000
        let hint: String
        switch error {
        case .tooManyOpenFiles:
            hint = "; the open files limit is reached: raise it (systemd LimitNOFILE=) or lower max_connections"
        case .tooManyOpenFilesInSystem:
            hint = "; the system-wide open files limit (fs.file-max) is reached"
        default:
            hint = ""
        }
        let text = "accepting on \(address) paused: \(error)\(hint); clients wait in the queue and are accepted as "
            + "descriptors free up (pauses are counted in accept_pauses; this is logged at most every 10 s)"
        logger.warning("\(text)", metadata: ["frontend": "\(frontend)"])
    }

    // MARK: - Connect and retry

    /// Starts a connect to `route.servers[server]`, moving on to the next candidate on an
    /// immediate failure.
    private func connect(_ index: Int, to server: Int, route: FrontendRoute) {
        let conn = slab.slots + index
        var target = server
        while true {
            let s = route.servers[target]
            if s.maxConnections > 0 {
                guard s.counters.reservePlace(limit: Int64(s.maxConnections)) else {
                    guard let next = nextCandidate(index, route: route, passingOverFull: true) else {
                        outOfCandidates(index)
                        return
                    }
                    target = next
                    continue
                }
                conn.pointee.placeLimited = true
            } else {
                // Counted without a limit too, so that a limit a reload sets counts what the
                // server already holds.
                s.counters.takePlace()
                conn.pointee.placeLimited = false
            }
            conn.pointee.holdsPlace = true
            var fd: Int32 = -1
            do {
                fd = try backendSocket(for: s.address, frontend: conn.pointee.frontend)
                SocketCalls.setNoDelay(fd)
                SocketCalls.setNotSentLowWater(fd, bytes: notSentLowWater)
                let keepalive = frontends[conn.pointee.frontend].tcpKeepalive
                if keepalive > 0 { SocketCalls.setKeepalive(fd, idle: keepalive) }
                conn.pointee.backend = fd
                conn.pointee.server = target
                conn.pointee.serverAddress = s.address
                conn.pointee.serverCounters = s.counters
                conn.pointee.connectDeadline = now &+ frontends[conn.pointee.frontend].connectTimeout
                try epoll.add(fd, events: Epoll.socketInterest, token: Self.token(.backend, index, conn.pointee.generation))
                if try SocketCalls.connect(fd, to: s.address) { established(index) }
                return
            } catch {
                if fd >= 0 { SocketCalls.close(fd) }
                conn.pointee.backend = -1
                conn.pointee.serverAddress = s.address
                conn.pointee.lastConnectError = error.rawValue
                // Never used: nobody is woken for it.
                givePlaceBack(conn, to: s.counters, freeing: false)
                // Only what says the server cannot be reached counts toward error_limit: this
                // host running out of descriptors, memory or ports says nothing about it.
                if Self.describesServer(error) {
                    s.counters.connectFailed()
                } else {
                    s.counters.connectFailures.wrappingAdd(1, ordering: .relaxed)
                }
                guard let next = nextCandidate(index, route: route) else {
                    outOfCandidates(index)
                    return
                }
                target = next
            }
        }
    }

    /// Gives back the server place `conn` holds (on `counters`, its server's). `freeing`: a
    /// connection that used a limited place ended, so waiting clients here and in the other
    /// loops are worth a retry (a connect that failed frees nothing worth one: its server is
    /// failing, or this host is short of something).
    @inline(__always)
    private func givePlaceBack(_ conn: UnsafeMutablePointer<Connection>, to counters: ServerCounters?, freeing: Bool) {
        guard conn.pointee.holdsPlace else { return }
        conn.pointee.holdsPlace = false
        counters?.releasePlace()
        guard freeing && conn.pointee.placeLimited else { return }
        placeFreed = true
        wakePeersWaiting()
    }

    /// Wakes the other loops holding waiting clients. Sequentially consistent with their
    /// stores of `queuedClients` (`wait`, `serveWaiting`): either this sees their waiting
    /// clients, or their next look at the places sees what was freed before this call.
    private func wakePeersWaiting() {
        for peer in peers where peer.queuedClients.load(ordering: .sequentiallyConsistent) > 0 { peer.wakeForPlace() }
    }

    /// A socket for a backend connection. Out of descriptors, the reserve is given back for
    /// it and accepting pauses until the reserve can be taken again.
    private func backendSocket(for address: Endpoint, frontend f: Int) throws(Errno) -> Int32 {
        do { return try SocketCalls.tcpSocket(for: address.address) } catch {
            guard error == .tooManyOpenFiles else { throw error }
            if !acceptPaused { notePause(error, at: frontends[f].listener?.address ?? frontends[f].vip, frontend: frontends[f].name) }
            guard pauseForDescriptors() else { throw error }
            return try SocketCalls.tcpSocket(for: address.address)
        }
    }

    /// The process is out of descriptors: what this loop holds in reserve and in pooled pipes
    /// goes back to it (the backend socket being made, the stats server, health checks), and
    /// accepting waits until the reserve is whole again. Returns whether a reserve was held.
    @discardableResult
    private func pauseForDescriptors() -> Bool {
        let held = reserve.release()
        pipes.drain()
        acceptPaused = true
        // Wake-ups go to the loops that can accept meanwhile (see `withdrawListener`).
        for f in frontends.indices { withdrawListener(f) }
        return held
    }

    /// The next server to try after one more failure (or, `passingOverFull`, one more server
    /// at its `max_connections`), or nil when all were tried. Once a server was full, the
    /// backups standing by are not tried: its clients wait for it instead.
    private func nextCandidate(_ index: Int, route: FrontendRoute, passingOverFull: Bool = false) -> Int? {
        let conn = slab.slots + index
        if passingOverFull { conn.pointee.fullSkips += 1 } else { conn.pointee.failures += 1 }
        let attempt = conn.pointee.failures + conn.pointee.fullSkips
        guard attempt < max(route.servers.count, 1),
              let next = Scheduler.fallback(after: conn.pointee.firstChoice, attempt: attempt, in: route) else { return nil }
        if conn.pointee.fullSkips > 0 && route.servers[next].state == .standby { return nil }
        return next
    }

    /// Every candidate was tried: the client waits for a place if a server was full, and is
    /// closed as having no server otherwise.
    private func outOfCandidates(_ index: Int) {
        if slab.slots[index].fullSkips > 0 { wait(index) } else { noServer(index) }
    }

    /// A connecting backend socket reported readiness: `EPOLLERR`/`EPOLLHUP` mean the connect
    /// failed, writability means it completed. Anything else is the stale readiness of the
    /// registration made before `connect` and is ignored.
    private func connectProgress(_ index: Int, events: UInt32) {
        if events & (CL_EPOLLERR | CL_EPOLLHUP) != 0 {
            connectFailed(index)
        } else if events & CL_EPOLLOUT != 0 {
            established(index)
        }
    }

    /// Errors of `connect(2)` that are about the server (or the way to it), not this host.
    static func describesServer(_ e: Errno) -> Bool {
        switch e {
        case .connectionRefused, .noRouteToHost, .networkUnreachable, .timedOut, .hostIsDown, .networkDown, .connectionReset:
            return true
        default:
            return false
        }
    }

    /// The attempt in flight failed (refused, unreachable, timed out, or its server left).
    private func connectFailed(_ index: Int, timedOut: Bool = false) {
        let conn = slab.slots + index
        conn.pointee.lastConnectError = timedOut ? -1 : (SocketCalls.pendingError(conn.pointee.backend)?.rawValue ?? 0)
        conn.pointee.serverCounters?.connectFailed()
        SocketCalls.close(conn.pointee.backend)
        conn.pointee.backend = -1
        givePlaceBack(conn, to: conn.pointee.serverCounters, freeing: false)
        conn.pointee.serverCounters = nil
        guard let route = frontends[conn.pointee.frontend].route else {
            noServer(index)
            return
        }
        guard let next = nextCandidate(index, route: route) else {
            outOfCandidates(index)
            return
        }
        connect(index, to: next, route: route)
    }

    /// No server could take the client: close it at once and count it.
    private func noServer(_ index: Int) {
        let conn = slab.slots + index
        conn.pointee.frontendCounters?.noBackend.wrappingAdd(1, ordering: .relaxed)
        givePlaceBack(conn, to: conn.pointee.serverCounters, freeing: false)
        conn.pointee.serverCounters = nil
        let code = conn.pointee.lastConnectError
        let last = conn.pointee.failures > 0 && code != 0
            ? ConnectFailure(server: conn.pointee.serverAddress, error: code > 0 ? Errno(rawValue: code) : nil) : nil
        close(index, abort: false, end: .noServer(failedConnects: conn.pointee.failures, last: last))
    }

    // MARK: - Waiting for a server place

    /// Every candidate server of the client in slot `index` is at its `max_connections`: it
    /// waits at the back of its frontend's queue (its `queue_timeout` counting from its first
    /// wait), or is closed at once when `max_queue` clients of the frontend wait already. A
    /// client that waits again (it was tried and found every place taken once more) goes to
    /// the back without that check: it kept its place in `queued` while it was tried, so the
    /// count never passes `max_queue`.
    private func wait(_ index: Int) {
        let conn = slab.slots + index
        let f = conn.pointee.frontend
        let counters = conn.pointee.frontendCounters
        if conn.pointee.queuedAt == 0 {
            guard counters?.enterQueue(limit: frontends[f].maxQueue) ?? true else {
                counters?.queueFull.wrappingAdd(1, ordering: .relaxed)
                close(index, abort: false, end: .queueFull)
                return
            }
        }
        conn.pointee.phase = .queued
        conn.pointee.server = -1
        conn.pointee.serverCounters = nil
        if conn.pointee.queuedAt == 0 { conn.pointee.queuedAt = now }
        conn.pointee.waitStartedAt = now
        waitedAgain = true
        frontends[f].waiting.append(index: index, generation: conn.pointee.generation)
        queuedCount += 1
        control.queuedClients.store(queuedCount, ordering: .sequentiallyConsistent)
    }

    /// The client in `conn` leaves this loop's queue (it is tried, or closed); it keeps its
    /// place in the frontend's `queued` until `releaseQueueSlot`.
    private func leaveQueue(_ conn: UnsafeMutablePointer<Connection>) {
        queuedCount -= 1
        control.queuedClients.store(queuedCount, ordering: .sequentiallyConsistent)
    }

    /// The client in `conn`, not yet established, waits no more: it is established now, or
    /// closed. It held a place in `queued` since its first wait (`queuedAt`).
    @inline(__always)
    private func releaseQueueSlot(_ conn: UnsafeMutablePointer<Connection>) {
        guard conn.pointee.queuedAt != 0 else { return }
        conn.pointee.frontendCounters?.queued.wrappingSubtract(1, ordering: .relaxed)
    }

    /// Retries the oldest waiting clients of each frontend while one of its selectable servers
    /// has a place (or none is selectable: they are then closed as having no server).
    ///
    /// A server whose last connect failed does not count as having a place: its waiting
    /// clients would only fail on it again. With `probingFailing` (a place was freed, or the
    /// sweep runs) one client per frontend may try it anyway, so a server that recovers is
    /// found. Frontends take turns being served first. A client that finds every place
    /// taken again (another loop was faster) goes to the back; a pass that sent one back is
    /// followed by another (at most three), since a place freed elsewhere meanwhile may have
    /// woken nobody.
    private func serveWaiting(probingFailing: Bool) {
        let count = frontends.count
        guard count > 0 else { return }
        serveFirst = (serveFirst + 1) % count
        var passes = 0
        repeat {
            passes += 1
            waitedAgain = false
            // Before looking at the places (see `wakePeersWaiting`).
            control.queuedClients.store(queuedCount, ordering: .sequentiallyConsistent)
            for k in 0..<count {
                let f = (serveFirst + k) % count
                guard !frontends[f].waiting.isEmpty, let route = frontends[f].route else { continue }
                var budget = frontends[f].waiting.count
                var probed = !probingFailing
                while budget > 0, let entry = frontends[f].waiting.first {
                    let index = entry.index
                    let conn = slab.slots + index
                    guard conn.pointee.phase == .queued, conn.pointee.generation == entry.generation else {
                        frontends[f].waiting.removeFirst()
                        continue
                    }
                    budget -= 1
                    if !Self.mayTakeWaiting(route, countingFailing: false) {
                        guard !probed, Self.mayTakeWaiting(route, countingFailing: true) else { break }
                        probed = true
                    }
                    frontends[f].waiting.removeFirst()
                    leaveQueue(conn)
                    conn.pointee.waitedNanoseconds &+= now &- conn.pointee.waitStartedAt
                    conn.pointee.phase = .connecting
                    conn.pointee.failures = 0
                    conn.pointee.fullSkips = 0
                    let key = FlowKey(client: conn.pointee.clientAddress, vip: frontends[f].vip)
                    guard let choice = frontends[f].scheduler?.pick(for: key, in: route) else {
                        noServer(index)
                        continue
                    }
                    conn.pointee.firstChoice = choice
                    connect(index, to: choice, route: route)
                }
            }
        } while waitedAgain && passes < 3
        control.queuedClients.store(queuedCount, ordering: .sequentiallyConsistent)
    }

    /// Whether a waiting client of `route` should be retried now: a selectable server has a
    /// free place (and, unless `countingFailing`, its last connect did not fail), or none is
    /// selectable.
    private static func mayTakeWaiting(_ route: FrontendRoute, countingFailing: Bool) -> Bool {
        for i in route.selectable {
            let s = route.servers[i]
            if s.counters.hasPlace(limit: Int64(s.maxConnections))
                && (countingFailing || s.counters.connectFailuresInARow.load(ordering: .relaxed) == 0) { return true }
        }
        return route.selectable.isEmpty
    }

    /// Closes a client that waited `queue_timeout` for a place.
    private func queueTimedOut(_ index: Int) {
        slab.slots[index].frontendCounters?.queueTimeouts.wrappingAdd(1, ordering: .relaxed)
        close(index, abort: false, end: .queueTimeout)
    }

    private func established(_ index: Int) {
        let conn = slab.slots + index
        let f = conn.pointee.frontend
        releaseQueueSlot(conn)
        conn.pointee.phase = .established
        conn.pointee.lastActive = now
        if conn.pointee.placeLimited, conn.pointee.serverCounters?.connectFailuresInARow.load(ordering: .relaxed) ?? 0 > 0 {
            // Its server counted as failing (see `serveWaiting`) and is not any more: the
            // clients waiting in other loops may use its places now.
            conn.pointee.serverCounters?.connectionOpened()
            wakePeersWaiting()
        } else {
            conn.pointee.serverCounters?.connectionOpened()
        }
        if frontends[f].proxyProtocol != .none {
            // Behind a balancer, the address its client connected to (HAProxy's accept-proxy
            // with send-proxy does the same).
            let destination = conn.pointee.headerDestination ?? SocketCalls.localEndpoint(conn.pointee.client) ?? frontends[f].vip
            let header = ProxyProtocolHeader.encode(frontends[f].proxyProtocol, source: conn.pointee.clientAddress,
                                                    destination: destination)
            // A fresh connection's send buffer is empty, so the header (≤ 108 bytes) goes in whole.
            let written = header.withUnsafeBytes { try? SocketCalls.write(conn.pointee.backend, $0.baseAddress!, $0.count) }
            guard written == header.count else {
                close(index, abort: true, end: .proxyHeaderNotSent)
                return
            }
        }
        if forceCopy {
            conn.pointee.toServer.switchToCopy()
            conn.pointee.toClient.switchToCopy()
            control.copyFallbacks.wrappingAdd(2, ordering: .relaxed)
        }
        // Pipes are attached by the directions themselves, once they carry more than a few bytes.
        service(index, events: CL_EPOLLIN | CL_EPOLLOUT, fromClient: true, both: true)
    }

    /// Counts what a pump did to the loop's pipes.
    @inline(__always)
    private func account(_ outcome: Direction.Outcome) {
        if outcome.tookPipe { control.pipesInUse.wrappingAdd(1, ordering: .relaxed) }
        if outcome.fellBackToCopy { control.copyFallbacks.wrappingAdd(1, ordering: .relaxed) }
    }

    // MARK: - Data

    /// Pumps the direction(s) an event on one socket concerns, then closes the connection when
    /// it failed or both directions are finished.
    ///
    /// Writability alone pumps a direction only when it holds bytes: an empty direction waits
    /// on its source, whose own edge resumes it. (With edge-triggered epoll every new byte on a
    /// socket reports `EPOLLOUT` again, so without this each event would also try the other
    /// direction's source and get `EAGAIN`.) `both` pumps both directions regardless: the
    /// first pump after connecting, when either side may already have sent.
    @inline(__always)
    private func service(_ index: Int, events: UInt32, fromClient: Bool, both: Bool = false) {
        let conn = slab.slots + index
        let readable = events & (CL_EPOLLIN | CL_EPOLLRDHUP | CL_EPOLLHUP | CL_EPOLLERR) != 0
        let failing = events & (CL_EPOLLHUP | CL_EPOLLERR) != 0
        let writable = events & CL_EPOLLOUT != 0
        let pumpToServer = both || (fromClient ? readable : failing || (writable && conn.pointee.toServer.buffered > 0))
        let pumpToClient = both || (fromClient ? failing || (writable && conn.pointee.toClient.buffered > 0) : readable)
        var failure: ConnectionEnd?
        if pumpToServer {
            let outcome = conn.pointee.toServer.pump(from: conn.pointee.client, to: conn.pointee.backend,
                                                     scratch: scratch, pipes: &pipes,
                                                     closingAfter: conn.pointee.toClient.finished)
            account(outcome)
            if outcome.moved > 0 {
                conn.pointee.lastActive = now
                conn.pointee.bytesTx &+= Int64(outcome.moved)
                conn.pointee.frontendCounters?.addTx(outcome.moved)
                conn.pointee.serverCounters?.addTx(outcome.moved)
            }
            if let e = outcome.error { failure = outcome.errorAtSource ? .clientError(e) : .serverError(e) }
        }
        if pumpToClient && failure == nil {
            let outcome = conn.pointee.toClient.pump(from: conn.pointee.backend, to: conn.pointee.client,
                                                     scratch: scratch, pipes: &pipes,
                                                     closingAfter: conn.pointee.toServer.finished)
            account(outcome)
            if outcome.moved > 0 {
                conn.pointee.lastActive = now
                conn.pointee.bytesRx &+= Int64(outcome.moved)
                conn.pointee.frontendCounters?.addRx(outcome.moved)
                conn.pointee.serverCounters?.addRx(outcome.moved)
            }
            if let e = outcome.error { failure = outcome.errorAtSource ? .serverError(e) : .clientError(e) }
        }
        if failure == nil && events & CL_EPOLLERR != 0,
           let e = SocketCalls.pendingError(fromClient ? conn.pointee.client : conn.pointee.backend) {
            failure = fromClient ? .clientError(e) : .serverError(e)
        }
        if let failure {
            close(index, abort: true, end: failure)
        } else if conn.pointee.toServer.finished && conn.pointee.toClient.finished {
            close(index, abort: false, end: .closed)
        }
    }

    // MARK: - Closing

    /// Closes both sockets (with a reset when `abort`), returns the pipes, updates the counters
    /// and frees the slot; logs the connection's end when its frontend has `log_connections`.
    /// `server`: the connection's server when the frontend's route no longer has it (a reload
    /// that took it away), for the log.
    private func close(_ index: Int, abort: Bool, end: ConnectionEnd, server: ServerID? = nil) {
        let conn = slab.slots + index
        if frontends[conn.pointee.frontend].logConnections { logEnd(conn, end, server: server) }
        closeSocket(conn.pointee.client, abort: abort)
        closeSocket(conn.pointee.backend, abort: abort)
        if conn.pointee.toServer.pipe.isOpen { control.pipesInUse.wrappingSubtract(1, ordering: .relaxed) }
        if conn.pointee.toClient.pipe.isOpen { control.pipesInUse.wrappingSubtract(1, ordering: .relaxed) }
        _ = conn.pointee.toServer.release(to: &pipes)
        _ = conn.pointee.toClient.release(to: &pipes)
        if conn.pointee.phase == .established { conn.pointee.serverCounters?.connectionClosed() }
        if conn.pointee.phase == .queued { leaveQueue(conn) }
        if conn.pointee.phase != .established { releaseQueueSlot(conn) }
        givePlaceBack(conn, to: conn.pointee.serverCounters, freeing: conn.pointee.phase == .established)
        conn.pointee.frontendCounters?.connectionClosed()
        frontends[conn.pointee.frontend].connections -= 1
        if frontends[conn.pointee.frontend].atLimit { limitFreed = true }
        slab.free(index)
    }

    /// One line per connection (`log_connections`): who, where to, through which of this host's
    /// ports (what the server's own log names as its client), how long, the bytes each way,
    /// and how it ended.
    private func logEnd(_ conn: UnsafeMutablePointer<Connection>, _ end: ConnectionEnd, server: ServerID?) {
        let f = conn.pointee.frontend
        var target = frontends[f].name
        // A backend socket: established, or a connect in flight (its address, its server).
        if conn.pointee.backend >= 0 {
            let servers = frontends[f].route?.servers ?? []
            let s = conn.pointee.server
            let id = server ?? (s >= 0 && s < servers.count ? servers[s].id : nil)
            let local = SocketCalls.localEndpoint(conn.pointee.backend).map { " via \($0)" } ?? ""
            target = (id.map { "\($0) " } ?? "") + "\(conn.pointee.serverAddress)\(local)"
        }
        var note = conn.pointee.failures > 0 && conn.pointee.phase != .connecting
            ? ", after \(conn.pointee.failures) failed connect(s)" : ""
        if conn.pointee.waitedNanoseconds > 0 && conn.pointee.phase == .established {
            // Served after waiting for a place (the HAProxy log's Tw).
            note += ", waited \(Self.seconds(conn.pointee.waitedNanoseconds)) s for a place"
        }
        logConnection(conn.pointee.clientAddress, to: target, end, frontend: f,
                      nanoseconds: now > conn.pointee.openedAt ? now - conn.pointee.openedAt : 0,
                      bytesTx: conn.pointee.bytesTx, bytesRx: conn.pointee.bytesRx, note: note)
    }

    /// The `log_connections` line, for a connection or a client refused at accept (no time,
    /// no bytes).
    private func logConnection(_ client: Endpoint, to target: String, _ end: ConnectionEnd, frontend f: Int,
                               nanoseconds: UInt64 = 0, bytesTx: Int64 = 0, bytesRx: Int64 = 0, note: String = "") {
        logger.info("connection \(client) -> \(target): \(end); \(Self.seconds(nanoseconds)) s, \(bytesTx) bytes up, \(bytesRx) down\(note)",
                    metadata: ["frontend": "\(frontends[f].name)"])
    }

    /// Nanoseconds as seconds with three decimals, for the log.
    private static func seconds(_ nanoseconds: UInt64) -> String {
        let millis = (nanoseconds + 500_000) / 1_000_000
        let fraction = String(millis % 1000)
        return "\(millis / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    private func closeSocket(_ fd: Int32, abort: Bool) {
        guard fd >= 0 else { return }
        if abort { SocketCalls.closeAbortively(fd) } else { SocketCalls.close(fd) }
    }

    /// Closes connections idle too long, fails connects past their deadline, and while
    /// draining closes what outlived its pool's drain timeout.
    private func sweep() {
        if acceptPaused, reserve.retake() {
            acceptPaused = false
            logger.info("descriptors free again: accepting resumed")
        }
        // Every listener is looked at, not only those this loop saw stall or fill: an
        // exclusive wake-up may have gone to a loop (or, around a takeover, a process) that
        // could not accept and has since withdrawn or closed its descriptor, leaving a client
        // queued that no loop was told of. One `poll` per listener; `accept` only where a
        // client waits, or to rejoin the wake-ups once this loop can accept again.
        if !acceptPaused {
            for f in frontends.indices {
                guard let listener = frontends[f].listener else { continue }
                let queued = SocketCalls.hasQueuedClient(listener.fd)
                if frontends[f].atLimit && !queued { frontends[f].counters.endOverLimitEpisode() } // nobody waits
                guard queued || !frontends[f].inWakeUps else { continue }
                // At the limit this loop is out of the wake-ups: a client waiting is seen here.
                acceptAll(frontend: f, arrival: queued)
            }
        }
        let drainElapsed = now &- drainStarted
        var cut = 0
        for index in 0..<slab.highWater {
            let conn = slab.slots + index
            let f = conn.pointee.frontend
            switch conn.pointee.phase {
            case .free:
                continue
            case .awaitingHeader:
                if isDraining && drainElapsed >= frontends[f].drainTimeout {
                    close(index, abort: true, end: .drainTimeout)
                    cut += 1
                } else if now >= conn.pointee.connectDeadline {
                    badProxyHeader(index, "no PROXY header within \(Self.seconds(proxyHeaderTimeout)) s")
                }
            case .connecting:
                if isDraining && drainElapsed >= frontends[f].drainTimeout {
                    close(index, abort: true, end: .drainTimeout)
                    cut += 1
                } else if now >= conn.pointee.connectDeadline {
                    connectFailed(index, timedOut: true)
                }
            case .established:
                if isDraining && drainElapsed >= frontends[f].drainTimeout {
                    close(index, abort: true, end: .drainTimeout)
                    cut += 1
                } else if now &- conn.pointee.lastActive >= frontends[f].idleTimeout {
                    close(index, abort: false, end: .idleTimeout)
                }
            case .queued:
                if isDraining && drainElapsed >= frontends[f].drainTimeout {
                    close(index, abort: true, end: .drainTimeout)
                    cut += 1
                } else if now &- conn.pointee.queuedAt >= frontends[f].queueTimeout {
                    queueTimedOut(index)
                }
            }
        }
        if cut > 0 { logger.notice("drain_timeout passed: closed \(cut) connection(s) still open, \(slab.live) left") }
        if queuedCount > 0 { serveWaiting(probingFailing: true) }
    }

    private func beginDrain() {
        isDraining = true
        drainStarted = now
        control.draining.store(true, ordering: .relaxed)
        // Clients already queued have completed their handshake: closing the last descriptor
        // of a listening socket would reset them. They are taken first and served like every
        // open connection. (The socket lives on while another loop, or after a takeover's
        // handover the new convey, holds it, and those accept what comes later; clients whose
        // handshake completes between the last loop's accept and its close are reset, or
        // handed to another listener of the port with net.ipv4.tcp_migrate_req = 1.)
        for f in frontends.indices where frontends[f].listener != nil && frontends[f].route != nil {
            acceptAll(frontend: f)
        }
        for f in frontends.indices { closeListener(f) }
        control.refuseHandedListeners()
        if slab.live > 0 {
            logger.notice("draining: accepting no more; \(slab.live) open connection(s) go on until they end or drain_timeout passes")
        }
    }

    private func closeEverything() {
        for index in 0..<slab.highWater where slab.slots[index].phase != .free {
            close(index, abort: true, end: .stopped)
        }
        for f in frontends.indices { closeListener(f) }
        control.refuseHandedListeners()
        _ = reserve.release()
        pipes.drain()
        control.openConnections.store(0, ordering: .relaxed)
        control.pipesPooled.store(0, ordering: .relaxed)
    }

    // MARK: - Handover

    /// Copies (`dup`) of the listeners of the frontends this loop serves, for a takeover's
    /// handover (see `ListenerHandover`); none once draining (the listeners are closed) or
    /// for a configured port 0 (the new convey would bind another port anyway). nil when one
    /// cannot be copied: a partial set would leave a socket that closes with this convey.
    private func copyListeners() -> [ListenerCopy]? {
        guard !isDraining else { return [] }
        var copies: [ListenerCopy] = []
        for entry in frontends {
            guard let listener = entry.listener, let route = entry.route, route.config.listen.port != 0 else { continue }
            let fd: Int32
            do { fd = try SocketCalls.duplicate(listener.fd) } catch {
                logger.warning("takeover: cannot copy the listener of frontend \(entry.name): \(error)")
                for copy in copies { SocketCalls.close(copy.fd) }
                return nil
            }
            copies.append(ListenerCopy(address: route.config.listen, fd: fd))
        }
        return copies
    }

    // MARK: - Listing

    /// Copies the connections matching `filter` for `/flows` (see `ConnectionListing`): one
    /// pass over the slots, a few nanoseconds per connection that does not match, plus a
    /// `getsockname` per row copied (per connection past the other filters, with `local`).
    private func listConnections(_ filter: ConnectionFilter) -> ConnectionListingResult {
        // Per frontend entry: whether it is listed, and the index of the filter's server in
        // its route (-1: the server is not there, so none of its connections match).
        let listed = frontends.map { filter.frontend == nil || $0.name == filter.frontend }
        let serverIndex: [Int] = frontends.map { entry in
            guard let id = filter.server else { return -1 }
            return entry.route?.servers.firstIndex { $0.id == id } ?? -1
        }
        let drainElapsed: UInt64? = isDraining ? now &- drainStarted : nil
        var rows: [ConnectionRow] = []
        var matched = 0
        for index in 0..<slab.highWater {
            let conn = slab.slots + index
            guard conn.pointee.phase != .free else { continue }
            let f = conn.pointee.frontend
            guard listed[f] else { continue }
            if let client = filter.client, conn.pointee.clientAddress.address != client { continue }
            if filter.server != nil, serverIndex[f] < 0 || conn.pointee.server != serverIndex[f] { continue }
            // Its local end (a `getsockname`): for the `local` filter, or a row to be copied.
            let local = (filter.local != nil || rows.count < filter.limit) && conn.pointee.backend >= 0
                ? SocketCalls.localEndpoint(conn.pointee.backend) : nil
            if let wanted = filter.local, !(local.map(wanted.matches) ?? false) { continue }
            matched += 1
            guard rows.count < filter.limit else { continue }
            let servers = frontends[f].route?.servers ?? []
            let s = conn.pointee.server
            let idle = now > conn.pointee.lastActive ? now - conn.pointee.lastActive : 0
            var expiresIn: UInt64
            let state: ConnectionRow.State
            if conn.pointee.phase == .awaitingHeader {
                state = .awaitingHeader
                expiresIn = conn.pointee.connectDeadline > now ? conn.pointee.connectDeadline - now : 0
            } else if conn.pointee.phase == .queued {
                state = .queued
                let deadline = conn.pointee.queuedAt &+ frontends[f].queueTimeout
                expiresIn = deadline > now ? deadline - now : 0
            } else if conn.pointee.phase == .connecting {
                state = .connecting
                expiresIn = conn.pointee.connectDeadline > now ? conn.pointee.connectDeadline - now : 0
            } else {
                state = conn.pointee.toServer.sourceEnded ? .clientClosed : conn.pointee.toClient.sourceEnded ? .serverClosed : .established
                let timeout = frontends[f].idleTimeout
                expiresIn = timeout > idle ? timeout - idle : 0
            }
            if let elapsed = drainElapsed {
                let timeout = frontends[f].drainTimeout
                expiresIn = min(expiresIn, timeout > elapsed ? timeout - elapsed : 0)
            }
            rows.append(ConnectionRow(
                frontend: frontends[f].name, client: conn.pointee.clientAddress,
                server: s >= 0 && s < servers.count ? servers[s].id : nil,
                backend: conn.pointee.phase == .queued || conn.pointee.phase == .awaitingHeader ? nil : conn.pointee.serverAddress,
                local: local,
                state: state, ageNanoseconds: now > conn.pointee.openedAt ? now - conn.pointee.openedAt : 0,
                idleNanoseconds: idle, expiresInNanoseconds: expiresIn,
                bytesTx: conn.pointee.bytesTx, bytesRx: conn.pointee.bytesRx,
                failedAttempts: conn.pointee.failures))
        }
        return ConnectionListingResult(rows: rows, matched: matched)
    }

    // MARK: - Snapshot adoption

    private func adopt() {
        let (snapshot, newGeneration) = snapshots.load()
        generation = newGeneration
        defer { control.adoptedGeneration.store(newGeneration, ordering: .releasing) }
        var cut = 0, cutByDown = 0
        // For each frontend: old server index -> new server index (-1: gone or no longer kept).
        var remaps: [[Int]] = []
        var newRoutes: [FrontendRoute?] = []
        // The routes before this snapshot: a connection closed below because its server left
        // is logged with that server's name.
        let oldRoutes = frontends.map(\.route)
        for f in frontends.indices {
            let key = frontends[f].key
            let old = frontends[f].route
            let new = snapshot.frontends.first { $0.name == key.frontend && $0.config.listen == key.address }
            var map: [Int] = []
            if let old {
                map = old.servers.map { server in
                    guard let new, let j = new.servers.firstIndex(where: { $0.id == server.id }),
                          new.servers[j].keepsFlows else { return -1 }
                    return j
                }
            }
            remaps.append(map)
            newRoutes.append(new)
            if let new {
                frontends[f].follow(new)
            } else {
                frontends[f].route = nil
                frontends[f].scheduler = nil
            }
            if let new, !new.isDraining, !isDraining {
                // A handed listener was bound for this snapshot: it replaces one still open
                // from before (a frontend removed and added back before this loop looked).
                if let handed = control.takeHanded(key) { listen(f, on: handed) }
            } else {
                closeListener(f)
            }
        }
        // New frontends, and frontends at a new address.
        for route in snapshot.frontends where !route.isDraining {
            let key = ListenerKey(route.config)
            guard !frontends.contains(where: { $0.key == key }) else { continue }
            // A free entry (frontend gone, no connection names it), else a new one.
            let f = frontends.firstIndex { $0.route == nil && $0.listener == nil && $0.connections == 0 } ?? frontends.count
            let entry = LoopFrontend(route, listener: nil)
            if f == frontends.count {
                frontends.append(entry)
                remaps.append([])
                newRoutes.append(route)
            } else {
                (frontends[f], remaps[f], newRoutes[f]) = (entry, [], route)
            }
            if isDraining { continue }
            if let handed = control.takeHanded(key) {
                listen(f, on: handed)
            } else {
                logger.warning("frontend has no listener in this loop (none was bound for it)",
                               metadata: ["frontend": "\(key.frontend)", "address": "\(key.address)"])
            }
        }
        for index in 0..<slab.highWater {
            let conn = slab.slots + index
            guard conn.pointee.phase != .free else { continue }
            let f = conn.pointee.frontend
            // Its server is chosen once its header comes, by the routes of then.
            if conn.pointee.phase == .awaitingHeader { continue }
            if conn.pointee.phase == .queued {
                // Waiting clients keep waiting (`serveWaiting` looks at the new route after this
                // batch), unless their frontend left.
                if newRoutes[f] == nil { noServer(index) }
                continue
            }
            let map = remaps[f]
            let old = conn.pointee.server
            let moved = old >= 0 && old < map.count ? map[old] : -1
            guard let route = newRoutes[f], moved >= 0 else {
                if conn.pointee.phase == .connecting && newRoutes[f] != nil {
                    // The server it was connecting to left: start over with the new route.
                    SocketCalls.close(conn.pointee.backend)
                    conn.pointee.backend = -1
                    conn.pointee.backendReplacedInBatch = batch
                    givePlaceBack(conn, to: conn.pointee.serverCounters, freeing: false)
                    conn.pointee.serverCounters = nil
                    let route = newRoutes[f]!
                    let key = FlowKey(client: conn.pointee.clientAddress, vip: frontends[f].vip)
                    if let choice = frontends[f].scheduler?.pick(for: key, in: route) {
                        conn.pointee.firstChoice = choice
                        conn.pointee.failures = 0
                        conn.pointee.fullSkips = 0
                        connect(index, to: choice, route: route)
                    } else {
                        noServer(index)
                    }
                } else {
                    let before = f < oldRoutes.count ? oldRoutes[f]?.servers : nil
                    let server = before.flatMap { old >= 0 && old < $0.count ? $0[old].id : nil }
                    // Still in the routes, and not kept because it is down (`on_down = "close"`).
                    let down = server.flatMap { id in newRoutes[f]?.servers.first { $0.id == id } }?.closedWhileDown ?? false
                    close(index, abort: true, end: down ? .serverDown : .drainEnded, server: server)
                    if down { cutByDown += 1 } else { cut += 1 }
                }
                continue
            }
            conn.pointee.server = moved
            if conn.pointee.serverCounters !== route.servers[moved].counters {
                // Not expected (a server keeps its counters while it is in the routes), but a
                // place goes back where it was taken.
                givePlaceBack(conn, to: conn.pointee.serverCounters, freeing: true)
            }
            conn.pointee.serverCounters = route.servers[moved].counters
            let first = conn.pointee.firstChoice
            conn.pointee.firstChoice = first >= 0 && first < map.count && map[first] >= 0 ? map[first] : moved
            if conn.pointee.phase == .connecting && route.servers[moved].address != conn.pointee.serverAddress {
                // The reload gave its server another address: connect there instead (the
                // old one may never answer; its attempt is no failure of the server's). Its
                // place is given back first: the connect takes one again.
                SocketCalls.close(conn.pointee.backend)
                conn.pointee.backend = -1
                conn.pointee.backendReplacedInBatch = batch
                givePlaceBack(conn, to: conn.pointee.serverCounters, freeing: false)
                connect(index, to: moved, route: route)
            }
        }
        if cut > 0 {
            logger.notice("closed \(cut) connection(s) whose drain ended (their server or frontend left, or drain_timeout passed)")
        }
        if cutByDown > 0 {
            logger.notice("closed \(cutByDown) connection(s) of servers marked down (on_down = close)")
        }
    }

    /// Makes `listener` frontend `f`'s, closing the one it had.
    private func listen(_ f: Int, on listener: Listener) {
        closeListener(f)
        frontends[f].listener = listener
        frontends[f].vip = listener.address
        if frontends[f].tcpKeepalive > 0 { SocketCalls.setKeepalive(listener.fd, idle: frontends[f].tcpKeepalive) }
        requeueListener(f, listener)
    }

    /// Closes this loop's descriptor of frontend `f`'s listening socket, if it has one. The
    /// socket closes (new clients are refused by the kernel) with its last descriptor: the
    /// other loops', and after a takeover's handover the new convey's.
    private func closeListener(_ f: Int) {
        guard let listener = frontends[f].listener else { return }
        epoll.remove(listener.fd)
        SocketCalls.close(listener.fd)
        frontends[f].listener = nil
        frontends[f].inWakeUps = false
        frontends[f].atLimit = false
        frontends[f].acceptStalled = false
    }

    // MARK: - Helpers

    @inline(__always)
    private static func token(_ kind: TokenKind, _ index: Int, _ generation: UInt32) -> UInt64 {
        UInt64(generation) << 32 | UInt64(index) << 2 | kind.rawValue
    }

    @inline(__always)
    static func monotonicNow() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    static func nanoseconds(_ d: Duration) -> UInt64 {
        let (s, atto) = d.components
        guard s >= 0 else { return 0 }
        return UInt64(s) &* 1_000_000_000 &+ UInt64(atto / 1_000_000_000)
    }
}
