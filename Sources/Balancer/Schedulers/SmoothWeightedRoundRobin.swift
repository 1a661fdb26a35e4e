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
}
