import CXDP

/// A worker's connection table: fixed-size `FlowEntry`s in one buffer allocated once, open
/// addressing with linear probing over a bounded window.
///
/// Layout and invariants:
/// - `slotCount` is the power of two at or above 2 × `capacity` (load at most 1/2: with linear
///   probing and a 32-slot window, about one insert in a million finds its window full at that
///   load, then an idle flow is evicted or the SYN dropped); a key's home slot is the top
///   bits of a multiplicative hash (seeded per table), and the key can only live in the
///   `window` slots starting there (wrapping). Lookups scan the whole window, so removal just
///   empties a slot (no tombstones) and lookups never degrade with churn.
/// - At most `capacity` flows are held (`connection_tracker_capacity`). Inserting when the table
///   is full, or when the key's window has no empty slot, takes the window's least recently seen
///   entry if it has been idle at least `minIdleForEviction`; otherwise the insert fails and the
///   forwarder drops the SYN as "table full". A SYN flood therefore evicts idle and half-open
///   flows, never a busy connection, and memory never grows.
///
/// - A bitmap beside the entries marks the occupied slots (one bit a slot, set by `insert`,
///   cleared by `remove`), so `occupiedSlots()` finds a takeover's flows without reading every
///   slot's cache line (128 MiB at a capacity of a million).
///
/// Not thread-safe: one table belongs to one worker. Copies of this struct share the buffer;
/// `FlowTableStorage` owns it.
public struct FlowTable {
    @usableFromInline let entries: UnsafeMutablePointer<FlowEntry>
    /// One bit a slot, set while it holds a flow.
    @usableFromInline let occupied: UnsafeMutablePointer<UInt64>
    public let slotCount: Int
    @usableFromInline let mask: Int
    @usableFromInline let shift: UInt64
    public let capacity: Int
    public let window: Int
    @usableFromInline let seed: UInt64
    /// Flows held now.
    public internal(set) var count: Int = 0

    init(storage: FlowTableStorage, capacity: Int, window: Int, seed: UInt64) {
        entries = storage.entries
        occupied = storage.occupied
        slotCount = storage.slotCount
        mask = storage.slotCount - 1
        shift = UInt64(64 - storage.slotCount.trailingZeroBitCount)
        self.capacity = capacity
        self.window = min(window, storage.slotCount)
        self.seed = seed
    }

    /// The key's home slot: the key folded into one word (for IPv4 `lo`'s top half is the
    /// constant 0xffff, so `key << 32` keeps every bit; IPv6's `hi` is added in, and for IPv4
    /// that term folds away), then multiply–xorshift–multiply, whose top bits depend on every
    /// input bit. One multiply is not enough: with table seeds from 2 MiB-aligned addresses,
    /// keys that differ only in the port then collide many times more often than at random
    /// (`FlowTableTests` holds the spread to random's).
    @inline(__always)
    func home(hi: UInt64, lo: UInt64, key: UInt32) -> Int {
        let x = (lo ^ seed ^ UInt64(key) << 32) &+ hi &* 0xFF51_AFD7_ED55_8CCD
        var h = (x ^ x >> 32) &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 29
        h = h &* 0xC2B2_AE3D_27D4_EB4F
        return Int(truncatingIfNeeded: h &>> shift)
    }

    /// Asks the CPU to start loading the cache line of `home` (the first slot `find` reads).
    @inline(__always)
    func prefetch(home: Int) { cxdp_prefetch(entries + home) }

    /// The slot holding the key, or -1.
    @inline(__always)
    func find(hi: UInt64, lo: UInt64, key: UInt32, home: Int) -> Int {
        // Most keys sit in their home slot: that one is checked before the loop is set up.
        // An empty slot's key is `FlowEntry.noKey`, which no flow has: no state check.
        let e = entries + home
        if _fastPath(e.pointee.clientLo == lo && e.pointee.portAndVIP == key && e.pointee.clientHi == hi) {
            return home
        }
        return Self.find(hi: hi, lo: lo, key: key, after: home, entries: entries, mask: mask, window: window)
    }

    /// `find` for a key of an IPv4 frontend: the home slot is matched on address and key
    /// alone. Every flow of an IPv4 frontend has an IPv4 client (`clientHi` 0): an IPv4
    /// packet's source is IPv4, and an IPv6 packet never reaches an IPv4 frontend, since the
    /// parser refuses IPv4-mapped IPv6 addresses. So the key, which holds the frontend,
    /// implies the high half.
    @inline(__always)
    func findIPv4(lo: UInt64, key: UInt32, home: Int) -> Int {
        let e = entries + home
        if _fastPath(e.pointee.clientLo == lo && e.pointee.portAndVIP == key) { return home }
        return Self.find(hi: 0, lo: lo, key: key, after: home, entries: entries, mask: mask, window: window)
    }

    /// `find` past the home slot, through the rest of the window (static, so the call passes
    /// three words rather than a copy of the table).
    @inline(never)
    static func find(hi: UInt64, lo: UInt64, key: UInt32, after home: Int,
                     entries: UnsafeMutablePointer<FlowEntry>, mask: Int, window: Int) -> Int {
        var i = (home &+ 1) & mask
        var left = window &- 1
        while left > 0 {
            let e = entries + i
            if e.pointee.clientLo == lo, e.pointee.portAndVIP == key, e.pointee.clientHi == hi {
                return i
            }
            i = (i &+ 1) & mask
            left &-= 1
        }
        return -1
    }

