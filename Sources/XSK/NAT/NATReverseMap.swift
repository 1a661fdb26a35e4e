import CXDP
import Synchronization

/// What a backend's reply needs to become the VIP's reply to the client.
public struct NATReverseEntry: Sendable, Equatable {
    public var clientHi: UInt64
    public var clientLo: UInt64
    public var clientPort: UInt16
    public var clientMAC: UInt64
    public var vipHi: UInt64
    public var vipLo: UInt64
    public var vipPort: UInt16
    public var backendHi: UInt64
    public var backendLo: UInt64
    public var backendPort: UInt16
    /// The backend's `PacketRoutes` slot, for its per-backend byte counters.
    public var backendSlot: UInt32

    public init(clientHi: UInt64, clientLo: UInt64, clientPort: UInt16, clientMAC: UInt64, vipHi: UInt64,
                vipLo: UInt64, vipPort: UInt16, backendHi: UInt64, backendLo: UInt64, backendPort: UInt16,
                backendSlot: UInt32) {
        self.clientHi = clientHi
        self.clientLo = clientLo
        self.clientPort = clientPort
        self.clientMAC = clientMAC
        self.vipHi = vipHi
        self.vipLo = vipLo
        self.vipPort = vipPort
        self.backendHi = backendHi
        self.backendLo = backendLo
        self.backendPort = backendPort
        self.backendSlot = backendSlot
    }
}

/// What a backend's IPv4 reply becomes, computed when its flow starts (the same fields change
/// to the same values in every reply, so the checksum differences are constants too).
struct NATReplyRewrite {
    /// `backend address << 16 | backend port`, address and port as the frame holds them
    /// (network order, loaded without swapping): the only source accepted. `noSource` (above
    /// 48 bits, so no frame matches it) for an IPv6 flow, whose replies take the full path.
    var expectedSource: UInt64
    /// The IPv4 header's bytes 12–19 as they leave (VIP, client), memory order.
    var addresses: UInt64
    /// The TCP header's bytes 0–3 (VIP port, client port) in memory order, then the IPv4
    /// header's and the TCP `Checksum.storedDelta`s.
    var portsAndDeltas: UInt64
    /// The Ethernet addresses (client MAC, interface MAC) and, above bit 32 of the second
    /// word, the backend slot.
    var ethernetFirst8: UInt64
    var ethernetLast4AndSlot: UInt64

    @inline(__always) var ports: UInt32 { UInt32(truncatingIfNeeded: portsAndDeltas) }
    @inline(__always) var ipChecksumDelta: UInt16 { UInt16(truncatingIfNeeded: portsAndDeltas >> 32) }
    @inline(__always) var tcpChecksumDelta: UInt16 { UInt16(truncatingIfNeeded: portsAndDeltas >> 48) }
    @inline(__always) var ethernet: EthernetAddresses {
        EthernetAddresses(first8: ethernetFirst8, last4: UInt32(truncatingIfNeeded: ethernetLast4AndSlot))
    }
    @inline(__always) var backendSlot: UInt32 { UInt32(truncatingIfNeeded: ethernetLast4AndSlot >> 32) }

    /// The expected-source word of an IPv4 reply from `address`:`port` (host order).
    static func source(_ address: UInt32, _ port: UInt16) -> UInt64 {
        source(stored: address.bigEndian, port.bigEndian)
    }

    /// The expected-source word from the address and port as loaded from a frame unswapped.
    @inline(__always)
    static func source(stored address: UInt32, _ port: UInt16) -> UInt64 {
        UInt64(address) << 16 | UInt64(port)
    }

    /// The expected source of an entry without an IPv4 rewrite: matches no frame.
    static let noSource = UInt64.max
}

/// The passthrough reply map, indexed by NAT port: one structure for all workers, allocated
/// once (65536 entries of two 64-byte cache lines, 8 MiB). The first line holds what an IPv4
/// reply needs (`NATReplyRewrite`) and, in word 6, a record of a FIN/RST from the backend, so
/// the owning worker can start the closing timeout of a flow whose replies it never sees; the
/// second line holds the whole `NATReverseEntry` (IPv6 replies, /stats, tests).
///
/// Who writes: only the worker owning the port (ports are sliced per worker), when its flow
/// starts (`publish`) and ends (`retire`). Who reads: any worker, because a backend's reply can
/// arrive on any RX queue. Publication is a sequence lock per entry: word 0 holds
/// `version << 2 | valid << 1 | busy`; the writer marks the entry busy, writes the fields,
/// then stores the next version with release ordering; a reader loads word 0 with acquire,
/// reads the fields, and re-checks word 0 after an acquire fence — a torn read is detected and
/// treated as no entry. Every field is a relaxed atomic word, so there is no data race, and on
/// x86-64 each access is a plain move. No lock, no allocation, no reference counting.
public final class NATReverseMap: @unchecked Sendable {
    static let words = 16
    static let closedWord = 6
    static let entryWord = 8
    let base: UnsafeMutablePointer<Atomic<UInt64>>

