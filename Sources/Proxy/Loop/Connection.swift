import Balancer

/// One proxied connection as its event loop holds it: a slot in `ConnectionSlab`, plain data
/// (descriptors, indices, two `Direction`s) so the data path touches no object per event.
struct Connection {
    enum Phase: UInt8 {
        /// The slot is unused.
        case free
        /// The client is accepted and its frontend takes a PROXY header first
        /// (`accept_proxy_protocol`): no server is chosen until it has come.
        case awaitingHeader
        /// The client is accepted; a server connect is in flight.
        case connecting
        /// Both sockets are open and bytes flow.
        case established
        /// The client is accepted and every candidate server is at its `max_connections`:
        /// it waits in its frontend's queue (no backend socket) until a place frees or
        /// `queue_timeout` passes.
        case queued
    }

    var phase: Phase = .free
    /// Bumped every time the slot is freed, and part of every epoll token, so an event read in
    /// the same batch for a connection that was closed (and its slot reused) is ignored.
    var generation: UInt32 = 0
    var client: Int32 = -1
    var backend: Int32 = -1
    /// Index of the frontend in the loop's frontend table.
    var frontend = 0
    /// Index of the server in the frontend's current route (`route.servers`), or -1.
    var server = -1
    /// The scheduler's choice; retries walk onward from it (`Scheduler.fallback`).
    var firstChoice = -1
    /// Connect attempts that failed so far.
    var failures = 0
    /// Why the last one failed (with `serverAddress`, where it went): an errno, 0 when it
    /// failed without one, -1 when `connect_timeout` passed. For the log.
    var lastConnectError: Int32 = 0
    /// Candidate servers passed over so far because they were at their `max_connections`.
    var fullSkips = 0
    /// The connection holds one of its server's `max_connections` places (`serverCounters`'
    /// `placesTaken`), taken before its connect and given back when it ends or fails.
    var holdsPlace = false
    /// That place is under a limit (`max_connections`): giving it back may serve a waiting client.
    var placeLimited = false
    /// Monotonic nanoseconds: when the present wait for a place began.
    var waitStartedAt: UInt64 = 0
    /// Nanoseconds spent waiting for a place before the present attempt (for the log).
    var waitedNanoseconds: UInt64 = 0
    /// The client's address, as accepted (for scheduling and the PROXY header).
    var clientAddress = Endpoint(address: .v4(0), port: 0)
    /// The address the client connected to, from its PROXY header (`accept_proxy_protocol`):
    /// the destination of the header sent on to the server. nil: this host's own end.
    var headerDestination: Endpoint?
    /// The address the connect attempt in flight (or the last one) went to: a reload may have
    /// given its server another since.
    var serverAddress = Endpoint(address: .v4(0), port: 0)
    /// Monotonic nanoseconds: when the connect attempt in flight times out (awaiting a PROXY
    /// header: when the client is closed for not sending it).
    var connectDeadline: UInt64 = 0
    /// Monotonic nanoseconds of the first time the client had to wait for a server place
    /// (0: never): `queue_timeout` counts from here, across every wait of the connection.
    /// From then until it is established or closed, retries included, the client is counted
    /// in its frontend's `queued` (one of `max_queue`'s places).
    var queuedAt: UInt64 = 0
    /// The loop batch in which a snapshot adoption gave this connection a new backend socket
    /// under its old token: that batch's backend events were the old socket's (see `EventLoop.adopt`).
    var backendReplacedInBatch: UInt64 = 0
    /// Monotonic nanoseconds of the last byte moved either way (for `idle_timeout`).
    var lastActive: UInt64 = 0
    /// Monotonic nanoseconds of the accept (for `/flows`).
    var openedAt: UInt64 = 0
    /// Bytes moved client → server and server → client (for `/flows`).
    var bytesTx: Int64 = 0
    var bytesRx: Int64 = 0
    var serverCounters: ServerCounters?
    var frontendCounters: FrontendCounters?
    /// Client → server (the counters' "tx").
    var toServer = Direction()
    /// Server → client (the counters' "rx").
    var toClient = Direction()
    /// Next free slot while this one is free.
    var nextFree = -1
}

/// Connection slots in one contiguous buffer with a free list; slot indices go into epoll
/// tokens. Grows by doubling (rare: only when more connections are open than ever before).
struct ConnectionSlab: ~Copyable {
    private(set) var slots: UnsafeMutablePointer<Connection>
    private(set) var capacity: Int
    /// Slots `0..<highWater` have been used at least once; sweeps look only at those.
    private(set) var highWater = 0
    /// Connections currently open.
    private(set) var live = 0
    private var freeHead = -1

    init(capacity: Int = 1024) {
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
    }

    deinit {
        slots.deinitialize(count: highWater)
        slots.deallocate()
    }

    /// A free slot, its `phase` still `.free` and its generation kept.
    mutating func allocate() -> Int {
        live += 1
        if freeHead >= 0 {
            let index = freeHead
            freeHead = slots[index].nextFree
            return index
        }
        if highWater == capacity {
            let bigger = UnsafeMutablePointer<Connection>.allocate(capacity: capacity * 2)
            bigger.moveInitialize(from: slots, count: highWater)
            slots.deallocate()
            slots = bigger
            capacity *= 2
        }
        (slots + highWater).initialize(to: Connection())
        highWater += 1
        return highWater - 1
    }

    /// Resets slot `index` and puts it on the free list.
    mutating func free(_ index: Int) {
        let generation = slots[index].generation &+ 1
        slots[index] = Connection()
        slots[index].generation = generation
        slots[index].nextFree = freeHead
        freeHead = index
        live -= 1
    }
}
