import Synchronization

/// Live counters of one server, shared by every data-path thread that forwards to it.
///
/// Relaxed atomics: each update is one uncontended-in-practice atomic add, cheap enough for
/// per-connection and per-read paths, and readers (the stats service) sum nothing. The object
/// lives in `BalancerRuntime` under the server's `ServerID`, so an unchanged server keeps its
/// counters across reloads. "tx" is client→server and "rx" is server→client (the seed's meaning).
public final class ServerCounters: Sendable {
    public let totalConnections = Atomic<Int64>(0)
    public let currentConnections = Atomic<Int64>(0)
    public let bytesTx = Atomic<Int64>(0)
    public let bytesRx = Atomic<Int64>(0)
    /// Connect attempts that failed (refused, timed out, unreachable).
    public let connectFailures = Atomic<Int64>(0)
    /// Connect attempts that failed since the last one that succeeded (over every event loop:
    /// an approximate "in a row"), for `error_limit`.
    public let connectFailuresInARow = Atomic<Int64>(0)
    /// The server's connections connecting or established (proxy mode), what its
    /// `max_connections` limits.
    public let placesTaken = Atomic<Int64>(0)

    public init() {}

    /// Takes one of the server's `limit` places for a connection about to connect, so that
    /// event loops connecting at the same instant never exceed it together. False when all
    /// are taken. Give it back with `releasePlace()` when that connection ends or its
    /// connect fails.
    @inlinable public func reservePlace(limit: Int64) -> Bool {
        placesTaken.incrementIfBelow(limit)
    }

    /// Counts a connection to a server without a limit (so that a limit a reload sets counts
    /// the connections it already holds).
    @inlinable public func takePlace() {
        placesTaken.wrappingAdd(1, ordering: .relaxed)
    }

    /// Gives back a place `reservePlace(limit:)` or `takePlace()` took.
    @inlinable public func releasePlace() {
        placesTaken.wrappingSubtract(1, ordering: .sequentiallyConsistent)
    }

    /// Whether a connection could take a place now (a hint: another thread may take it first).
    @inlinable public func hasPlace(limit: Int64) -> Bool {
        limit <= 0 || placesTaken.load(ordering: .sequentiallyConsistent) < limit
    }

    /// A connection to this server was established.
    @inlinable public func connectionOpened() {
        totalConnections.wrappingAdd(1, ordering: .relaxed)
        currentConnections.wrappingAdd(1, ordering: .relaxed)
        // Read first: the common case (no failures) writes no shared cache line.
        if connectFailuresInARow.load(ordering: .relaxed) != 0 { connectFailuresInARow.store(0, ordering: .relaxed) }
    }

    /// A connect attempt to this server failed.
    @inlinable public func connectFailed() {
        connectFailures.wrappingAdd(1, ordering: .relaxed)
        connectFailuresInARow.wrappingAdd(1, ordering: .relaxed)
    }

    /// A connection to this server ended.
    @inlinable public func connectionClosed() {
        currentConnections.wrappingSubtract(1, ordering: .relaxed)
    }

    /// Bytes forwarded client → server.
    @inlinable public func addTx(_ n: Int) { bytesTx.wrappingAdd(Int64(n), ordering: .relaxed) }

    /// Bytes forwarded server → client.
    @inlinable public func addRx(_ n: Int) { bytesRx.wrappingAdd(Int64(n), ordering: .relaxed) }

    /// A point-in-time copy for reporting.
    public func snapshot() -> TrafficTotals {
        TrafficTotals(totalConnections: totalConnections.load(ordering: .relaxed),
                      currentConnections: currentConnections.load(ordering: .relaxed),
                      bytesTx: bytesTx.load(ordering: .relaxed),
                      bytesRx: bytesRx.load(ordering: .relaxed),
                      connectFailures: connectFailures.load(ordering: .relaxed))
    }
}

/// Live counters of one frontend (listener / VIP).
public final class FrontendCounters: Sendable {
    public let totalConnections = Atomic<Int64>(0)
    public let currentConnections = Atomic<Int64>(0)
    public let bytesTx = Atomic<Int64>(0)
    public let bytesRx = Atomic<Int64>(0)
    /// Clients closed at once because no server could take them (none up, or all refused).
    public let noBackend = Atomic<Int64>(0)
    /// Times clients found the frontend at `max_connections` and waited: proxy mode, in the
    /// kernel's listen queue until connections closed (once per episode: until its queue
    /// emptied); the AF_XDP modes, each SYN dropped (the client sends it again).
    public let overLimit = Atomic<Int64>(0)
    /// Proxy mode: an `overLimit` episode is counted and its listen queue not yet seen empty
    /// (begun and ended by whichever event loop sees it: they share the listening socket).
    private let overLimitEpisode = Atomic<Bool>(false)

    /// Proxy mode: an `overLimit` episode is counted and not yet ended.
    public var inOverLimitEpisode: Bool { overLimitEpisode.load(ordering: .relaxed) }

