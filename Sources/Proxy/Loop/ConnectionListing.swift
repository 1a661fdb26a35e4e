import Balancer
import Synchronization

/// Which connections a listing asks for (each nil = any), and how many rows one loop copies.
struct ConnectionFilter: Sendable {
    var client: IPAddress?
    /// The connection's local end toward its server.
    var local: FlowQuery.LocalEnd? = nil
    var frontend: String?
    var server: ServerID?
    var limit: Int
}

/// One proxied connection as `/flows` shows it, copied by its event loop.
struct ConnectionRow: Sendable {
    enum State: String, Sendable {
        /// The client is accepted and its PROXY header has not come yet (`accept_proxy_protocol`).
        case awaitingHeader = "awaiting_proxy_header"
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
typealias ConnectionListing = LoopChannel<ConnectionFilter, ConnectionListingResult>

extension LoopChannel where Question == ConnectionFilter, Answer == ConnectionListingResult {
    /// The most rows one loop copies per request (as a worker of the AF_XDP modes).
    static var maxRows: Int { FlowQuery.maxLimit }

    /// Queues `filter`, wakes the loop with `wake`, and waits up to `timeout` for its rows.
    func list(_ filter: ConnectionFilter, timeout: Duration = .seconds(3), wake: () -> Void) async -> ConnectionListingResult? {
        await ask(filter, timeout: timeout, wake: wake)
    }
}
