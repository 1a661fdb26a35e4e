import Synchronization

/// Why a forwarder dropped a frame.
public enum DropReason: Int, Sendable, CaseIterable, CustomStringConvertible {
    /// A new flow found no selectable backend with a MAC, or its backend lost its MAC.
    case noBackend
    /// The flow table was full and nothing in the key's window was idle enough to evict.
    case tableFull
    /// Passthrough: the worker's NAT port slice is exhausted.
    case noNATPort
    /// Truncated frame or inconsistent header lengths.
    case malformed
    /// Not IPv4/IPv6 TCP, a fragment, IPv6 extension headers, or a family the mode cannot NAT.
    case unsupported
    /// Passthrough: a frame to the NAT address whose port has no live flow, or not from the
    /// backend that port was given to (spoofing).
    case unknownReply
    /// A non-SYN frame of no tracked flow (that DSR could not take up by hashing).
    case noFlow
    /// The flow's backend left the routes or its drain time passed: the flow was removed.
    case backendGone
    /// Destination is no VIP (nor the NAT address): the steering program should not send it.
    case notForUs
    /// A new connection from an address no client can have: unspecified, loopback,
    /// multicast or reserved (IPv4 240/4, broadcast included), or the VIP itself (a spoofed
    /// SYN whose replies would go nowhere, or back to the balancer).
    case badSource
    /// A SYN (or a passthrough backend's SYN-ACK) whose TCP checksum is wrong.
    case badChecksum
    /// A SYN (or SYN-ACK) whose checksum its sender left for offload to finish (a veth peer
    /// with TX checksum offload on): forwarded, it would be dropped as corrupt. See
    /// `SegmentChecksum`.
    case unfinishedChecksum
    /// DSR: an ICMP "too big" about a connection no backend can be found for (not tracked,
    /// and its frontend does not place by hash), or whose backend has no MAC.
    case icmpNoFlow
    /// A new connection from an address the frontend's `allow` / `deny` lists refuse.
    case denied
    /// A new connection (SYN) found every server that could take it at its
    /// `max_connections`: dropped, so the client's TCP retries it (as a queue would).
    case serversFull
    /// A new connection (SYN) found its frontend at its `max_connections`: dropped (the
    /// client's TCP retries it).
    case overLimit

    public var description: String {
        switch self {
        case .noBackend: return "no_backend"
        case .tableFull: return "table_full"
        case .noNATPort: return "no_nat_port"
        case .malformed: return "malformed"
        case .unsupported: return "unsupported"
        case .unknownReply: return "unknown_reply"
        case .noFlow: return "no_flow"
        case .backendGone: return "backend_gone"
        case .notForUs: return "not_for_us"
        case .badSource: return "bad_source"
        case .badChecksum: return "bad_checksum"
        case .unfinishedChecksum: return "unfinished_checksum"
        case .icmpNoFlow: return "icmp_no_flow"
        case .denied: return "denied"
        case .serversFull: return "servers_full"
        case .overLimit: return "over_limit"
        }
    }
}

/// Why a new connection (SYN) was turned away, counted per frontend (its `/stats` key) as well
/// as a drop.
public enum FrontendRefusal: Int, Sendable, CaseIterable {
    /// No backend could take it (`no_backend`).
    case noBackend
    /// The frontend's `allow` / `deny` lists refuse its source (`denied`).
    case denied
    /// Every server that could take it is at its `max_connections` (`servers_full`).
    case serversFull
    /// The frontend is at its `max_connections` (`over_limit`).
    case overLimit

    /// The drop it is also counted as.
    var dropReason: DropReason {
        switch self {
        case .noBackend: return .noBackend
        case .denied: return .denied
        case .serversFull: return .serversFull
        case .overLimit: return .overLimit
        }
    }
}

