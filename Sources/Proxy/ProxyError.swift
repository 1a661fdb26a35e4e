import Balancer
import SystemPackage

/// Why proxy mode could not start; each case names what the operator has to fix.
public enum ProxyError: Error, CustomStringConvertible, Equatable {
    /// A frontend's listener could not be created, bound or put in listening state
    /// (`EADDRINUSE`: another process holds the port; `EACCES`: a port below 1024 without
    /// `CAP_NET_BIND_SERVICE`; `EADDRNOTAVAIL`: the address is not on this host).
    case bindFailed(frontend: String, address: Endpoint, errno: Errno)
    /// The kernel refused an epoll instance, eventfd or thread for an event loop.
    case loopSetupFailed(what: String, errno: Errno)
    /// `run()` was called a second time on the same service.
    case alreadyRunning

    public var description: String {
        switch self {
        case .bindFailed(let frontend, let address, let errno):
            let hint: String
            switch errno {
            case .addressInUse: hint = " (another process already listens there; stop it or change listen_addr; to replace a running convey without refusing clients, start this one with --takeover)"
            case .permissionDenied: hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            case .addressNotAvailable: hint = " (no interface of this host has that address)"
            default: hint = ""
            }
            return "frontend '\(frontend)': cannot listen on \(address): \(errno)\(hint)"
        case .loopSetupFailed(let what, let errno):
            return "proxy event loop: \(what) failed: \(errno)"
        case .alreadyRunning:
            return "ProxyService.run() was called twice"
        }
    }
}

/// The listeners a reload needs that could not be bound (`ProxyService.prepare`), each naming
/// its frontend and address.
public struct ProxyBindFailures: Error, CustomStringConvertible, Equatable {
    public var failures: [ProxyError]
    public var description: String { failures.map(\.description).joined(separator: "; ") }
}
