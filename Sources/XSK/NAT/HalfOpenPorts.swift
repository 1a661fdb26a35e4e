/// Passthrough: the NAT ports this worker gave to flows opened by a SYN, oldest first, so that
/// when its ports run out the oldest half-open flow can give its port up (as conntrack's early
/// drop does) instead of every new client being refused.
///
/// Without it a SYN flood from spoofed sources held every port until `syn_timeout` (4 536
/// ports over 5 s absorb about 900 SYNs a second) and real clients found none. Entries go
/// stale when a flow is established or ends; `ForwarderCore.reclaimHalfOpenPort` skips those,
/// and a full queue is compacted to its live entries (at most one per port, so at least half
/// of it frees). A value over `HalfOpenPortsStorage`, as `NATPortPool` is over its storage:
/// one push per new flow and no reference counting.
struct HalfOpenPorts {
    @usableFromInline let ring: UnsafeMutablePointer<UInt16>
    @usableFromInline let capacity: Int
    @usableFromInline var head = 0
    private(set) var count = 0

    init(storage: HalfOpenPortsStorage) {
        ring = storage.ring
        capacity = storage.capacity
    }

    var isFull: Bool { count == capacity }

    /// Queues `port` as the newest; a full queue must be compacted first (else the oldest goes).
    mutating func push(_ port: UInt16) {
        if count == capacity {
            head = head &+ 1 == capacity ? 0 : head &+ 1
            count &-= 1
        }
        var tail = head &+ count
        if tail >= capacity { tail &-= capacity }
        ring[tail] = port
        count &+= 1
    }

    /// Takes the oldest port, or nil.
    mutating func popOldest() -> UInt16? {
        guard count > 0 else { return nil }
        let port = ring[head]
        head = head &+ 1 == capacity ? 0 : head &+ 1
        count &-= 1
        return port
    }

    /// Puts `port` back as the oldest (it is still too young to reclaim).
    mutating func restoreOldest(_ port: UInt16) {
        head = head == 0 ? capacity &- 1 : head &- 1
        ring[head] = port
        count &+= 1
    }

    /// Keeps, in order, only the entries `isLive` accepts.
    mutating func compact(keeping isLive: (UInt16) -> Bool) {
        var kept = 0
        for k in 0..<count {
            var from = head &+ k
            if from >= capacity { from &-= capacity }
            let port = ring[from]
            guard isLive(port) else { continue }
            var to = head &+ kept
            if to >= capacity { to &-= capacity }
            ring[to] = port
            kept &+= 1
        }
        count = kept
    }
}

/// Owns a `HalfOpenPorts` ring: twice the worker's ports, so that compacting (live entries are
/// at most one per port) always frees half of it.
final class HalfOpenPortsStorage {
    let ring: UnsafeMutablePointer<UInt16>
    let capacity: Int

    init(ports: Int) {
        capacity = max(2 * ports, 2)
        ring = .allocate(capacity: capacity)
    }

    deinit { ring.deallocate() }
}