/// One worker's counters, written by the worker with plain (relaxed) stores and readable from
/// any thread without a lock.
///
/// Layout: `fixedCount` scalar counters, then four per backend slot (connections opened,
/// connections closed, bytes client→server, bytes server→client), then one block per
/// `FrontendRefusal` of one count per frontend index (new connections turned away for it). Every counter has a single
/// writer (its worker), so an increment is a relaxed load and store — two plain moves, no
/// locked instruction — and a reader sees each word whole.
public final class ForwarderCounters: @unchecked Sendable {
    static let rxPackets = 0, rxBytes = 1
    static let flowsCreated = 2, flowsActive = 3, flowsExpired = 4, flowsEvicted = 5, flowsEnded = 6
    /// Flows in the table that are closing (FIN or RST seen), part of `flowsActive`.
    static let flowsClosing = 7
    /// DSR flows taken up mid-connection (no SYN seen; see `ForwarderCore.adoptsMidFlow`),
    /// part of `flowsCreated`.
    static let flowsAdopted = 8
    /// Segments of no (or of an ended) flow answered with a reset (see `ResetReply`); each
    /// is also counted as the drop it was (`no_flow`, `backend_gone`, `unknown_reply`).
    static let resetsSent = 9
    /// DSR: ICMP "too big" messages about a VIP's segment passed to the connection's backend.
    static let icmpForwarded = 10
    /// RST or FIN segments outside their client's sequence window (`ForwarderCore.isInWindow`):
    /// forwarded, the flow left as it was.
    static let closesOutOfWindow = 11
    static let dropBase = 12
    static let fixedCount = dropBase + DropReason.allCases.count
    static let perBackend = 4

    let base: UnsafeMutablePointer<Atomic<UInt64>>
    /// Where the control plane asks this worker for a copy of its flows (`/flows`); it travels
    /// with the counters, the one object every worker already shares with the control plane.
    public let listing = FlowListing()
    /// Backend slots counted (`PacketRoutesPublisher`'s `maxBackendSlots`).
    public let backendSlots: Int
    /// Frontend indices counted (every index `PacketRoutes` can give).
    static let frontendSlots = PacketRoutes.maxFrontends
    /// The per-frontend blocks, one per `FrontendRefusal`.
    static let frontendBlocks = FrontendRefusal.allCases.count
    private var count: Int { Self.frontendBase(backendSlots: backendSlots) + Self.frontendBlocks * Self.frontendSlots }

    /// Index of the first per-frontend counter (after the scalars and the backends').
    @inline(__always)
    static func frontendBase(backendSlots: Int) -> Int { fixedCount &+ perBackend &* backendSlots }

    /// Zeroed counters for `backendSlots` backends (use the publisher's `maxBackendSlots`).
    /// Create them on the control thread and hand them to a forwarder built on its worker
    /// thread, so the stats service holds them from the start.
    public init(backendSlots: Int) {
        self.backendSlots = backendSlots
        let n = Self.frontendBase(backendSlots: backendSlots) + Self.frontendBlocks * Self.frontendSlots
        base = .allocate(capacity: n)
        for i in 0..<n { (base + i).initialize(to: Atomic(0)) }
    }

    deinit {
        base.deinitialize(count: count)
        base.deallocate()
    }

    /// New connections to frontend index `frontend` turned away for `refusal`, on this worker.
    public func refused(_ refusal: FrontendRefusal, frontend: Int) -> UInt64 {
        guard frontend >= 0, frontend < Self.frontendSlots else { return 0 }
        return load(Self.frontendIndex(refusal, frontend: frontend, backendSlots: backendSlots))
    }

    /// Where the count of `refusal` for `frontend` lives.
    @inline(__always)
    static func frontendIndex(_ refusal: FrontendRefusal, frontend: Int, backendSlots: Int) -> Int {
        frontendBase(backendSlots: backendSlots) &+ refusal.rawValue &* frontendSlots &+ frontend
    }

    @inline(__always)
    func load(_ i: Int) -> UInt64 { (base + i).pointee.load(ordering: .relaxed) }

    /// One drop counter, read without a snapshot.
    public func dropped(_ reason: DropReason) -> UInt64 { load(Self.dropBase &+ reason.rawValue) }

