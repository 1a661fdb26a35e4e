/// The known key an unknown one was most likely meant to be (`alow` → `allow`,
/// `max_conections` → `max_connections`), for the unknown-key warning.
enum KeySuggestion {
    /// The candidate closest to `key` by edit distance (insertions, deletions, substitutions
    /// and swaps of two neighbours each count 1), if close enough to be a typo: at most 1
    /// for keys of up to 4 characters, 2 beyond. Nil when none is, or two are equally close.
    static func closest(to key: String, among candidates: some Sequence<String>) -> String? {
        let typed = Array(key.lowercased().utf8)
        let allowed = typed.count <= 4 ? 1 : 2
        var best: (name: String, distance: Int)?
        var tied = false
        for candidate in candidates where candidate != key {
            let d = distance(typed, Array(candidate.lowercased().utf8))
            guard d <= allowed else { continue }
            if let b = best, d == b.distance {
                tied = true
            } else if best == nil || d < best!.distance {
                best = (candidate, d)
                tied = false
            }
        }
        return tied ? nil : best?.name
    }

    /// Optimal string alignment distance between two byte strings.
    static func distance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        let width = b.count + 1
        var rows = [Int](repeating: 0, count: (a.count + 1) * width)
        for j in 0...b.count { rows[j] = j }
        for i in 1...a.count {
            rows[i * width] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                var d = min(rows[(i - 1) * width + j] + 1, rows[i * width + j - 1] + 1,
                            rows[(i - 1) * width + j - 1] + cost)
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d = min(d, rows[(i - 2) * width + j - 2] + 1)
                }
                rows[i * width + j] = d
            }
        }
        return rows[a.count * width + b.count]
    }
}
