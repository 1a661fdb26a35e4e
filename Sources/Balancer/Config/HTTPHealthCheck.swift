/// `health_check_http`: each check is an HTTP GET of one path, passed by the reply's status
/// code (HAProxy's `option httpchk`, keepalived's `HTTP_GET`), so a server whose process
/// accepts connections but reports itself unhealthy (a 503 while it starts or drains) leaves
/// selection.
///
/// The request is HTTP/1.1 with `Connection: close`; only the status line of the reply is
/// read, so a large health page costs nothing more.
public struct HTTPHealthCheck: Sendable, Equatable {
    /// The request target: an absolute path, with a query if any (`/healthz?full=1`).
    public var path: String
    /// The `Host` header (nil: the address checked, as `10.0.0.5:8080`).
    public var host: String?
    /// Status codes that pass (`health_check_http_status`; default 200-399, as HAProxy's).
    public var statuses: ClosedRange<Int>

    public static let defaultStatuses = 200...399
    /// The most bytes read looking for the status line (a longer first line fails the check).
    public static let statusLineLimit = 1024

    public init(path: String, host: String? = nil, statuses: ClosedRange<Int> = defaultStatuses) {
        self.path = path
        self.host = host
        self.statuses = statuses
    }

    /// The request one check sends to a server checked at `address`.
    public func request(checking address: Endpoint) -> [UInt8] {
        Array(("GET \(path) HTTP/1.1\r\nHost: \(host ?? address.description)\r\n"
               + "User-Agent: convey-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n").utf8)
    }

    /// What a check concludes from the first bytes of a reply.
    public enum Verdict: Equatable, Sendable {
        /// More bytes are needed to see the whole status line.
        case incomplete
        /// The status line holds this code.
        case status(Int, line: [UInt8])
        /// The reply does not start with an HTTP status line.
        case notHTTP
    }

    /// Reads the status line at the start of `reply` (`HTTP/1.x NNN reason`).
    public static func verdict(_ reply: [UInt8]) -> Verdict {
        let prefix = Array("HTTP/1.".utf8)
        // Wrong from the first bytes: say so at once rather than wait for a line end.
        guard reply.starts(with: prefix.prefix(reply.count)) else { return .notHTTP }
        guard let end = reply.firstIndex(of: UInt8(ascii: "\n")) else {
            return reply.count >= statusLineLimit ? .notHTTP : .incomplete
        }
        var line = Array(reply[..<end])
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        // "HTTP/1.1 200" at least: version, one space, three digits, then a space or the end.
        guard line.count >= 12, (0x30...0x39).contains(line[7]), line[9...11].allSatisfy({ (0x30...0x39).contains($0) }),
              line[8] == UInt8(ascii: " "),
              line.count == 12 || line[12] == UInt8(ascii: " ") else { return .notHTTP }
        let code = line[9...11].reduce(0) { $0 * 10 + Int($1 - 0x30) }
        return .status(code, line: line)
    }

    /// Why `path` cannot be sent as a request target, or nil when it can.
    static func problem(path: String) -> String? {
        guard path.hasPrefix("/") else { return "'\(path)' is not a path: it must start with '/' (as /healthz)" }
        if path.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value >= 0x7F }) {
            return "\(JSONValue.quoted(path)) holds a space, a control or a non-ASCII character: write it percent-encoded (%20)"
        }
        return nil
    }

    /// Why `host` cannot be sent as a `Host` header, or nil when it can.
    static func problem(host: String) -> String? {
        if host.isEmpty { return "is empty: remove it to send the address checked" }
        if host.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value >= 0x7F }) {
            return "\(JSONValue.quoted(host)) holds a space, a control or a non-ASCII character"
        }
        return nil
    }

    /// The codes `text` names: `"200"` or `"200-299"`, within 100-599.
    static func statuses(parsing text: String) -> ClosedRange<Int>? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingSpaces) }
        guard (1...2).contains(parts.count), let low = parts.first ?? nil, let high = parts.last ?? nil,
              (100...599).contains(low), (100...599).contains(high), low <= high else { return nil }
        return low...high
    }

    /// The statuses as the configuration writes them.
    public var statusText: String { Self.text(of: statuses) }

    /// `200` or `200-399`.
    static func text(of statuses: ClosedRange<Int>) -> String {
        statuses.count == 1 ? "\(statuses.lowerBound)" : "\(statuses.lowerBound)-\(statuses.upperBound)"
    }
}

private extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}
