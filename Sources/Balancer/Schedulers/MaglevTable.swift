/// A Maglev consistent-hash lookup table (Eisenbud et al., "Maglev: A Fast and Reliable
/// Software Network Load Balancer", NSDI 2016, section 3.4), with weights.
///
/// What it gives: a flow hash maps to a backend through one array read, every backend owns a
/// share of the `M` slots proportional to its weight, and when a backend leaves or joins only
/// about its own share of slots changes owner, so most established placements survive a pool
/// change. The table is a pure function of the (key, weight) list and `M`: two balancers with
/// the same configuration build identical tables and place a connection alike.
///
/// Population: each backend gets a permutation of the slots from two independent stable hashes
/// of its key (`StableHash.maglevOffsetKey`, `StableHash.maglevSkipKey`):
/// `offset = h1 mod M`, `skip = h2 mod (M - 1) + 1`, `permutation[j] = (offset + j * skip) mod M`.
/// `M` prime makes every `skip` coprime with `M`, so each permutation visits every slot. The
/// backends then take turns; on its turn a backend claims the next slot of its permutation that
/// is still empty, until all `M` slots are owned.
///
/// Weights (the method of Katran's "Maglev v2"): turns are rationed by a credit. In every pass
/// over the backends, each one adds its weight to its credit; a backend whose credit reaches
/// the largest weight spends that much and takes a turn. The heaviest backends take a turn in
/// every pass and a backend of weight `w` in `w / maxWeight` of them, so the slot shares follow
/// the weights while the turn order stays interleaved (which is what keeps disruption minimal).
/// With equal weights it is exactly the paper's round robin: shares differ by at most one slot.
/// Backends of weight 0 or less never take a turn and own no slot.
public struct MaglevTable: Sendable, Equatable {
    /// Default table size: prime, and over 65 × a 1000-server pool, so shares stay within
    /// about 1.5% of the ideal even for the largest pools we expect.
    public static let defaultSize = 65_537

    /// Backend index (position in the `backends` list given to `init`) for each table slot;
    /// -1 everywhere when no backend has a positive weight.
    public let entries: [Int32]

    /// How many backends the table was built over (including any of weight 0).
    public let backendCount: Int

    /// True when `size` can be a Maglev table size: a prime in 2...Int32.max.
    public static func isValidSize(_ size: Int) -> Bool {
        guard size >= 2, size <= Int(Int32.max) else { return false }
        if size < 4 { return true }
        if size % 2 == 0 || size % 3 == 0 { return false }
        var d = 5
        while d * d <= size {
            if size % d == 0 || size % (d + 2) == 0 { return false }
            d += 6
        }
        return true
    }

    /// Builds the table for `backends` (a stable key such as "ip:port" and a weight each),
    /// deterministically: two processes given the same input build the same table.
    ///
    /// `size` must be prime (see `isValidSize`), or the permutations would not cover the table;
    /// a non-prime size is a programming error and stops the process with a message saying so.
    /// Costs O(M log M) for equal weights; meant for the control plane, never the data path.
    public init(backends: [(key: String, weight: Int)], size: Int = MaglevTable.defaultSize) {
        precondition(MaglevTable.isValidSize(size),
                     "MaglevTable size \(size) must be a prime in 2...\(Int32.max) (the default 65537 is)")
        backendCount = backends.count
        let m = size
        let weights = backends.map { max(0, $0.weight) }
        let maxWeight = weights.max() ?? 0
        guard maxWeight > 0 else {
            entries = Array(repeating: -1, count: m)
            return
        }
        // Per backend: its permutation as (next slot, step); advancing is one add and compare.
        var next = [Int](repeating: 0, count: backends.count)
        var skip = [Int](repeating: 0, count: backends.count)
        for (i, backend) in backends.enumerated() {
            let h1 = StableHash.text(backend.key, key: StableHash.maglevOffsetKey)
            let h2 = StableHash.text(backend.key, key: StableHash.maglevSkipKey)
            next[i] = Int(h1 % UInt64(m))
            skip[i] = Int(h2 % UInt64(m - 1)) + 1
        }
        // Only backends that ever take a turn are walked in the passes.
        let active = weights.indices.filter { weights[$0] > 0 }
        var credit = [Int](repeating: 0, count: backends.count)
        var table = [Int32](repeating: -1, count: m)
        table.withUnsafeMutableBufferPointer { slots in
            next.withUnsafeMutableBufferPointer { next in
                var filled = 0
                fill: while true {
                    for i in active {
                        credit[i] += weights[i]
                        guard credit[i] >= maxWeight else { continue }
                        credit[i] -= maxWeight
                        var slot = next[i]
                        while slots[slot] >= 0 {
                            slot += skip[i]
                            if slot >= m { slot -= m }
                        }
                        slots[slot] = Int32(truncatingIfNeeded: i)
                        slot += skip[i]
                        next[i] = slot >= m ? slot - m : slot
                        filled += 1
                        if filled == m { break fill }
                    }
                }
            }
        }
        entries = table
    }

    /// The table size `M`.
    @inlinable public var size: Int { entries.count }

    /// The backend index for a flow hash (`entries[hash mod M]`), or nil for an empty table.
    @inlinable
    public func lookup(_ hash: UInt64) -> Int? {
        let count = entries.count
        guard count > 0 else { return nil }
        let backend = entries[Int(hash % UInt64(count))]
        return backend < 0 ? nil : Int(backend)
    }

    /// How many slots each backend owns, indexed like `backends`: what operators and tests
    /// compare with the weights.
    public func slotCounts() -> [Int] {
        var counts = [Int](repeating: 0, count: backendCount)
        for e in entries where e >= 0 { counts[Int(e)] += 1 }
        return counts
    }
}
