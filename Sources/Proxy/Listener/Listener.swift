#if canImport(Glibc)
import Glibc
#endif
import Balancer
import CLinux
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

/// A listening TCP socket of one frontend, as one event loop holds it.
///
/// A frontend has one socket, and every loop holds its own descriptor of it (`dup`) and waits
/// on it with `EPOLLEXCLUSIVE`: a new client wakes one loop waiting in `epoll_wait`, and the
/// loop that accepts moves to the back of the socket's wait queue (see
/// `EventLoop.acceptAll`), so idle loops take new clients in turn and a client never waits
/// for a busy loop while another is idle. One socket per loop with `SO_REUSEPORT` (hashing
/// each client to a loop, busy or not) gave 10 % fewer new connections per second on 2
/// shared CPUs, and spread 20 held connections 13/7 where this spreads them 10/10 (measured
/// with the proxy bench). The socket still has `SO_REUSEPORT`, so a takeover can bind beside
/// the convey it replaces where it is handed nothing.
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
    /// one socket bound to the configured address and a descriptor of it for each loop.
    /// Throws with nothing left open.
    static func bindGroup(_ key: ListenerKey, count: Int, notSentLowWater: Int) throws(ProxyError) -> [Listener] {
        let first = try bind(frontend: key.frontend, address: key.address, notSentLowWater: notSentLowWater)
        return try shared([first], count: count, frontend: key.frontend)
    }

    /// `count` listeners made of the distinct `sockets` (1 to `count` of them): each once,
    /// then copies in turn, so that every socket is served and every loop has one. Throws
    /// with nothing left open (the `sockets` included).
    private static func shared(_ sockets: [Listener], count: Int, frontend: String) throws(ProxyError) -> [Listener] {
        precondition(!sockets.isEmpty && sockets.count <= count, "more sockets than loops to serve them")
        var listeners = sockets
        do {
            while listeners.count < count {
                let original = sockets[listeners.count % sockets.count]
                listeners.append(Listener(fd: try SocketCalls.duplicate(original.fd), address: original.address))
            }
        } catch {
            for l in listeners { SocketCalls.close(l.fd) }
            throw .bindFailed(frontend: frontend, address: sockets[0].address, errno: error)
        }
        return listeners
    }
}

extension Listener {
    /// What a takeover made of the sockets it received for one frontend address.
    struct AdoptedGroup {
        /// One per loop: the received sockets, shared by the loops (see `Listener`); sockets
        /// bound here when none of those received could be used.
        var listeners: [Listener]
        /// Distinct received sockets in use: 1 from a convey that shares one socket among its
        /// loops; one per loop from a convey that gave each loop its own (`SO_REUSEPORT`),
        /// all served here (copies in turn when this convey runs more loops).
        var taken: Int
        /// Distinct received sockets beyond this convey's loops, closed here: the replaced
        /// convey's close then ends them.
        var leftToClose: Int
        /// Received descriptors that were no TCP socket listening at the address (closed).
        var invalid: Int
    }

    /// A socket received in a takeover's handover, checked to be a TCP socket listening at
    /// `address`, made by user `owner` (the convey that handed it) in the network namespace
    /// `networkNamespace` (when the kernel tells: 0 skips the check); nil (the caller closes
    /// it) otherwise. Made non-blocking, with this convey's options for accepted sockets.
    static func adopt(_ fd: Int32, at address: Endpoint, owner: UInt32, networkNamespace: UInt64, notSentLowWater: Int) -> Listener? {
        guard SocketCalls.socketOption(fd, SO_ACCEPTCONN) == 1, SocketCalls.socketOption(fd, SO_PROTOCOL) == Int32(IPPROTO_TCP),
              let bound = SocketCalls.localEndpoint(fd), bound == address else { return nil }
        // A socket's inode belongs to the user that made it.
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_uid == owner else { return nil }
        if networkNamespace != 0 {
            let cookie = cl_netns_cookie(fd)
            guard cookie == 0 || cookie == networkNamespace else { return nil }
        }
        guard (try? SocketCalls.setNonBlocking(fd)) != nil else { return nil }
        SocketCalls.setNoDelay(fd)
        SocketCalls.setNotSentLowWater(fd, bytes: notSentLowWater)
        return Listener(fd: fd, address: bound)
    }

    /// One listener per loop for `key` from the `sockets` a takeover received for it (see
    /// `ListenerHandover`): copies of one socket count once, and the distinct sockets are
    /// shared out among the `count` loops (each served; those beyond `count` closed). When
    /// none can be used, a socket is bound beside them. Throws with nothing of its own left
    /// open (the received sockets it took are closed too: the replaced convey still holds
    /// them).
    static func adoptGroup(_ key: ListenerKey, sockets: [Int32], count: Int, owner: UInt32, networkNamespace: UInt64,
                           notSentLowWater: Int) throws(ProxyError) -> AdoptedGroup {
        var group = AdoptedGroup(listeners: [], taken: 0, leftToClose: 0, invalid: 0)
        var distinct: [Listener] = []
        var seen: Set<SocketIdentity> = []
        for fd in sockets {
            let identity = SocketCalls.identity(fd)
            if let identity, seen.contains(identity) {
                SocketCalls.close(fd) // another descriptor of a socket already counted
                continue
            }
            guard let listener = adopt(fd, at: key.address, owner: owner, networkNamespace: networkNamespace,
                                       notSentLowWater: notSentLowWater) else {
                SocketCalls.close(fd)
                group.invalid += 1
                continue
            }
            if let identity { seen.insert(identity) }
            if distinct.count == count {
                SocketCalls.close(fd)
                group.leftToClose += 1
            } else {
                distinct.append(listener)
            }
        }
        group.taken = distinct.count
        if distinct.isEmpty {
            group.listeners = try bindGroup(key, count: count, notSentLowWater: notSentLowWater)
        } else {
            group.listeners = try shared(distinct, count: count, frontend: key.frontend)
        }
        return group
    }
}
