import Balancer
import SystemPackage

/// A server connect that failed: where it went, and why (nil: `connect_timeout` passed).
struct ConnectFailure: CustomStringConvertible {
    var server: Endpoint
    var error: Errno?

    var description: String {
        "\(server): " + (error.map { "\($0)" } ?? "connect_timeout passed")
    }
}

/// Why a proxied connection ended, as `log_connections` reports it (in the spirit of HAProxy's
/// termination state: which side, and how).
enum ConnectionEnd: CustomStringConvertible {
    /// Both sides ended their streams: the normal end.
    case closed
    /// The client's socket failed (a reset, mostly).
    case clientError(Errno)
    /// The server's socket failed.
    case serverError(Errno)
    /// No byte either way for the pool's `idle_timeout`.
    case idleTimeout
    /// No server took the client: every candidate refused or timed out, or none was selectable.
    /// `last`: the last connect that failed, to say why.
    case noServer(failedConnects: Int, last: ConnectFailure? = nil)
    /// The PROXY header could not be sent to the server.
    case proxyHeaderNotSent
    /// The stop's drain ended (`drain_timeout`) with the connection still open.
    case drainTimeout
    /// A reload or health change took its server or frontend away, and its drain ended.
    case drainEnded
    /// Its server was marked down and its pool says `on_down = "close"`.
    case serverDown
    /// convey stopped at once (SIGQUIT).
    case stopped
    /// This host failed it (an `epoll_ctl` error).
    case localError(Errno)
    /// The frontend's `allow` / `deny` lists refused the client.
    case denied
    /// No candidate server had a place (at its `max_connections`, or failing) for the pool's
    /// `queue_timeout`.
    case queueTimeout
    /// The pool's `max_queue` clients were waiting already.
    case queueFull
    /// `accept_proxy_protocol`: the client's first bytes were no PROXY header, or none came in time.
    case badProxyHeader(String)
    /// `accept_proxy_protocol`: the client closed before sending its PROXY header (a balancer's
    /// TCP health check, mostly).
    case closedBeforeProxyHeader

    var description: String {
        switch self {
        case .closed: return "closed"
        case .clientError(let e): return "client error: \(e)"
        case .serverError(let e): return "server error: \(e)"
        case .idleTimeout: return "idle_timeout"
        case .noServer(let failed, let last):
            guard failed > 0 else { return "no server" }
            guard let last else { return "no server (\(failed) connect(s) failed)" }
            return "no server (\(failed) connect(s) failed, the last to \(last))"
        case .proxyHeaderNotSent: return "PROXY header not sent"
        case .drainTimeout: return "drain_timeout at stop"
        case .drainEnded: return "its server or frontend left (drain ended)"
        case .serverDown: return "its server is down (on_down = close)"
        case .stopped: return "stopped"
        case .localError(let e): return "local error: \(e)"
        case .denied: return "denied (allow/deny)"
        case .queueTimeout: return "queue_timeout (no server had a place)"
        case .queueFull: return "max_queue (the queue was full)"
        case .badProxyHeader(let reason): return "bad PROXY header: \(reason)"
        case .closedBeforeProxyHeader: return "closed before its PROXY header"
        }
    }
}
