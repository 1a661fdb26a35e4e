import Balancer

/// Gives things the packet path names in flow entries a small integer that stays the same
/// across `PacketRoutes` builds: backends (a flow keeps its backend through a routes swap)
/// and frontends (a flow's key holds its frontend's index, which must keep meaning the same
/// VIP while any flow holds it, whatever frontends a reload adds or removes).
///
/// Slots are reused, so backends and frontends may come and go for the life of the process;
/// at most `limit` are held at once. A slot that leaves the routes is *retired* with the
/// generation it first went missing from; it is free again only when no flow can name it and
/// its traffic has been counted:
/// 1. every worker has swept its whole flow table while holding routes of that generation or
///    newer (`FlowSweepProgress`), which ends every flow whose backend or frontend is missing
///    from its routes;
/// 2. after that was seen, a counter flush has started and finished, so the last traffic of
///    the old backend is not booked to the next one.
/// Used under the publisher's lock only.
final class SlotRegistry<Key: Hashable> {
    /// A slot out of the routes since `generation`; `cleanAtFlush` is the flush epoch when the
    /// workers were first seen clean of it.
    private struct Retired {
        var generation: UInt64
        var cleanAtFlush: UInt64?
    }

    let limit: Int
    private var slots: [Key: UInt32] = [:]
    /// Every slot ever assigned (the high-water mark); nil where the slot is free.
    private var keys: [Key?] = []
    private var free: [UInt32] = []
    private var retired: [UInt32: Retired] = [:]

    init(limit: Int) { self.limit = limit }

    /// The slot of `key`: its own if it has one, else a free one, else the next new one; nil
    /// when `limit` slots are taken.
    func slot(for key: Key) -> UInt32? {
        if let slot = slots[key] { return slot }
        let slot: UInt32
        if let reused = free.popLast() {
            slot = reused
            keys[Int(slot)] = key
        } else {
            guard keys.count < limit else { return nil }
            slot = UInt32(keys.count)
            keys.append(key)
        }
        slots[key] = slot
        return slot
    }

    /// Slots assigned so far, free ones included: routes size their arrays by it.
    var count: Int { keys.count }

    /// Slots held now (in routes, or retired and not yet free).
    var held: Int { keys.count - free.count }

    /// True when `slot` is held: assigned to a key, in routes or retired and not yet free.
    func isHeld(_ slot: Int) -> Bool { slot < keys.count && keys[slot] != nil }

    /// After routes of `generation` were built: retires the held slots they do not use, and
    /// un-retires those they use again (the same key back before its slot was freed).
    func retire(unusedBy used: Set<UInt32>, generation: UInt64) {
        for slot in used { retired[slot] = nil }
        for (slot, key) in keys.enumerated() where key != nil && !used.contains(UInt32(slot)) {
            if retired[UInt32(slot)] == nil { retired[UInt32(slot)] = Retired(generation: generation) }
        }
    }

    /// Notes the flush epoch at which each retired slot is first seen clean: `cleanThrough` is
    /// the oldest generation every worker has swept its table under (nil: no worker, no flow),
    /// `flushEpoch` counts counter flushes started.
    private func markClean(cleanThrough: UInt64?, flushEpoch: UInt64) {
        for (slot, r) in retired where r.cleanAtFlush == nil && (cleanThrough.map { $0 >= r.generation } ?? true) {
            retired[slot]?.cleanAtFlush = flushEpoch
        }
    }

    /// True for a slot seen clean at `at` once a flush that started after that has finished,
    /// which is when another one has started (flushes run one at a time).
    private static func flushed(since at: UInt64?, epoch: UInt64) -> Bool { at.map { epoch >= $0 &+ 2 } ?? false }

    /// Frees the retired slots that are safe to reuse (see the type's comment).
    func reclaim(cleanThrough: UInt64?, flushEpoch: UInt64) {
        markClean(cleanThrough: cleanThrough, flushEpoch: flushEpoch)
        for (slot, r) in retired where Self.flushed(since: r.cleanAtFlush, epoch: flushEpoch) {
            retired[slot] = nil
            if let key = keys[Int(slot)] { slots[key] = nil }
            keys[Int(slot)] = nil
            free.append(slot)
        }
    }

    /// True when `reclaim` with these arguments would free a slot now. Notes clean slots as
    /// `reclaim` does, so polling this (with flushes running) is enough for it to turn true.
    func canReclaim(cleanThrough: UInt64?, flushEpoch: UInt64) -> Bool {
        markClean(cleanThrough: cleanThrough, flushEpoch: flushEpoch)
        return retired.values.contains { Self.flushed(since: $0.cleanAtFlush, epoch: flushEpoch) }
    }
}

/// What a backend slot stands for: one server, at one address, as a backend of one frontend
/// (its VIP).
/// - A server whose address changes under the same name gets a new slot, and flows to the old
///   address end as "backend gone" once it leaves the snapshot.
/// - A pool shared by two frontends has slots per frontend, so each frontend's traffic is
///   counted to that frontend (the slot's counters are the only per-flow counters).
struct BackendKey: Hashable {
    var frontend: Endpoint
    var id: ServerID
    var address: Endpoint
}

/// Backend slots (at most `PacketRoutesPublisher.maxBackendSlots` (frontend, server) pairs at once).
typealias BackendSlotRegistry = SlotRegistry<BackendKey>

/// Frontend indices, by VIP (at most `PacketRoutes.maxFrontends` at once).
typealias FrontendIndexRegistry = SlotRegistry<Endpoint>
