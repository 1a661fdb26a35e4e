#if canImport(Glibc)
import Glibc
#endif
import Balancer
import SystemPackage

/// A frontend at one configured listen address: what a listener is bound for. A frontend that
/// a reload moves gets a new key (and new listeners); its old address drains.
struct ListenerKey: Hashable, Sendable, CustomStringConvertible {
    var frontend: String
    /// The address as configured (port 0 stays 0 here; the listener knows the real one).
    var address: Endpoint

    init(frontend: String, address: Endpoint) {
        self.frontend = frontend
        self.address = address
    }

    init(_ config: FrontendConfig) { self.init(frontend: config.name, address: config.listen) }

    var description: String { "\(frontend)@\(address)" }
}

/// A listening TCP socket of one frontend in one event loop.
///
/// Every loop binds its own socket to the frontend's address with `SO_REUSEPORT`, so the kernel
/// spreads new connections over the loops by flow hash and no loop ever takes a lock or wakes
/// another to accept.
struct Listener: Sendable {
    /// The listening descriptor (non-blocking, close-on-exec).
    let fd: Int32
    /// The address really bound (differs from the configured one when that had port 0).
    let address: Endpoint

    /// The accept queue length asked of `listen(2)` (the kernel caps it at `somaxconn`).
    static let backlog: Int32 = 4096

    /// Throws `.bindFailed(addressInUse)` when another socket holds `address`, even one with
    /// `SO_REUSEPORT`: the listeners share the port with `SO_REUSEPORT`, which would otherwise
    /// let a second convey (or any process of the same user) silently take part of the traffic.
    /// A probe bound without `SO_REUSEPORT` conflicts with every listener there.
    static func checkFree(frontend: String, address: Endpoint) throws(ProxyError) {
        guard address.port != 0 else { return }
        let fd: Int32
        do { fd = try SocketCalls.tcpSocket(for: address.address) } catch {
            throw .bindFailed(frontend: frontend, address: address, errno: error)
        }
        defer { SocketCalls.close(fd) }
        do {
            try SocketCalls.setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
            if !address.address.isIPv4 {
                try SocketCalls.setOption(fd, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, value: 1)
            }
            try SocketCalls.bind(fd, to: address)
        } catch {
            throw .bindFailed(frontend: frontend, address: address, errno: error)
        }
    }

    /// Creates, binds and listens; the error names the frontend and address for the operator.
    /// `notSentLowWater`: `TCP_NOTSENT_LOWAT` for the accepted sockets (see `ProxyTuning`).
    static func bind(frontend: String, address: Endpoint, notSentLowWater: Int = 0) throws(ProxyError) -> Listener {
        let fd: Int32
        do { fd = try SocketCalls.tcpSocket(for: address.address) } catch {
            throw .bindFailed(frontend: frontend, address: address, errno: error)
        }
        do {
            try SocketCalls.setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
            try SocketCalls.setOption(fd, level: SOL_SOCKET, name: SO_REUSEPORT, value: 1)
            // Accepted sockets inherit TCP_NODELAY and TCP_NOTSENT_LOWAT from the listener:
            // one setsockopt per listener instead of one per client.
            SocketCalls.setNoDelay(fd)
            SocketCalls.setNotSentLowWater(fd, bytes: notSentLowWater)
            if !address.address.isIPv4 {
                try SocketCalls.setOption(fd, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, value: 1)
            }
            try SocketCalls.bind(fd, to: address)
            try SocketCalls.listen(fd, backlog: backlog)
        } catch {
            SocketCalls.close(fd)
            throw .bindFailed(frontend: frontend, address: address, errno: error)
        }
        return Listener(fd: fd, address: SocketCalls.localEndpoint(fd) ?? address)
    }
}

extension Listener {
    /// One listener per loop for `key`, as `ProxyService` binds them at start and on reload:
    /// the first on the configured address, the others on the address it got (so a
    /// configured port 0 means one ephemeral port shared by all loops). Throws with nothing
    /// left open.
    static func bindGroup(_ key: ListenerKey, count: Int, notSentLowWater: Int) throws(ProxyError) -> [Listener] {
        var listeners: [Listener] = []
        do {
            for _ in 0..<count {
                let address = listeners.first?.address ?? key.address
                listeners.append(try bind(frontend: key.frontend, address: address, notSentLowWater: notSentLowWater))
            }
        } catch {
            for l in listeners { SocketCalls.close(l.fd) }
            throw error
        }
        return listeners
    }
}
