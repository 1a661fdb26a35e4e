/// One worker's share of the passthrough NAT ports: a FIFO of free ports allocated once.
///
/// Worker `i` of `n` owns the `i`-th of `n` contiguous, disjoint slices of `nat_ports`, so no
/// two workers ever hand out the same port and allocation needs no atomic at all. A port goes
/// back to the queue only when its flow ends, and to the back of it: the longest-free port is
/// reused first, which keeps a fresh flow off a port whose previous connection the backend may
/// still hold in TIME_WAIT for as long as the slice allows.
public struct NATPortPool {
    @usableFromInline let ring: UnsafeMutablePointer<UInt16>
    @usableFromInline let size: Int
    @usableFromInline var head = 0
    /// Free ports now.
    public internal(set) var available: Int
    /// The ports this worker owns.
    public let range: ClosedRange<UInt16>?

    init(storage: NATPortStorage) {
        ring = storage.ring
        size = storage.size
        available = storage.size
        range = storage.range
    }

    /// The `index`-th of `count` disjoint slices of `ports` (nil when there are more workers
    /// than ports).
    public static func slice(of ports: ClosedRange<UInt16>, worker index: Int, of count: Int) -> ClosedRange<UInt16>? {
        precondition(count > 0 && index >= 0 && index < count, "worker \(index) of \(count)")
        let total = Int(ports.upperBound) - Int(ports.lowerBound) + 1
        let low = Int(ports.lowerBound) + total * index / count
        let high = Int(ports.lowerBound) + total * (index + 1) / count - 1
        guard low <= high else { return nil }
        return UInt16(low)...UInt16(high)
    }

    /// Takes a free port, or 0 when the slice is exhausted.
    @inline(__always)
    mutating func allocate() -> UInt16 {
        guard available > 0 else { return 0 }
        let port = ring[head]
        head = head &+ 1 == size ? 0 : head &+ 1
        available &-= 1
        return port
    }

    /// Takes `ports` out of the queue (ports a takeover's flows hold), keeping the order of
    /// the rest. Not for the packet path: it walks the whole queue.
    mutating func remove(_ ports: PortSet) {
        var kept = 0
        for k in 0..<available {
            var i = head &+ k
            if i >= size { i &-= size }
            let port = ring[i]
            if ports.contains(port) { continue }
            var j = head &+ kept
            if j >= size { j &-= size }
            ring[j] = port
            kept &+= 1
        }
        available = kept
    }

    /// The free ports in the order they will be handed out (for a takeover).
    var queue: [UInt16] {
        (0..<available).map { k in
            var i = head &+ k
            if i >= size { i &-= size }
            return ring[i]
        }
    }

    /// Makes `ports` the queue, in that order (a takeover's: the queue of the worker it
    /// replaces, so the longest-free port still goes first). False, changing nothing, unless
    /// they are distinct ports of this pool's range.
    mutating func replaceQueue(with ports: [UInt16]) -> Bool {
        guard let range, ports.count <= size, Set(ports).count == ports.count,
              ports.allSatisfy({ range.contains($0) }) else { return false }
        head = 0
        for (i, port) in ports.enumerated() { ring[i] = port }
        available = ports.count
        return true
    }

    /// Returns `port` (one this pool handed out) to the back of the queue.
    @inline(__always)
    mutating func release(_ port: UInt16) {
        var tail = head &+ available
        if tail >= size { tail &-= size }
        ring[tail] = port
        available &+= 1
    }
}

/// Owns a `NATPortPool`'s queue.
final class NATPortStorage {
    let ring: UnsafeMutablePointer<UInt16>
    let size: Int
    let range: ClosedRange<UInt16>?

    /// The ports of `range` in order, the first handed out being the `start`-th (modulo their
    /// count), then on around. Port 0 is never handed out (0 means "exhausted" to `allocate`,
    /// and is no valid port).
    init(range: ClosedRange<UInt16>?, start: Int = 0) {
        let usable = range.flatMap { $0.upperBound == 0 ? nil : max(1, $0.lowerBound)...$0.upperBound }
        self.range = usable
        size = usable.map { Int($0.upperBound) - Int($0.lowerBound) + 1 } ?? 0
        ring = .allocate(capacity: max(size, 1))
        if let usable {
            let first = size > 0 ? (start % size + size) % size : 0
            var i = 0
            for port in usable {
                ring[(i + size - first) % size] = port
                i += 1
            }
        }
    }

    deinit { ring.deallocate() }
}
