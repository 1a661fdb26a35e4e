/// Why one health check of a server failed, in terms an operator can act on.
///
/// The `description` is the "last result" text shown in `/stats` and in the log line of a
/// transition, e.g. `connect refused` or `timeout after 1s waiting for a reply`.
public enum HealthCheckFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// Nothing listens on the server's port (`ECONNREFUSED`): the service is stopped or
    /// listens elsewhere.
    case connectRefused
    /// The TCP handshake did not finish within the check timeout: the host is down, a firewall
    /// drops the SYN, or the server's accept queue is full.
    case connectTimeout(Duration)
    /// The kernel has no route to the server (`EHOSTUNREACH`, `ENETUNREACH`): check the address
    /// and the balancer's routes. Carries the errno text.
    case unreachable(String)
    /// `connect(2)` failed for another reason; carries the errno text.
    case connectFailed(String)
    /// The connection was established but writing the configured `health_check_send` bytes
    /// failed (usually a reset by the server).
    case sendFailed(String)
    /// The server accepted the connection but `health_check_expect.count` bytes did not arrive
    /// within the check timeout; `received` bytes had arrived by then.
    case replyTimeout(Duration, received: Int)
    /// The server closed the connection after sending `received` of the `expected` bytes.
    case closedBeforeReply(received: Int, expected: Int)
    /// The reply arrived but did not start with `health_check_expect`; `received` holds the
    /// reply's first bytes (at most as many as expected).
    case unexpectedReply(received: [UInt8], expected: [UInt8])
    /// `health_check_http`: the reply's status code is not one of `wanted`; `line` is the
    /// status line as received.
    case httpStatus(Int, line: [UInt8], wanted: ClosedRange<Int>)
    /// `health_check_http`: the reply does not start with an HTTP status line; `received`
    /// holds its first bytes.
    case notHTTP(received: [UInt8])
    /// `health_check_http`: the server closed the connection before a whole status line came.
    case closedBeforeStatus(received: Int)
    /// Reading the reply failed (e.g. connection reset by the server).
    case readFailed(String)
    /// The server's address cannot be used by the socket layer (should not pass validation).
    case badAddress(String)
    /// `error_limit` connection attempts of clients in a row failed (proxy mode).
    case clientConnectsFailed(Int)
    /// This host could not run the check (out of file descriptors or memory): it says
    /// nothing about the server, so it moves neither toward up nor down. Carries the errno text.
    case notChecked(String)

    /// True when the check could not be made at all (`notChecked`).
    public var isInconclusive: Bool {
        if case .notChecked = self { return true } else { return false }
    }

    /// The reason as one line for logs and `/stats`.
    public var description: String {
        switch self {
        case .connectRefused:
            return "connect refused"
        case .connectTimeout(let timeout):
            return "timeout after \(Self.format(timeout)) while connecting"
        case .unreachable(let why):
            return "unreachable: \(why)"
        case .connectFailed(let why):
            return "connect failed: \(why)"
        case .sendFailed(let why):
            return "sending the check bytes failed: \(why)"
        case .replyTimeout(let timeout, let received):
            return received == 0
                ? "timeout after \(Self.format(timeout)) waiting for a reply"
                : "timeout after \(Self.format(timeout)) waiting for a reply (\(received) bytes received)"
        case .closedBeforeReply(let received, let expected):
            return "connection closed after \(received) of \(expected) expected reply bytes"
        case .unexpectedReply(let received, let expected):
            return "reply did not start with expected bytes: got \(Self.quote(received)), "
                + "expected \(Self.quote(expected))"
        case .httpStatus(let code, let line, let wanted):
            return "HTTP status \(code), not \(HTTPHealthCheck.text(of: wanted)): \(Self.quote(line))"
        case .notHTTP(let received):
            return "not an HTTP reply: got \(Self.quote(received))"
        case .closedBeforeStatus(let received):
            return received == 0 ? "connection closed before an HTTP reply"
                : "connection closed before a whole HTTP status line (\(received) bytes received)"
        case .readFailed(let why):
            return "reading the reply failed: \(why)"
        case .badAddress(let why):
            return "bad address: \(why)"
        case .clientConnectsFailed(let count):
            return "\(count) connections of clients in a row failed (error_limit)"
        case .notChecked(let why):
            return "not checked: this host is out of resources (\(why)); the server's state stays"
        }
    }

    /// `1s`, `250ms`, `1.5s`: the short form operators write in configs.
    static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
        if milliseconds < 1000 { return "\(milliseconds)ms" }
        return "\(milliseconds / 1000).\(String(milliseconds % 1000).leftPadded(to: 3).trailingZerosTrimmed)s"
    }

    /// Bytes as a quoted, printable string: ASCII as is, anything else as `\xNN`.
    static func quote(_ bytes: [UInt8]) -> String {
        var text = "\""
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\r"): text += "\\r"
            case UInt8(ascii: "\n"): text += "\\n"
            case UInt8(ascii: "\t"): text += "\\t"
            case UInt8(ascii: "\""): text += "\\\""
            case UInt8(ascii: "\\"): text += "\\\\"
            case 0x20..<0x7F: text.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16)
                text += "\\x" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return text + "\""
    }
}

private extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }

    var trailingZerosTrimmed: String {
        var text = self
        while text.hasSuffix("0") { text.removeLast() }
        return text
    }
}
