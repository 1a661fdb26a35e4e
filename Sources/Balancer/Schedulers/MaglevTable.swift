// PLACEHOLDER: replaced by the schedulers work (issue 2). API fixed here so other modules compile.

/// A Maglev consistent-hash lookup table (Eisenbud et al., NSDI'16).
public struct MaglevTable: Sendable, Equatable {
    /// Default table size: prime, > 100 × the largest pool we expect.
    public static let defaultSize = 65_537

    /// Backend index for each table slot (-1 when there are no backends).
    public let entries: [Int32]

    /// Builds the table for `backends` (a stable key such as "ip:port" and a weight > 0 each),
    /// deterministically: two processes given the same input build the same table.
    public init(backends: [(key: String, weight: Int)], size: Int = MaglevTable.defaultSize) {
        fatalError("MaglevTable not implemented yet")
    }

    /// The backend index for a flow hash, or nil for an empty table.
    public func lookup(_ hash: UInt64) -> Int? {
        fatalError("MaglevTable not implemented yet")
    }
}