    /// Whether the key sits between its home and `slot` (the empty one `slotForInsert` found),
    /// which is where it must be in a table that only ever had keys added, each at the first
    /// empty slot from its home: a takeover's import into a worker that never forwarded. It
    /// reads only the slots `slotForInsert` just read, where `find` reads the whole window.
    func holds(hi: UInt64, lo: UInt64, key: UInt32, home: Int, before slot: Int) -> Bool {
        var i = home
        while i != slot {
            let e = entries + i
            if e.pointee.clientLo == lo, e.pointee.portAndVIP == key, e.pointee.clientHi == hi { return true }
            i = (i &+ 1) & mask
        }
        return false
    }

    /// A slot for a new key homed at `home`: an empty one in the window when the table is below
    /// capacity, else the window's least recently seen half-open or closing entry if idle for
    /// at least `minIdle` nanoseconds, else its least recently seen established entry if idle
    /// that long (the caller must end that flow before reusing the slot), else -1. Half-open
    /// flows go first, as conntrack's early drop takes unreplied ones: a SYN flood then
    /// replaces its own entries before a quiet keep-alive connection.
    @inline(__always)
    func slotForInsert(home: Int, now: UInt64, minIdle: UInt64) -> Int {
        var i = home
        var oldest = -1, oldestSeen = UInt64.max      // established
        var loose = -1, looseSeen = UInt64.max        // half-open or closing
        let full = count >= capacity
        for _ in 0..<window {
            let e = entries + i
            let state = e.pointee.state
            let seen = e.pointee.lastSeen
            if state == .empty {
                if !full { return i }
            } else if state != .established {
                if seen < looseSeen { loose = i; looseSeen = seen }
            } else if seen < oldestSeen {
                oldest = i
                oldestSeen = seen
            }
            i = (i &+ 1) & mask
        }
        if loose >= 0, now &- looseSeen >= minIdle || looseSeen > now { return loose }
        guard oldest >= 0, now &- oldestSeen >= minIdle || oldestSeen > now else { return -1 }
        return oldest
    }

    /// The entry at `slot`.
    @inline(__always)
    public func entry(at slot: Int) -> UnsafeMutablePointer<FlowEntry> { entries + slot }

    /// Stores a new flow in an empty `slot`.
    @inline(__always)
    mutating func insert(_ entry: FlowEntry, at slot: Int) {
        entries[slot] = entry
        occupied[slot &>> 6] |= 1 &<< UInt64(slot & 63)
        count &+= 1
    }

    /// Empties an occupied `slot`.
    @inline(__always)
    mutating func remove(at slot: Int) {
        entries[slot].state = .empty
        entries[slot].portAndVIP = FlowEntry.noKey
        occupied[slot &>> 6] &= ~(1 &<< UInt64(slot & 63))
        count &-= 1
    }

    /// The slots holding a flow, in slot order (from the bitmap: the entries are not read).
    func occupiedSlots() -> [Int] {
        var slots: [Int] = []
        slots.reserveCapacity(count)
        for w in 0..<max(1, slotCount / 64) {
            var bits = occupied[w]
            while bits != 0 {
                slots.append(w &* 64 &+ bits.trailingZeroBitCount)
                bits &= bits &- 1
            }
        }
        return slots
    }
}

/// Owns the memory of one `FlowTable` (huge-page backed, see `HugePageMemory`) and frees it
/// exactly once.
public final class FlowTableStorage {
    let entries: UnsafeMutablePointer<FlowEntry>
    /// The occupancy bitmap (`FlowTable.occupiedSlots()`), zeroed.
    let occupied: UnsafeMutablePointer<UInt64>
    let slotCount: Int
    private let memory: HugePageMemory

    /// Allocates (and zeroes) room for `capacity` flows: the next power of two ≥ 2 × capacity
    /// (one 64-byte cache line a slot, so 128 to 256 bytes per flow of capacity).
    init(capacity: Int) {
        precondition(MemoryLayout<FlowEntry>.stride == 64, "a FlowEntry must fill exactly one cache line")
        let wanted = max(16, 2 * capacity)
        var slots = 1
        while slots < wanted { slots <<= 1 }
        slotCount = slots
        memory = HugePageMemory(byteCount: slots * MemoryLayout<FlowEntry>.stride)
        entries = memory.base.bindMemory(to: FlowEntry.self, capacity: slots)
        entries.initialize(repeating: FlowEntry(clientHi: 0, clientLo: 0, lastSeen: 0, backendSlot: 0,
                                                portAndVIP: FlowEntry.noKey, natPort: 0, state: .empty), count: slots)
        occupied = .allocate(capacity: max(1, slots / 64))
        occupied.initialize(repeating: 0, count: max(1, slots / 64))
    }

    deinit {
        occupied.deallocate()
        entries.deinitialize(count: slotCount)
        memory.release()
    }
}
