#if canImport(Glibc)
import Glibc
#endif
import Balancer
import CLinux
import Synchronization

/// A copy (`dup`) of one of a loop's listening sockets, by its frontend's configured address.
struct ListenerCopy: Sendable {
    var address: Endpoint
    var fd: Int32
}

/// What the service shares with one event loop thread: requests in (drain, stop), a wake-up
/// eventfd, and the loop's live figures out (for `ProxyService.status()`).
final class LoopControl: Sendable {
    let index: Int
    /// eventfd the loop polls; written to wake it for a drain or stop request.
    let wakeFD: Int32
    let drainRequested = Atomic<Bool>(false)
    let stopRequested = Atomic<Bool>(false)

    let openConnections = Atomic<Int>(0)
    let acceptedTotal = Atomic<Int>(0)
    let acceptPauses = Atomic<Int>(0)
    let pipesPooled = Atomic<Int>(0)
    let pipesInUse = Atomic<Int>(0)
    let copyFallbacks = Atomic<Int>(0)
    let draining = Atomic<Bool>(false)
    /// Clients the loop holds waiting for a place at a server with `max_connections`: a loop
    /// that frees such a place wakes the loops where this is not zero.
    let queuedClients = Atomic<Int>(0)
    /// A peer woke the loop for a freed place and the loop has not looked yet: further
    /// frees skip the eventfd write (one wake serves them all).
    let placeWakePending = Atomic<Bool>(false)
    /// The snapshot generation the loop last adopted (see `ProxyService.prepare`).
    let adoptedGeneration = Atomic<UInt64>(0)
    /// Requests for the loop's connections (`/flows`), answered between turns.
    let listing = ConnectionListing()
    /// Requests for copies of the loop's listening sockets (a takeover's handover), answered
    /// between turns; copies nobody collects are closed.
    /// nil: the loop could not copy every one (out of descriptors).
    let listenerCopies = LoopChannel<Void, [ListenerCopy]?>(discard: { copies in
        for copy in copies ?? [] { _ = Glibc.close(copy.fd) }
    })

    /// Listeners the service bound for a reload (new frontends and addresses), waiting for the
    /// loop to adopt the snapshot that has them. Touched only when a reload is prepared and
    /// when the loop adopts a snapshot, never on the data path.
    private let handed = Mutex<(listeners: [ListenerKey: Listener], refused: Bool)>(([:], false))

    /// Gives the loop a listener for `key` (closing one handed earlier and never taken). A loop
    /// that takes no more listeners (draining, stopped, or never started) gets it closed at
    /// once: a listener nobody accepts on would hold clients in its backlog unanswered.
    func hand(_ listener: Listener, for key: ListenerKey) {
        let closing = handed.withLock { state -> Listener? in
            if state.refused { return listener }
            return state.listeners.updateValue(listener, forKey: key)
        }
        if let closing { SocketCalls.close(closing.fd) }
    }

    /// The listener handed for `key`, if any; the caller owns it from then on.
    func takeHanded(_ key: ListenerKey) -> Listener? {
        handed.withLock { $0.listeners.removeValue(forKey: key) }
    }

    /// Closes the handed listeners the loop has not taken, except those for `keep`.
    func discardHanded(keeping keep: Set<ListenerKey> = []) {
        let dropped = handed.withLock { state -> [Listener] in
            let gone = state.listeners.filter { !keep.contains($0.key) }
            for key in gone.keys { state.listeners[key] = nil }
            return Array(gone.values)
        }
        for l in dropped { SocketCalls.close(l.fd) }
    }

    /// True once the loop takes no more listeners.
    var refusesListeners: Bool { handed.withLock { $0.refused } }

    /// The loop takes no more listeners: closes those handed and not taken, and any later one.
    func refuseHandedListeners() {
        handed.withLock { $0.refused = true }
        discardHanded()
    }

    /// Wakes the loop so that it adopts a newly published snapshot now rather than at its
    /// next event or timeout.
    func wakeToAdopt() { wake() }

    init(index: Int, wakeFD: Int32) {
        self.index = index
        self.wakeFD = wakeFD
    }

    deinit {
        refuseHandedListeners()
        _ = Glibc.close(wakeFD)
    }

    /// Stop accepting; let connections end, up to their pool's drain timeout.
    func requestDrain() {
        drainRequested.store(true, ordering: .releasing)
        wake()
    }

    /// Close everything now and return.
    func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        wake()
    }

    /// Wakes the loop to retry its waiting clients: a place it may use was freed (before
    /// this call, which publishes it). One eventfd write until the loop has looked.
    func wakeForPlace() {
        // A load first: while a wake is pending, frees write nothing to this shared line.
        // Sequentially consistent with the place's release before it and the loop's clearing
        // exchange and place loads after: a pending flag seen here is cleared after this free.
        if placeWakePending.load(ordering: .sequentiallyConsistent) { return }
        if !placeWakePending.exchange(true, ordering: .sequentiallyConsistent) { wake() }
    }

    /// Wakes the loop from its `epoll_wait`.
    func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }
}