    public init() {
        let count = 65_536 * Self.words
        base = UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 128)
            .bindMemory(to: Atomic<UInt64>.self, capacity: count)
        for i in 0..<count { (base + i).initialize(to: Atomic(0)) }
    }

    deinit {
        base.deinitialize(count: 65_536 * Self.words)
        UnsafeMutableRawPointer(base).deallocate()
    }

    /// The entry for `port` as published, or nil when none is live (a test and /stats helper;
    /// the packet path uses `NATReverseView`).
    public func entry(forPort port: UInt16) -> NATReverseEntry? { NATReverseView(self).read(port)?.entry }
}

/// Unretained access to a `NATReverseMap` for the packet path (the forwarder keeps the map
/// alive).
struct NATReverseView {
    let base: UnsafeMutablePointer<Atomic<UInt64>>

    init(_ map: NATReverseMap) { base = map.base }

    @inline(__always)
    private func word(_ port: UInt16, _ i: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        base + (Int(port) &* NATReverseMap.words &+ i)
    }

    /// Starts loading the first line of `port`'s entry (what an IPv4 reply reads).
    @inline(__always)
    func prefetch(_ port: UInt16) { cxdp_prefetch(UnsafeRawPointer(word(port, 0))) }

    /// Writes the entry for `port` (owner only), with the IPv4 reply rewrite when the flow is
    /// IPv4 (`rewrite`).
    @inline(__always)
    func publish(_ port: UInt16, _ e: NATReverseEntry, rewrite: NATReplyRewrite?) {
        let head = word(port, 0)
        let old = head.pointee.load(ordering: .relaxed)
        head.pointee.store(old | 1, ordering: .relaxed)
        atomicMemoryFence(ordering: .releasing)
        let r = rewrite ?? NATReplyRewrite(expectedSource: NATReplyRewrite.noSource, addresses: 0, portsAndDeltas: 0, ethernetFirst8: 0,
                                           ethernetLast4AndSlot: 0)
        word(port, 1).pointee.store(r.expectedSource, ordering: .relaxed)
        word(port, 2).pointee.store(r.addresses, ordering: .relaxed)
        word(port, 3).pointee.store(r.portsAndDeltas, ordering: .relaxed)
        word(port, 4).pointee.store(r.ethernetFirst8, ordering: .relaxed)
        word(port, 5).pointee.store(r.ethernetLast4AndSlot, ordering: .relaxed)
        word(port, NATReverseMap.closedWord).pointee.store(0, ordering: .relaxed)
        let w = NATReverseMap.entryWord
        word(port, w).pointee.store(e.clientHi, ordering: .relaxed)
        word(port, w + 1).pointee.store(e.clientLo, ordering: .relaxed)
        word(port, w + 2).pointee.store(e.clientMAC << 16 | UInt64(e.clientPort), ordering: .relaxed)
        word(port, w + 3).pointee.store(e.vipHi, ordering: .relaxed)
        word(port, w + 4).pointee.store(e.vipLo, ordering: .relaxed)
        word(port, w + 5).pointee.store(e.backendHi, ordering: .relaxed)
        word(port, w + 6).pointee.store(e.backendLo, ordering: .relaxed)
        word(port, w + 7).pointee.store(UInt64(e.backendSlot) << 32 | UInt64(e.vipPort) << 16 | UInt64(e.backendPort),
                                        ordering: .relaxed)
        head.pointee.store(((old >> 2) &+ 1) << 2 | 2, ordering: .releasing)
    }

    /// Marks the entry for `port` dead (owner only).
    @inline(__always)
    func retire(_ port: UInt16) {
        let head = word(port, 0)
        let old = head.pointee.load(ordering: .relaxed)
        head.pointee.store(((old >> 2) &+ 1) << 2, ordering: .releasing)
    }

