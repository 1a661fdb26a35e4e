/// A `/flows` request: which tracked flows (AF_XDP modes) or connections (proxy mode) to list, from the URL's query
/// (`?client=IP&local=[IP:]PORT&frontend=NAME&server=POOL/NAME&limit=N`).
public struct FlowQuery: Sendable, Equatable {
    public var client: IPAddress?
    /// This host's end toward the server, as the server's own log names its client: the
    /// proxy's local address and port (proxy mode), the NAT address and port (passthrough).
    /// Finds the client behind a connection a backend reports. The address is optional.
    public var local: LocalEnd?
    public var frontend: String?
    /// `pool/name`.
    public var server: ServerID?
    /// Rows per worker at most (a larger request is served as `maxLimit`).
    public var limit: Int

    public static let defaultLimit = 1000
    /// The most rows a worker copies for one request (what its answer buffer holds).
    public static let maxLimit = 4096

    /// `local=`: a port, with or without the address.
    public struct LocalEnd: Sendable, Equatable {
        public var address: IPAddress?
        public var port: UInt16

        public init(address: IPAddress? = nil, port: UInt16) {
            self.address = address
            self.port = port
        }

        /// Whether `endpoint` is this end.
        public func matches(_ endpoint: Endpoint) -> Bool {
            endpoint.port == port && (address == nil || endpoint.address == address)
        }
    }

    public init(client: IPAddress? = nil, local: LocalEnd? = nil, frontend: String? = nil, server: ServerID? = nil,
                limit: Int = defaultLimit) {
        self.client = client
        self.local = local
        self.frontend = frontend
        self.server = server
        self.limit = limit
    }

    /// Reads the query parameters; a bad value or an unknown parameter is an error that says
    /// what is accepted.
    public init(parameters: [(key: String, value: String)]) throws(FlowQueryError) {
        self.init()
        var seen: Set<String> = []
        // `?&limit=5` or a trailing `&` leaves an empty pair: nothing was asked.
        for (key, value) in parameters where !(key.isEmpty && value.isEmpty) {
            guard seen.insert(key).inserted else { throw .bad("\(key) is given twice: give it once") }
            switch key {
            case "client":
                guard let ip = IPAddress(value) else { throw .bad("client: '\(value)' is not an IPv4 or IPv6 address") }
                client = ip
            case "local":
                if Self.isDecimal(value), value.first != "0", let port = UInt16(value) {
                    local = LocalEnd(port: port)
                } else if let end = try? Endpoint(parsing: value), end.port > 0 {
                    local = LocalEnd(address: end.address, port: end.port)
                } else {
                    throw .bad("local: '\(value)' is not PORT or IP:PORT ([IPv6]:PORT), this host's end toward a server "
                               + "as the server's log shows it")
                }
            case "frontend":
                frontend = value
            case "server":
                let parts = value.split(separator: "/", omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw .bad("server: '\(value)' is not POOL/NAME (as in /stats: backends.POOL.server_detail.NAME)")
                }
                server = ServerID(pool: String(parts[0]), name: String(parts[1]))
            case "limit":
                // Past the most a worker lists, every count means "as many as there may be"
                // (as `limit_per_worker` then says), however many digits it has.
                guard Self.isDecimal(value) else {
                    throw .bad("limit: '\(value)' is not a count (0-\(Self.maxLimit); more lists \(Self.maxLimit) per worker)")
                }
                limit = min(Int(value) ?? Self.maxLimit, Self.maxLimit)
            default:
                throw .bad("unknown parameter '\(key)': use client=IP, local=[IP:]PORT, frontend=NAME, server=POOL/NAME, limit=N")
            }
        }
    }
}

extension FlowQuery {
    /// ASCII digits only, at least one (`Int` and `UInt16` would also take a sign).
    static func isDecimal(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
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

/// One worker's part of a `/flows` answer: its rows, rendered, and how many flows matched
/// (also those past the limit, which were only counted).
public struct FlowListingPart: Sendable {
    public var rows: [JSONValue]
    public var matched: Int

    public init(rows: [JSONValue], matched: Int) {
        self.rows = rows
        self.matched = matched
    }
}

extension FlowQuery {
    /// Asks every worker at once (`ask` answers nil when its worker did not answer in time) and
    /// builds the document every mode answers `/flows` with: the rows of all workers in worker
    /// order, `matched`, `listed`, `truncated`, `limit_per_worker`, and the workers that did not
    /// answer. When none answered it throws `.unanswered(noneAnswered)`.
    public static func collect<Worker: Sendable>(from workers: [Worker], limit: Int, noneAnswered: String,
                                                 _ ask: @escaping @Sendable (_ index: Int, Worker) async -> FlowListingPart?)
        async throws(FlowQueryError) -> JSONValue {
        let parts = await withTaskGroup(of: (Int, FlowListingPart?).self) { group in
            for (i, worker) in workers.enumerated() {
                group.addTask { (i, await ask(i, worker)) }
            }
            var all: [(Int, FlowListingPart?)] = []
            for await part in group { all.append(part) }
            return all.sorted { $0.0 < $1.0 }
        }
        if !parts.isEmpty, parts.allSatisfy({ $0.1 == nil }) { throw .unanswered(noneAnswered) }
        var rows: [JSONValue] = []
        var matched = 0
        var unanswered: [JSONValue] = []
        for (worker, part) in parts {
            guard let part else {
                unanswered.append(.int(Int64(worker)))
                continue
            }
            matched += part.matched
            rows += part.rows
        }
        return .object([
            ("matched", .int(Int64(matched))), ("listed", .int(Int64(rows.count))),
            ("truncated", .bool(rows.count < matched)), ("limit_per_worker", .int(Int64(limit))),
            ("workers_unanswered", .array(unanswered)), ("flows", .array(rows)),
        ])
    }
}
