import Balancer
import Synchronization

/// Which flows a listing asks for: all of them, or those of one client address, frontend
/// index or server (each nil = any).
public struct FlowFilter: Sendable, Equatable {
    public var client: IPAddress?
    /// The VIP indices of one frontend (two while it moves to another listen address).
    public var frontendIndices: [Int]?
    /// The backend slots of one server (one per frontend whose pool holds it).
    public var backendSlots: [UInt32]?
    /// Passthrough: the NAT port (and, by the family of the NAT address asked for, the client's
    /// family: nil for either).
    public var natPort: UInt16?
    public var natFamilyIsIPv4: Bool?
    /// Rows copied per worker at most (more matches are only counted).
    public var limit: Int

    public init(client: IPAddress? = nil, frontendIndices: [Int]? = nil, backendSlots: [UInt32]? = nil,
                limit: Int = FlowListing.maxRows) {
        self.client = client
        self.frontendIndices = frontendIndices
        self.backendSlots = backendSlots
        self.limit = min(max(0, limit), FlowListing.maxRows)
    }
}

/// One worker's answer to a listing: copies of the matching entries, as the worker saw them
/// at `now` (its monotonic clock, nanoseconds).
public struct FlowListingResult: Sendable {
    public var entries: [FlowEntry]
    /// Every matching flow, also those beyond the limit.
    public var matched: Int
    public var now: UInt64
}

/// How the control plane asks one worker for a copy of the flows it tracks (`/flows`), with no
/// lock on the worker's side.
///
/// The control plane writes a request and bumps `requested` (releasing); the worker notices
/// the new number between batches (one relaxed load per batch), copies the matching entries
/// of its table a chunk of slots per batch (so a table of millions of flows stalls no batch
/// for long), and publishes `completed` (releasing) when it has covered the whole table. The
/// request's fields belong to the control plane until `requested` moves, the result's to the
/// worker until `completed` does; one request is in flight at a time.
///
/// A listing is a walk over a changing table, not an atomic snapshot: a flow that starts or
/// ends while the walk goes on may be missed or shown.
public final class FlowListing: @unchecked Sendable {
    /// The most rows one worker copies per request.
    public static let maxRows = FlowQuery.maxLimit
    /// Table slots a worker walks per batch: 2 MiB of entries, a fraction of a millisecond,
    /// so a busy worker's batches are hardly delayed; an idle one calls again every 1 ms
    /// while it walks (`PacketHandler.hasWorkBetweenBatches`).
    static let slotsPerBatch = 1 << 15

    let requested = Atomic<UInt64>(0)
    let completed = Atomic<UInt64>(0)
    /// The request (written before `requested` moves).
    private(set) var filter = FlowFilter()
    /// The result (written before `completed` moves).
    let rows: UnsafeMutablePointer<FlowEntry>
    var rowCount = 0
    var matched = 0
    var takenAt: UInt64 = 0
    /// Held by the caller whose request is in flight (from writing it to reading the rows).
    private let busy = Atomic<Bool>(false)
    /// Set once the worker has stopped: nobody will answer.
    private let closed = Atomic<Bool>(false)

    public init() {
        rows = .allocate(capacity: Self.maxRows)
    }

    deinit { rows.deallocate() }

    /// Asks the worker for its flows matching `filter` and waits up to `timeout` for the
    /// answer; nil when the worker does not answer in time (it has stopped, or is still on an
    /// earlier request that timed out), or the calling task is cancelled.
    public func list(_ filter: FlowFilter, timeout: Duration = .seconds(3)) async -> FlowListingResult? {
        let deadline = ContinuousClock.now + timeout
        // Take the turn: one caller at a time, and only once the worker has finished the
        // previous request (a caller that timed out leaves it running).
        while true {
            if busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
                if completed.load(ordering: .acquiring) == requested.load(ordering: .relaxed) { break }
                busy.store(false, ordering: .releasing)
            }
            guard ContinuousClock.now < deadline, !Task.isCancelled, !closed.load(ordering: .relaxed) else { return nil }
            try? await Task.sleep(for: .milliseconds(2))
        }
        defer { busy.store(false, ordering: .releasing) }
        self.filter = filter
        let ticket = requested.load(ordering: .relaxed) &+ 1
        requested.store(ticket, ordering: .releasing)
        while completed.load(ordering: .acquiring) != ticket {
            guard ContinuousClock.now < deadline, !Task.isCancelled, !closed.load(ordering: .relaxed) else { return nil }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return FlowListingResult(entries: Array(UnsafeBufferPointer(start: rows, count: rowCount)),
                                 matched: matched, now: takenAt)
    }

    /// The worker has stopped: callers waiting, and later ones, get nil at once.
    public func close() { closed.store(true, ordering: .relaxed) }

    // The worker's side: touched by the worker thread only.
    private var walking: UInt64 = 0
    private var cursor = 0
    private var walkFilter = FlowFilter()
    private var walkClient: (hi: UInt64, lo: UInt64)?

    /// Called by the worker between batches when `requested` has moved past the request it
    /// last served: takes the request up, or walks on with it. Returns the request served
    /// once the walk is complete (the caller stops calling until `requested` moves again),
    /// else nil.
    @inline(never)
    func step(table: FlowTable, now: UInt64) -> UInt64? {
        if walking == 0 {
            walking = requested.load(ordering: .acquiring)
            walkFilter = filter
            walkClient = walkFilter.client.map { StableHash.widened($0) }
            cursor = 0
            rowCount = 0
            matched = 0
        }
        let end = min(table.slotCount, cursor + Self.slotsPerBatch)
        var i = cursor
        while i < end {
            let e = table.entry(at: i)
            if e.pointee.state != .empty, matches(e) {
                matched += 1
                if rowCount < walkFilter.limit {
                    rows[rowCount] = e.pointee
                    rowCount += 1
                }
            }
            i += 1
        }
        cursor = end
        guard end == table.slotCount else { return nil }
        takenAt = now
        let served = walking
        walking = 0
        completed.store(served, ordering: .releasing)
        return served
    }

    @inline(__always)
    private func matches(_ entry: UnsafeMutablePointer<FlowEntry>) -> Bool {
        if let client = walkClient, entry.pointee.clientLo != client.lo || entry.pointee.clientHi != client.hi { return false }
        if let f = walkFilter.frontendIndices, !f.contains(entry.pointee.vipIndex) { return false }
        if let slots = walkFilter.backendSlots, !slots.contains(entry.pointee.backendSlot) { return false }
        if let port = walkFilter.natPort, entry.pointee.natPort != port { return false }
        if let v4 = walkFilter.natFamilyIsIPv4,
           (StableHash.mappedIPv4(hi: entry.pointee.clientHi, lo: entry.pointee.clientLo) != nil) != v4 { return false }
        return true
    }
}
