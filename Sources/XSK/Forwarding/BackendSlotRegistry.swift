import Balancer

/// Gives every backend a small integer slot that stays the same across `PacketRoutes`
/// builds, so a flow table entry can name its backend by slot and keep it through a routes
/// swap (reload, health change, new MAC).
///
/// The key is the server's `ServerID` and its address: a server whose address changes under the
/// same name gets a new slot, and flows to the old address end as "backend gone" once it leaves
/// the snapshot.
///
/// Slots are reused, so backends may come and go for the life of the process; at most `limit`
/// are held at once (servers beyond that are reported unresolved). A slot that leaves the
/// routes is *retired* with the generation it first went missing from; it is free again only
/// when no flow can still name it and its traffic has been counted:
/// 1. every worker has swept its whole flow table while holding routes of that generation or
///    newer (`FlowSweepProgress`), which ends every flow of a backend missing from its routes;
/// 2. after that was seen, a counter flush has started and finished, so the last traffic of
///    the old backend is not booked to the next one.
/// Used under the publisher's lock only.
final class BackendSlotRegistry {
    struct Key: Hashable {
        var id: ServerID
        var address: Endpoint
    }

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

    /// The slot of (id, address): its own if it has one, else a free one, else the next new
    /// one; nil when `limit` slots are taken.
    func slot(for id: ServerID, address: Endpoint) -> UInt32? {
        let key = Key(id: id, address: address)
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

    /// Slots assigned so far, free ones included: routes size their backend array by it.
    var count: Int { keys.count }

    /// Slots held by a backend now (in routes or retired).
    var held: Int { keys.count - free.count }

    /// Slots retired and not yet free.
    var retiredCount: Int { retired.count }

    /// After routes of `generation` were built: retires the held slots they do not use, and
    /// un-retires those they use again (the same server back before its slot was freed).
    func retire(unusedBy used: Set<UInt32>, generation: UInt64) {
        for slot in used { retired[slot] = nil }
        for (slot, key) in keys.enumerated() where key != nil && !used.contains(UInt32(slot)) {
            if retired[UInt32(slot)] == nil { retired[UInt32(slot)] = Retired(generation: generation) }
        }
    }

    /// Frees the retired slots that are safe to reuse: `cleanThrough` is the oldest generation
    /// every worker has swept its table under (nil: no worker, no flow), `flushEpoch` counts
    /// counter flushes started. Returns how many were freed.
    @discardableResult
    func reclaim(cleanThrough: UInt64?, flushEpoch: UInt64) -> Int {
        var freed = 0
        for (slot, r) in retired {
            if cleanThrough.map({ $0 >= r.generation }) ?? true {
                guard let at = r.cleanAtFlush else {
                    retired[slot]?.cleanAtFlush = flushEpoch
                    continue
                }
                // A flush that started after the workers were seen clean has finished once
                // another one has started (flushes run one at a time).
                guard flushEpoch >= at &+ 2 else { continue }
                retired[slot] = nil
                if let key = keys[Int(slot)] { slots[key] = nil }
                keys[Int(slot)] = nil
                free.append(slot)
                freed += 1
            }
        }
        return freed
    }

    /// True when `reclaim` with these arguments would free a slot now.
    func canReclaim(cleanThrough: UInt64?, flushEpoch: UInt64) -> Bool {
        retired.values.contains { r in
            (cleanThrough.map { $0 >= r.generation } ?? true) && r.cleanAtFlush.map { flushEpoch >= $0 &+ 2 } == true
        }
    }
}
