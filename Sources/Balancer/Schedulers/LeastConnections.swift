import Synchronization

/// Weighted least connections: the selectable server with the fewest current connections per
/// unit of weight (`ServerCounters.currentConnections / weight`).
///
/// Ratios are compared by cross-multiplication (`a.conns * b.weight < b.conns * a.weight`), so
/// no division and no rounding. Ties are broken by a rotating start: the scan begins one past
/// the previous pick, so a burst of new connections arriving before the counters move (they
/// count a connection only once the data path records it) is spread over the tied servers
/// instead of all landing on the first one.
///
/// The counters are relaxed atomics shared by all threads, so the choice is as fresh as the
/// last connect/close any thread recorded; that is the usual least-connections contract.
public struct LeastConnections: Sendable {
    /// Position in `route.selectable` where the next scan starts.
    @usableFromInline var cursor: Int = 0

    public init() {}

    /// The least loaded selectable server (an index into `route.servers`), or nil when no
    /// selectable server has a positive weight.
    @inlinable
    public mutating func pick(in route: FrontendRoute) -> Int? {
        let n = route.selectable.count
        guard n > 0 else { return nil }
        if cursor >= n { cursor = 0 }
        var best = -1
        var bestPosition = 0
        var bestConnections: Int64 = 0
        var bestWeight: Int64 = 0
        var position = cursor
        for _ in 0..<n {
            let i = route.selectable[position]
            let weight = Int64(route.servers[i].weight)
            if weight > 0 {
                let connections = max(0, route.servers[i].counters.currentConnections.load(ordering: .relaxed))
                if best < 0 || connections &* bestWeight < bestConnections &* weight {
                    best = i
                    bestPosition = position
                    bestConnections = connections
                    bestWeight = weight
                }
            }
            position += 1
            if position == n { position = 0 }
        }
        guard best >= 0 else { return nil }
        cursor = bestPosition + 1 == n ? 0 : bestPosition + 1
        return best
    }
}