    /// A consistent-enough copy for /stats (each counter read once, relaxed).
    ///
    /// Transmitted figures are derived rather than counted per packet (two counter updates
    /// fewer on the hot path): every frame received is either dropped, with a reason, or
    /// transmitted, and every transmitted byte is counted against one backend.
    public func snapshot() -> ForwarderStats {
        var drops: [DropReason: UInt64] = [:]
        var dropped: UInt64 = 0
        for reason in DropReason.allCases {
            let n = load(Self.dropBase + reason.rawValue)
            drops[reason] = n
            dropped &+= n
        }
        var txBytes: UInt64 = 0
        for slot in 0..<backendSlots {
            let b = Self.fixedCount + Self.perBackend * slot
            txBytes &+= load(b + 2) &+ load(b + 3)
        }
        let rxPackets = load(Self.rxPackets)
        return ForwarderStats(rxPackets: rxPackets, rxBytes: load(Self.rxBytes),
                              txPackets: rxPackets >= dropped ? rxPackets - dropped : 0, txBytes: txBytes,
                              flowsCreated: load(Self.flowsCreated), flowsActive: load(Self.flowsActive),
                              flowsExpired: load(Self.flowsExpired), flowsEvicted: load(Self.flowsEvicted),
                              flowsEnded: load(Self.flowsEnded), flowsClosing: load(Self.flowsClosing),
                              flowsAdopted: load(Self.flowsAdopted), resetsSent: load(Self.resetsSent),
                              icmpForwarded: load(Self.icmpForwarded), closesOutOfWindow: load(Self.closesOutOfWindow),
                              drops: drops)
    }

    /// The running totals of backend `slot` on this worker.
    public func backend(_ slot: Int) -> BackendTraffic {
        guard slot >= 0, slot < backendSlots else { return BackendTraffic() }
        let b = Self.fixedCount + Self.perBackend * slot
        return BackendTraffic(opened: load(b), closed: load(b + 1), bytesTx: load(b + 2), bytesRx: load(b + 3))
    }
}

/// Unretained, single-writer access to a `ForwarderCounters` for the packet path.
struct CounterView {
    let base: UnsafeMutablePointer<Atomic<UInt64>>
    let backendSlots: Int

    init(_ counters: ForwarderCounters) {
        base = counters.base
        backendSlots = counters.backendSlots
    }

