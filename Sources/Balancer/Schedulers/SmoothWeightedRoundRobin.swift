/// nginx's smooth weighted round robin: exact proportions over every cycle of `sum(weights)`
/// picks, with each server's turns spread out rather than bunched (weights {a:5, b:1, c:1}
/// give a a b a c a a, not a a a a a b c).
///
/// Each pick, every selectable server adds its weight to its running `current`; the server with
/// the largest `current` wins (the first in `selectable` order on ties) and loses the total
/// weight. Over a cycle every `current` returns to zero, so the cycle repeats exactly.
///
/// One instance per data-path thread and frontend, sized for one `FrontendRoute`. `pick` reads
/// the route it is handed and writes only the instance's own buffer in place: no allocation,
/// no lock. Servers of weight 0 or less are never chosen.
public struct SmoothWeightedRoundRobin: Sendable {
    /// Running weight per server, indexed like `route.servers`.
    @usableFromInline var current: [Int]

    /// State for a route with `serverCount` servers (`route.servers.count`).
    public init(serverCount: Int) {
        current = [Int](repeating: 0, count: serverCount)
    }

    /// The next server (an index into `route.servers`) or nil when no selectable server has a
    /// positive weight. A route of another size than the one this state was built for resets
    /// the state first (an allocation, only on such misuse).
    @inlinable
    public mutating func pick(in route: FrontendRoute) -> Int? {
        if current.count != route.servers.count {
            self = SmoothWeightedRoundRobin(serverCount: route.servers.count)
        }
        return current.withUnsafeMutableBufferPointer { current -> Int? in
            var best = -1
            var bestCurrent = Int.min
            var total = 0
            for i in route.selectable {
                let weight = route.servers[i].weight
                guard weight > 0 else { continue }
                total &+= weight
                let c = current[i] &+ weight
                current[i] = c
                if c > bestCurrent {
                    bestCurrent = c
                    best = i
                }
            }
            guard best >= 0 else { return nil }
            current[best] &-= total
            return best
        }
    }

    /// One whole cycle of smooth weighted round robin over `weights` (reduced by their common
    /// divisor), as indices into `weights`: what `pick` yields cycle after cycle when every
    /// server is selectable. Nil when the cycle would be longer than `limit` entries (or cost
    /// more than `limit` × 64 steps to build); empty when no weight is positive.
    ///
    /// Built once per snapshot, so data-path threads can share one cycle and one cursor: the
    /// interleaving then holds across threads, not only within each.
    public static func cycle(weights: [Int], limit: Int = Int.max) -> [Int]? {
        let positive = weights.map { max(0, $0) }
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        let g = positive.reduce(0, gcd)
        guard g > 0 else { return [] }
        let reduced = positive.map { $0 / g }
        let total = reduced.reduce(0, +)
        guard total <= limit, limit == Int.max || total.multipliedReportingOverflow(by: reduced.count).partialValue <= limit * 64
        else { return nil }
        var current = [Int](repeating: 0, count: reduced.count)
        var out: [Int] = []
        out.reserveCapacity(total)
        for _ in 0..<total {
            var best = -1
            for i in reduced.indices where reduced[i] > 0 {
                current[i] += reduced[i]
                if best < 0 || current[i] > current[best] { best = i }
            }
            current[best] -= total
            out.append(best)
        }
        return out
    }

    /// `cycle(weights:)`, at most about `length` entries long: when the exact cycle (after the
    /// weights' common divisor) is longer, it is built from the reduced weights scaled down to
    /// `length`, each positive one kept at least 1, so the proportions hold to within a step.
    public static func cycle(weights: [Int], scaledTo length: Int) -> [Int] {
        if let exact = cycle(weights: weights, limit: length) { return exact }
        let positive = weights.map { max(0, $0) }
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        let g = max(1, positive.reduce(0, gcd))
        let total = positive.reduce(0) { $0 + $1 / g }
        return cycle(weights: positive.map { $0 == 0 ? 0 : max(1, $0 / g * length / total) }) ?? []
    }
}
