/// Passthrough: the NAT ports this worker gave to flows opened by a SYN, oldest first, so that
/// when its ports run out the oldest half-open flow can give its port up (as conntrack's early
/// drop does) instead of every new client being refused.
///
/// Without it a SYN flood from spoofed sources held every port until `syn_timeout` (4 536
/// ports over 5 s absorb about 900 SYNs a second) and real clients found none. Entries go
/// stale when a flow is established or ends; `ForwarderCore.reclaimHalfOpenPort` skips those.
/// One push per new flow and at most one pop per port handed out: nothing on the steady path.
final class HalfOpenPorts {
    private let ring: UnsafeMutablePointer<UInt16>
    private let capacity: Int
    private var head = 0
    private(set) var count = 0

    /// A queue for a worker with `ports` NAT ports (a port is queued at most once per flow, and
    /// a worker has at most that many flows with a port).
    init(ports: Int) {
        capacity = max(ports, 1)
        ring = .allocate(capacity: capacity)
    }

    deinit { ring.deallocate() }

    /// Queues `port` as the newest; when full, the oldest entry is dropped (it is stale: a
    /// port cannot be held twice).
    func push(_ port: UInt16) {
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
    func popOldest() -> UInt16? {
        guard count > 0 else { return nil }
        let port = ring[head]
        head = head &+ 1 == capacity ? 0 : head &+ 1
        count &-= 1
        return port
    }

    /// Puts `port` back as the oldest (it is still too young to reclaim).
    func restoreOldest(_ port: UInt16) {
        head = head == 0 ? capacity &- 1 : head &- 1
        ring[head] = port
        count &+= 1
    }
}