    @inline(__always)
    func add(_ i: Int, _ n: UInt64) {
        let p = base + i
        p.pointee.store(p.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    @inline(__always)
    func set(_ i: Int, _ v: UInt64) { (base + i).pointee.store(v, ordering: .relaxed) }

    @inline(__always)
    func get(_ i: Int) -> UInt64 { (base + i).pointee.load(ordering: .relaxed) }

    @inline(__always)
    func drop(_ reason: DropReason) { add(ForwarderCounters.dropBase &+ reason.rawValue, 1) }

    /// A new connection (SYN) to `frontend` turned away for `refusal`: dropped as the
    /// refusal's drop reason and counted to the frontend.
    @inline(__always)
    func refuse(_ refusal: FrontendRefusal, frontend: Int) {
        drop(refusal.dropReason)
        add(ForwarderCounters.frontendIndex(refusal, frontend: frontend, backendSlots: backendSlots), 1)
    }

    /// Index of backend `slot`'s first counter (opened; then closed, tx, rx).
    @inline(__always)
    func backend(_ slot: UInt32) -> Int { ForwarderCounters.fixedCount &+ ForwarderCounters.perBackend &* Int(slot) }

}

/// A worker's counters at one instant, for /stats and /metrics.
public struct ForwarderStats: Sendable, Equatable {
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var flowsCreated: UInt64 = 0
    public var flowsActive: UInt64 = 0
    public var flowsExpired: UInt64 = 0
    public var flowsEvicted: UInt64 = 0
    /// Flows removed after closing, because their backend or frontend left, or because a new
    /// SYN reused a closing flow's tuple.
    public var flowsEnded: UInt64 = 0
    /// Flows in the table that are closing (FIN or RST seen; part of `flowsActive`).
    public var flowsClosing: UInt64 = 0
    /// DSR: flows taken up mid-connection by hashing (part of `flowsCreated`).
    public var flowsAdopted: UInt64 = 0
    /// Segments of no (or an ended) flow answered with a reset; also counted as drops.
    public var resetsSent: UInt64 = 0
    /// DSR: ICMP "too big" messages passed to the backend of the connection they are about.
    public var icmpForwarded: UInt64 = 0
    /// RST or FIN segments outside their client's sequence window: forwarded to the backend
    /// to judge, the flow left as it was (a forged reset cannot end it here).
    public var closesOutOfWindow: UInt64 = 0
    public var drops: [DropReason: UInt64] = [:]

    /// Flows still open: what a shutdown drain waits for.
    public var flowsOpen: UInt64 { flowsActive >= flowsClosing ? flowsActive - flowsClosing : 0 }

    public init(rxPackets: UInt64 = 0, rxBytes: UInt64 = 0, txPackets: UInt64 = 0, txBytes: UInt64 = 0,
                flowsCreated: UInt64 = 0, flowsActive: UInt64 = 0, flowsExpired: UInt64 = 0,
                flowsEvicted: UInt64 = 0, flowsEnded: UInt64 = 0, flowsClosing: UInt64 = 0,
                flowsAdopted: UInt64 = 0, resetsSent: UInt64 = 0, icmpForwarded: UInt64 = 0,
                closesOutOfWindow: UInt64 = 0, drops: [DropReason: UInt64] = [:]) {
        self.rxPackets = rxPackets
        self.rxBytes = rxBytes
        self.txPackets = txPackets
        self.txBytes = txBytes
        self.flowsCreated = flowsCreated
        self.flowsActive = flowsActive
        self.flowsExpired = flowsExpired
        self.flowsEvicted = flowsEvicted
        self.flowsEnded = flowsEnded
        self.flowsClosing = flowsClosing
        self.flowsAdopted = flowsAdopted
        self.resetsSent = resetsSent
        self.icmpForwarded = icmpForwarded
        self.closesOutOfWindow = closesOutOfWindow
        self.drops = drops
    }

    /// Drops for `reason` (0 when none).
    public func drops(_ reason: DropReason) -> UInt64 { drops[reason] ?? 0 }

    /// The sum of two workers' figures.
    public static func + (a: ForwarderStats, b: ForwarderStats) -> ForwarderStats {
        ForwarderStats(rxPackets: a.rxPackets + b.rxPackets, rxBytes: a.rxBytes + b.rxBytes,
                       txPackets: a.txPackets + b.txPackets, txBytes: a.txBytes + b.txBytes,
                       flowsCreated: a.flowsCreated + b.flowsCreated, flowsActive: a.flowsActive + b.flowsActive,
                       flowsExpired: a.flowsExpired + b.flowsExpired, flowsEvicted: a.flowsEvicted + b.flowsEvicted,
                       flowsEnded: a.flowsEnded + b.flowsEnded, flowsClosing: a.flowsClosing + b.flowsClosing,
                       flowsAdopted: a.flowsAdopted + b.flowsAdopted, resetsSent: a.resetsSent + b.resetsSent,
                       icmpForwarded: a.icmpForwarded + b.icmpForwarded,
                       closesOutOfWindow: a.closesOutOfWindow + b.closesOutOfWindow,
                       drops: a.drops.merging(b.drops, uniquingKeysWith: +))
    }
}

/// One backend's traffic on one worker, as running totals.
public struct BackendTraffic: Sendable, Equatable {
    public var opened: UInt64 = 0
    public var closed: UInt64 = 0
    /// Client → server bytes (the seed's "tx").
    public var bytesTx: UInt64 = 0
    /// Server → client bytes (the seed's "rx"; passthrough only — DSR never sees replies).
    public var bytesRx: UInt64 = 0

    public init(opened: UInt64 = 0, closed: UInt64 = 0, bytesTx: UInt64 = 0, bytesRx: UInt64 = 0) {
        self.opened = opened
        self.closed = closed
        self.bytesTx = bytesTx
        self.bytesRx = bytesRx
    }
}
