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

extension Listener {
    /// What a takeover made of the sockets it received for one frontend address.
    struct AdoptedGroup {
        /// One per loop: the received sockets first, then any bound beside them.
        var listeners: [Listener]
        /// Received sockets in use.
        var taken: Int
        /// Sockets bound beside them (this convey runs more loops than the one replaced).
        var boundBeside: Int
        /// Received sockets beyond this convey's loops, closed here: the replaced convey's
        /// close then ends them.
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
    /// `ListenerHandover`), completed with sockets bound beside them when there are fewer
    /// than `count`; the rest are closed. Throws with nothing of its own left open (the
    /// received sockets it took are closed too: the replaced convey still holds them).
    static func adoptGroup(_ key: ListenerKey, sockets: [Int32], count: Int, owner: UInt32, networkNamespace: UInt64,
                           notSentLowWater: Int) throws(ProxyError) -> AdoptedGroup {
        var group = AdoptedGroup(listeners: [], taken: 0, boundBeside: 0, leftToClose: 0, invalid: 0)
        for fd in sockets {
            if group.listeners.count == count {
                SocketCalls.close(fd)
                group.leftToClose += 1
            } else if let listener = adopt(fd, at: key.address, owner: owner, networkNamespace: networkNamespace,
                                           notSentLowWater: notSentLowWater) {
                group.listeners.append(listener)
            } else {
                SocketCalls.close(fd)
                group.invalid += 1
            }
        }
        group.taken = group.listeners.count
        do {
            while group.listeners.count < count {
                let address = group.listeners.first?.address ?? key.address
                group.listeners.append(try bind(frontend: key.frontend, address: address, notSentLowWater: notSentLowWater))
                group.boundBeside += 1
            }
        } catch {
            for l in group.listeners { SocketCalls.close(l.fd) }
            throw error
        }
        return group
    }
}