    /// Records that the backend sent FIN (or, with `reset`, RST) on the flow of `port` as
    /// published at `version` (any worker may call it; the owner reads it). Storing the version
    /// rather than a flag means a late mark can never hit the port's next flow; a live
    /// version's busy bit (bit 0) is clear, so it carries `reset`. Versions only grow and a
    /// mark only replaces a smaller one: a worker that stalled with an old version does not
    /// erase the port's next flow's mark, and a FIN after a RST leaves the RST. (A load and a
    /// store, not a compare-and-swap: inlined in every reply, a CAS loop cost the reply path
    /// two to five instructions per packet. Two marks racing within those few nanoseconds,
    /// one of them stale, could still lose the newer; its flow then ends by timeout.)
    @inline(__always)
    func markClosedByServer(_ port: UInt16, version: UInt64, reset: Bool) {
        let mark = word(port, NATReverseMap.closedWord)
        let wanted = version | (reset ? 1 : 0)
        if wanted > mark.pointee.load(ordering: .relaxed) { mark.pointee.store(wanted, ordering: .relaxed) }
    }

    /// How the backend has closed the live flow of `port`, if it has (owner only).
    @inline(__always)
    func serverClose(_ port: UInt16) -> ServerClose {
        let mark = word(port, NATReverseMap.closedWord).pointee.load(ordering: .relaxed)
        guard mark != 0, mark & ~1 == word(port, 0).pointee.load(ordering: .relaxed) else { return .open }
        return mark & 1 == 1 ? .reset : .finished
    }

    /// True when `port` carries no flow now (its entry is neither valid nor being written):
    /// a segment to it belongs to a connection that is over.
    func isIdle(_ port: UInt16) -> Bool {
        word(port, 0).pointee.load(ordering: .acquiring) & 3 == 0
    }

    /// A consistent copy of the live entry's IPv4 reply rewrite for `port` and its version, or
    /// nil (none, being rewritten, or an IPv6 flow's, whose expected source never matches).
    @inline(__always)
    func readRewrite(_ port: UInt16) -> (rewrite: NATReplyRewrite, version: UInt64)? {
        let head = word(port, 0)
        let v1 = head.pointee.load(ordering: .acquiring)
        guard v1 & 3 == 2 else { return nil }
        let r = NATReplyRewrite(expectedSource: word(port, 1).pointee.load(ordering: .relaxed),
                                addresses: word(port, 2).pointee.load(ordering: .relaxed),
                                portsAndDeltas: word(port, 3).pointee.load(ordering: .relaxed),
                                ethernetFirst8: word(port, 4).pointee.load(ordering: .relaxed),
                                ethernetLast4AndSlot: word(port, 5).pointee.load(ordering: .relaxed))
        atomicMemoryFence(ordering: .acquiring)
        guard head.pointee.load(ordering: .relaxed) == v1 else { return nil }
        return (r, v1)
    }

    /// A consistent copy of the live entry for `port` and its version, or nil (none, or being
    /// rewritten).
    @inline(__always)
    func read(_ port: UInt16) -> (entry: NATReverseEntry, version: UInt64)? {
        let head = word(port, 0)
        let v1 = head.pointee.load(ordering: .acquiring)
        guard v1 & 3 == 2 else { return nil }
        let w = NATReverseMap.entryWord
        let w2 = word(port, w + 2).pointee.load(ordering: .relaxed)
        let w7 = word(port, w + 7).pointee.load(ordering: .relaxed)
        let e = NATReverseEntry(
            clientHi: word(port, w).pointee.load(ordering: .relaxed),
            clientLo: word(port, w + 1).pointee.load(ordering: .relaxed),
            clientPort: UInt16(truncatingIfNeeded: w2), clientMAC: w2 >> 16,
            vipHi: word(port, w + 3).pointee.load(ordering: .relaxed),
            vipLo: word(port, w + 4).pointee.load(ordering: .relaxed),
            vipPort: UInt16(truncatingIfNeeded: w7 >> 16),
            backendHi: word(port, w + 5).pointee.load(ordering: .relaxed),
            backendLo: word(port, w + 6).pointee.load(ordering: .relaxed),
            backendPort: UInt16(truncatingIfNeeded: w7), backendSlot: UInt32(truncatingIfNeeded: w7 >> 32))
        atomicMemoryFence(ordering: .acquiring)
        guard head.pointee.load(ordering: .relaxed) == v1 else { return nil }
        return (e, v1)
    }
}

/// What the backend has sent to close a passthrough flow, as its replies showed.
enum ServerClose {
    /// Neither FIN nor RST yet.
    case open
    /// FIN: the backend is done sending, and may still read (a half-close).
    case finished
    /// RST: the connection is gone.
    case reset
}