    /// Proxy mode: a client waits at `max_connections`; counted in `overLimit` unless its
    /// episode already is.
    public func beginOverLimitEpisode() {
        if overLimitEpisode.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            overLimit.wrappingAdd(1, ordering: .relaxed)
        }
    }

    /// Proxy mode: the listen queue was seen empty; the next wait is a new episode.
    public func endOverLimitEpisode() {
        if overLimitEpisode.load(ordering: .relaxed) { overLimitEpisode.store(false, ordering: .relaxed) }
    }
    /// New connections refused by the frontend's `allow` / `deny` lists.
    public let denied = Atomic<Int64>(0)
    /// Clients waiting now for a place at a server with `max_connections`, or being tried from
    /// the queue (proxy mode).
    public let queued = Atomic<Int64>(0)
    /// Clients closed after waiting `queue_timeout` for such a place.
    public let queueTimeouts = Atomic<Int64>(0)
    /// Clients closed at once because `max_queue` clients were waiting already.
    public let queueFull = Atomic<Int64>(0)
    /// Proxy mode with `accept_proxy_protocol`: clients closed because their PROXY header did
    /// not read, or had not come in time (10 s).
    public let badProxyHeader = Atomic<Int64>(0)

    /// AF_XDP modes: new connections (SYNs) dropped because every server that could take
    /// them was at its `max_connections` (the client's TCP sends its SYN again).
    public let serversFull = Atomic<Int64>(0)
    /// Not a statistic: the `wrr` cursor every data-path thread of the frontend advances
    /// (see `FrontendRoute.wrrCycle`). It lives here because these counters outlive snapshots,
    /// so a republish (a health change, a drain's end) does not restart the cycle.
    public let wrrPosition = Atomic<UInt64>(0)

    public init() {}

    /// Proxy mode: counts a client that begins to wait in `queued` unless `limit` (> 0)
    /// clients wait already, also when event loops queue clients at the same instant. (A
    /// client keeps its count while it is tried from the queue, and waits again without a
    /// second check, so `queued` never passes the limit.)
    @inlinable public func enterQueue(limit: Int) -> Bool {
        guard limit > 0 else {
            queued.wrappingAdd(1, ordering: .relaxed)
            return true
        }
        return queued.incrementIfBelow(Int64(limit))
    }

    @inlinable public func connectionOpened() {
        totalConnections.wrappingAdd(1, ordering: .relaxed)
        currentConnections.wrappingAdd(1, ordering: .relaxed)
    }

    /// Takes one of `limit` places for a connection about to be accepted, so that threads
    /// accepting at the same instant never hold more than `limit` together (HAProxy's
    /// `maxconn` is exact too). False when all are taken. A place taken counts as open at
    /// once: follow it with `reservedConnectionOpened()` or give it back with
    /// `connectionClosed()`.
    @inlinable public func reservePlace(limit: Int64) -> Bool {
        currentConnections.incrementIfBelow(limit)
    }

    /// A connection opened in a place `reservePlace(limit:)` took.
    @inlinable public func reservedConnectionOpened() {
        totalConnections.wrappingAdd(1, ordering: .relaxed)
    }

    @inlinable public func connectionClosed() {
        currentConnections.wrappingSubtract(1, ordering: .relaxed)
    }

    @inlinable public func addTx(_ n: Int) { bytesTx.wrappingAdd(Int64(n), ordering: .relaxed) }
    @inlinable public func addRx(_ n: Int) { bytesRx.wrappingAdd(Int64(n), ordering: .relaxed) }

    public func snapshot() -> TrafficTotals {
        TrafficTotals(totalConnections: totalConnections.load(ordering: .relaxed),
                      currentConnections: currentConnections.load(ordering: .relaxed),
                      bytesTx: bytesTx.load(ordering: .relaxed),
                      bytesRx: bytesRx.load(ordering: .relaxed),
                      connectFailures: 0)
    }
}

/// Counter values read at one instant.
///
/// Codable (a takeover's `CarriedCounters`) without `currentConnections`, a gauge that belongs
/// to the process that counted it; the keys are `/stats`'.
public struct TrafficTotals: Sendable, Equatable, Codable {
    public var totalConnections: Int64
    public var currentConnections: Int64 = 0
    public var bytesTx: Int64
    public var bytesRx: Int64
    public var connectFailures: Int64

    public init(totalConnections: Int64 = 0, currentConnections: Int64 = 0, bytesTx: Int64 = 0,
                bytesRx: Int64 = 0, connectFailures: Int64 = 0) {
        self.totalConnections = totalConnections
        self.currentConnections = currentConnections
        self.bytesTx = bytesTx
        self.bytesRx = bytesRx
        self.connectFailures = connectFailures
    }

    public static func + (a: TrafficTotals, b: TrafficTotals) -> TrafficTotals {
        TrafficTotals(totalConnections: a.totalConnections + b.totalConnections,
                      currentConnections: a.currentConnections + b.currentConnections,
                      bytesTx: a.bytesTx + b.bytesTx, bytesRx: a.bytesRx + b.bytesRx,
                      connectFailures: a.connectFailures + b.connectFailures)
    }

    public static func += (a: inout TrafficTotals, b: TrafficTotals) { a = a + b }

    enum CodingKeys: String, CodingKey {
        case totalConnections = "total_connections", bytesTx = "bytes_tx", bytesRx = "bytes_rx"
        case connectFailures = "connect_failures"
    }
}

extension Atomic where Value == Int64 {
    /// Adds one unless the value has reached `limit`; false then. Threads racing for the
    /// last places never take more than `limit` together.
    @inlinable func incrementIfBelow(_ limit: Int64) -> Bool {
        var current = load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = compareExchange(expected: current, desired: current &+ 1, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }
}
