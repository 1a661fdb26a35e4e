/// The clients of one frontend that wait in one event loop for a place at a server with
/// `max_connections`, oldest first (HAProxy's queue, per loop: each loop serves its own
/// clients, and a loop that frees a place wakes the others that hold some).
///
/// Entries name a connection slot and its generation. A connection that ended while it waited
/// (its client left, or `queue_timeout` passed) is not searched for and removed: its entry is
/// skipped once it reaches the front.
struct WaitQueue {
    private var entries: [UInt64] = []
    private var head = 0

    /// No entry, stale or not.
    var isEmpty: Bool { head == entries.count }

    /// Entries, stale ones included.
    var count: Int { entries.count - head }

    /// The oldest entry.
    var first: (index: Int, generation: UInt32)? {
        guard head < entries.count else { return nil }
        let entry = entries[head]
        return (Int(truncatingIfNeeded: entry & 0xFFFF_FFFF), UInt32(truncatingIfNeeded: entry >> 32))
    }

    /// Adds the connection in slot `index` (of `generation`) at the back.
    mutating func append(index: Int, generation: UInt32) {
        entries.append(UInt64(generation) << 32 | UInt64(UInt32(truncatingIfNeeded: index)))
    }

    /// Drops the oldest entry; the storage is kept for the next wait.
    mutating func removeFirst() {
        guard head < entries.count else { return }
        head += 1
        if head == entries.count {
            entries.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }

    /// Drops every entry.
    mutating func removeAll() {
        entries.removeAll(keepingCapacity: true)
        head = 0
    }
}
