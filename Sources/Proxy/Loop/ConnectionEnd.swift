import SystemPackage

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
    case noServer(failedConnects: Int)
    /// The PROXY header could not be sent to the server.
    case proxyHeaderNotSent
    /// The stop's drain ended (`drain_timeout`) with the connection still open.
    case drainTimeout
    /// A reload or health change took its server or frontend away, and its drain ended.
    case drainEnded
    /// convey stopped at once (SIGQUIT).
    case stopped
    /// This host failed it (an `epoll_ctl` error).
    case localError(Errno)
    /// The frontend's `allow` / `deny` lists refused the client.
    case denied
    /// No candidate server had a place (at its `max_connections`, or failing) for the pool's
    /// `queue_timeout`.
    case queueTimeout

    var description: String {
        switch self {
        case .closed: return "closed"
        case .clientError(let e): return "client error: \(e)"
        case .serverError(let e): return "server error: \(e)"
        case .idleTimeout: return "idle_timeout"
        case .noServer(let failed): return failed > 0 ? "no server (\(failed) connect(s) failed)" : "no server"
        case .proxyHeaderNotSent: return "PROXY header not sent"
        case .drainTimeout: return "drain_timeout at stop"
        case .drainEnded: return "its server or frontend left (drain ended)"
        case .stopped: return "stopped"
        case .localError(let e): return "local error: \(e)"
        case .denied: return "denied (allow/deny)"
        case .queueTimeout: return "queue_timeout (no server had a place)"
        }
    }
}
