import Balancer

/// Gives every backend a small integer slot that stays the same across `PacketRoutes`
/// builds, so a flow table entry can name its backend by slot and keep it through a routes
/// swap (reload, health change, new MAC).
///
/// The key is the server's `ServerID` and its address: a server whose address changes under the
/// same name gets a new slot, and flows to the old address end as "backend gone" once it leaves
/// the snapshot. Slots are never reused within a process (a flow could still name an old one),
/// so at most `limit` distinct (server, address) pairs can ever be routed; servers beyond that
/// are reported unresolved. Used under the publisher's lock only.
final class BackendSlotRegistry {
    struct Key: Hashable {
        var id: ServerID
        var address: Endpoint
    }

    let limit: Int
    private var slots: [Key: UInt32] = [:]
    private(set) var keys: [Key] = []

    init(limit: Int) { self.limit = limit }

    /// The slot of (id, address), assigning the next one when new; nil when the limit is reached.
    func slot(for id: ServerID, address: Endpoint) -> UInt32? {
        let key = Key(id: id, address: address)
        if let slot = slots[key] { return slot }
        guard keys.count < limit else { return nil }
        let slot = UInt32(keys.count)
        slots[key] = slot
        keys.append(key)
        return slot
    }

    /// Slots assigned so far.
    var count: Int { keys.count }
}
