import Balancer

/// What the stats page shows about proxy mode, read at one instant (`ProxyService.status()`).
public struct ProxyStatus: Sendable, Equatable {
    /// One event loop's figures.
    public struct Loop: Sendable, Equatable {
        public var index: Int
        /// Connections open on this loop (client side accepted and not yet closed).
        public var openConnections: Int
        /// Clients accepted by this loop since start.
        public var acceptedTotal: Int
        /// Times the loop paused accepting because descriptors (or memory) ran out; the
        /// clients waited in the accept queue meanwhile.
        public var acceptPauses: Int
        /// Empty pipes kept for reuse.
        public var pipesPooled: Int
        /// Pipes attached to open connections.
        public var pipesInUse: Int
        /// Directions that had to use read/write because splice was refused or no pipe was left.
        public var copyFallbacks: Int
        /// True once the loop stopped accepting for a graceful shutdown.
        public var draining: Bool
    }

    public var loops: [Loop]
    /// Where each frontend listens (by frontend name), as bound; empty before `run()` bound them.
    public var listening: [String: Endpoint]

    /// Connections open over all loops.
    public var openConnections: Int { loops.reduce(0) { $0 + $1.openConnections } }
    /// Pipes attached to connections over all loops.
    public var pipesInUse: Int { loops.reduce(0) { $0 + $1.pipesInUse } }
    /// Pooled pipes over all loops.
    public var pipesPooled: Int { loops.reduce(0) { $0 + $1.pipesPooled } }
}
