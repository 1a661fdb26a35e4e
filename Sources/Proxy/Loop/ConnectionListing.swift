import Balancer
import Synchronization

/// Which connections a listing asks for (each nil = any), and how many rows one loop copies.
struct ConnectionFilter: Sendable {
    var client: IPAddress?
    var frontend: String?
    var server: ServerID?
    var limit: Int
}

/// One proxied connection as `/flows` shows it, copied by its event loop.
struct ConnectionRow: Sendable {
    enum State: String, Sendable {
        /// The client is accepted and waits for a place at a server with `max_connections`.
        case queued
        /// The client is accepted; the connect to a server is in flight.
        case connecting
        /// Bytes flow both ways.
        case established
        /// The client sent end of stream; the server's bytes still flow to it.
        case clientClosed = "client_closed"
        /// The server sent end of stream; the client's bytes still flow to it.
        case serverClosed = "server_closed"
    }

    var frontend: String
    var client: Endpoint
    var server: ServerID?
    /// Where the connection goes (or the attempt in flight); nil while queued.
    var backend: Endpoint?
    /// This host's end of the connection to the server (what the server sees as its client).
    var local: Endpoint?
    var state: State
    var ageNanoseconds: UInt64
    var idleNanoseconds: UInt64
    /// Until `idle_timeout` (or, while connecting, `connect_timeout`; while draining, the drain's end).
    var expiresInNanoseconds: UInt64
    /// Client → server (the counters' "tx") and server → client ("rx").
    var bytesTx: Int64
    var bytesRx: Int64
    /// Connect attempts that failed before this one (retries on other servers).
    var failedAttempts: Int
}

/// One loop's answer: the matching rows up to the limit, and how many matched in all.
struct ConnectionListingResult: Sendable {
    var rows: [ConnectionRow]
    var matched: Int
}

/// How the control plane asks one event loop for its connections (`/flows` in proxy mode).
///
/// The loop checks `pending` once per turn (one relaxed load: nothing on the data path when
/// nobody asks); a caller queues its request under the lock (`pending` is only written
/// there) and wakes the loop, which answers every queued request in its next turn and stores each result for its
/// caller to collect. The lock is only ever taken to queue, take and collect, never while a
/// loop moves bytes.
final class ConnectionListing: Sendable {
    /// The most rows one loop copies per request (as a worker of the AF_XDP modes).
    static let maxRows = FlowQuery.maxLimit

    private struct State {
        var nextTicket: UInt64 = 0
        var requests: [(ticket: UInt64, filter: ConnectionFilter)] = []
        var results: [UInt64: ConnectionListingResult] = [:]
        /// Tickets whose caller gave up before the answer came: their results are not kept.
        var abandoned: Set<UInt64> = []
        var closed = false
    }

    private let state = Mutex(State())
    /// Requests queued and not yet taken by the loop.
    let pending = Atomic<Int>(0)

    init() {}

    /// Queues `filter`, wakes the loop with `wake`, and waits up to `timeout` for the answer;
    /// nil when the loop does not answer in time (it has stopped), or the task is cancelled.
    func list(_ filter: ConnectionFilter, timeout: Duration = .seconds(3), wake: () -> Void) async -> ConnectionListingResult? {
        let ticket: UInt64? = state.withLock { s in
            guard !s.closed else { return nil }
            s.nextTicket &+= 1
            s.requests.append((s.nextTicket, filter))
            pending.store(s.requests.count, ordering: .relaxed)
            return s.nextTicket
        }
        guard let ticket else { return nil }
        wake()
        let deadline = ContinuousClock.now + timeout
        while true {
            let (result, closed) = state.withLock { s in (s.results.removeValue(forKey: ticket), s.closed) }
            if let result { return result }
            if closed || Task.isCancelled || ContinuousClock.now >= deadline { break }
            try? await Task.sleep(for: .milliseconds(1))
        }
        state.withLock { s in
            if let queued = s.requests.firstIndex(where: { $0.ticket == ticket }) {
                s.requests.remove(at: queued)
                pending.store(s.requests.count, ordering: .relaxed)
            } else if s.results.removeValue(forKey: ticket) == nil && !s.closed {
                // The loop is walking for it: its result is dropped when it comes.
                s.abandoned.insert(ticket)
            }
        }
        return nil
    }

    /// The loop's side: answers every queued request with `walk`.
    func serve(_ walk: (ConnectionFilter) -> ConnectionListingResult) {
        let taken = state.withLock { s in
            let r = s.requests
            s.requests = []
            pending.store(0, ordering: .relaxed)
            return r
        }
        for request in taken {
            let result = walk(request.filter)
            state.withLock { s in
                if s.abandoned.remove(request.ticket) == nil { s.results[request.ticket] = result }
            }
        }
    }

    /// The loop has stopped: waiting callers, and later ones, get nil at once.
    func close() {
        state.withLock { s in
            s.closed = true
            s.requests = []
            s.results = [:]
            s.abandoned = []
            pending.store(0, ordering: .relaxed)
        }
    }
}
