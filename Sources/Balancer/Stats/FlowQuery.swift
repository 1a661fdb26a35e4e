/// A `/flows` request: which tracked flows (AF_XDP modes) or connections (proxy mode) to list, from the URL's query
/// (`?client=IP&frontend=NAME&server=POOL/NAME&limit=N`).
public struct FlowQuery: Sendable, Equatable {
    public var client: IPAddress?
    public var frontend: String?
    /// `pool/name`.
    public var server: ServerID?
    /// Rows per worker at most.
    public var limit: Int

    public static let defaultLimit = 1000

    public init(client: IPAddress? = nil, frontend: String? = nil, server: ServerID? = nil, limit: Int = defaultLimit) {
        self.client = client
        self.frontend = frontend
        self.server = server
        self.limit = limit
    }

    /// Reads the query parameters; a bad value or an unknown parameter is an error that says
    /// what is accepted.
    public init(parameters: [(key: String, value: String)]) throws(FlowQueryError) {
        self.init()
        var seen: Set<String> = []
        for (key, value) in parameters {
            guard seen.insert(key).inserted else { throw .bad("\(key) is given twice: give it once") }
            switch key {
            case "client":
                guard let ip = IPAddress(value) else { throw .bad("client: '\(value)' is not an IPv4 or IPv6 address") }
                client = ip
            case "frontend":
                frontend = value
            case "server":
                let parts = value.split(separator: "/", omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw .bad("server: '\(value)' is not POOL/NAME (as in /stats: backends.POOL.server_detail.NAME)")
                }
                server = ServerID(pool: String(parts[0]), name: String(parts[1]))
            case "limit":
                guard let n = Int(value), n >= 0 else { throw .bad("limit: '\(value)' is not a count") }
                limit = n
            default:
                throw .bad("unknown parameter '\(key)': use client=IP, frontend=NAME, server=POOL/NAME, limit=N")
            }
        }
    }
}

/// Why a `/flows` request was refused.
public enum FlowQueryError: Error, Sendable, Equatable {
    /// A bad query: answered with 400 and the message.
    case bad(String)
    /// No listing is given to the stats server: answered with 404 and the message.
    case unavailable(String)
    /// No worker answered in time: answered with 503 and the message.
    case unanswered(String)

    public var message: String {
        switch self {
        case .bad(let m), .unavailable(let m), .unanswered(let m): return m
        }
    }
}
