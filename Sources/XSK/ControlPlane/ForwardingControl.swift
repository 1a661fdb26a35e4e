import Balancer
import Logging
import Synchronization

/// The AF_XDP modes' control plane: turns the Balancer's forwarding snapshots and the kernel's
/// neighbour table into the `PacketRoutes` the workers forward by, and moves the workers'
/// per-backend traffic into the shared counters that `/stats` and `/metrics` read.
///
/// `refresh` runs on one task (the data plane service's timer); the counters' flush
/// (`XDPDataPlane.flushCounters`) runs there too, and also from a takeover's hand-over thread
/// and its setup, serialized by the flusher's lock. The read-side properties may be used from
/// any thread.
public final class ForwardingControl: Sendable {
    /// What the workers adopt between batches.
    public let routes: PacketRoutesPublisher
    private let snapshots: SnapshotPublisher<ForwardingSnapshot>
    private let interfaceIndex: Int32
    private let interfaceMAC: MACAddress
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var snapshotGeneration: UInt64 = 0
        var macs: [IPAddress: MACAddress] = [:]
        var unresolved: [PacketRoutes.Unresolved] = []
        /// Frontends whose backups stand in for servers without a known MAC.
        var onBackupForMAC: Set<String> = []
        var neighbourError: String?
        var publications = 0
        /// The VIPs of the routes published last (draining frontends' included).
        var vips: Set<Endpoint> = []
        /// Shutting down: no frontend takes new flows; established ones go on.
        var draining = false
    }

    /// - Parameters:
    ///   - snapshots: the runtime's publisher (config reloads, health changes, drains).
    ///   - interfaceIndex: where backends' MACs are looked up (the data-path interface).
    ///   - interfaceMAC: the source MAC of every transmitted frame.
    public init(snapshots: SnapshotPublisher<ForwardingSnapshot>, routes: PacketRoutesPublisher,
                interfaceIndex: Int32, interfaceMAC: MACAddress, logger: Logger) {
        self.snapshots = snapshots
        self.routes = routes
        self.interfaceIndex = interfaceIndex
        self.interfaceMAC = interfaceMAC
        self.logger = logger
    }

    /// Publishes new routes when the runtime published a new snapshot or (with
    /// `readNeighbours`) a backend's MAC appeared, changed or went away; does nothing
    /// otherwise. Returns whether it published. Without `readNeighbours` and with no new
    /// snapshot it costs one atomic load, so it can run often; the neighbour table is a netlink
    /// dump, read on a slower cadence and whenever the snapshot changed.
    @discardableResult
    public func refresh(force: Bool = false, readNeighbours: Bool = true) -> Bool {
        let (seen, waitingForSlot) = state.withLock { state in
            (state.snapshotGeneration, state.unresolved.contains(where: \.waitsForSlot))
        }
        // Servers wait for a backend slot and a retired one can be reused now: build again.
        let force = force || (waitingForSlot && routes.canReclaimSlots)
        if !force && !readNeighbours && snapshots.generation == seen { return false }
        let (loaded, generation) = snapshots.load()
        let macs = backendMACs(for: loaded)
        return state.withLock { state in
            guard force || generation != state.snapshotGeneration || macs != state.macs else { return false }
            let snapshot = state.draining ? Self.takingNoNewFlows(loaded) : loaded
            let published = routes.publish(snapshot: snapshot, backendMACs: macs, interfaceMAC: interfaceMAC)
            if state.publications > 0 {
                report(old: state.unresolved, new: published.unresolved, routes: published)
            } else if !published.unresolved.isEmpty {
                // At start the neighbour table rarely knows the backends yet: the health
                // checks about to run resolve them.
                logger.info("waiting for the backends' MAC addresses (resolved as health checks reach them)",
                            metadata: ["servers": "\(published.unresolved.map(\.server.description).joined(separator: ","))"])
            }
            state.snapshotGeneration = generation
            state.macs = macs
            state.vips = Set(loaded.frontends.map(\.config.listen))
            state.unresolved = published.unresolved
            let standIn = published.onBackupForMAC
            for (frontend, pool) in standIn.sorted(by: { $0.key < $1.key }) where !state.onBackupForMAC.contains(frontend) {
                logger.warning("frontend '\(frontend)': no server of pool '\(pool)' that could take new flows has a known MAC address; its backup servers take them")
            }
            // A stop's drain publishes routes that place no new flow: not news.
            for frontend in state.onBackupForMAC.sorted() where standIn[frontend] == nil && !state.draining {
                logger.notice("frontend '\(frontend)': its backup servers no longer stand in for servers without a known MAC address")
            }
            state.onBackupForMAC = Set(standIn.keys)
            state.publications += 1
            return true
        }
    }

    /// Stops placing new flows on any server (their SYNs are dropped as "no backend") while
    /// established flows go on: the start of a graceful shutdown.
    public func drain() {
        state.withLock { $0.draining = true }
        refresh(force: true, readNeighbours: false)
    }

    /// The longest `drain_timeout` of the frontends' pools now: how long a shutdown waits.
    public var longestDrainTimeout: Duration {
        snapshots.load().value.frontends.map(\.pool.drainTimeout).max() ?? .zero
    }

    /// `snapshot` with no server selectable: every flow it carries is one already placed.
    static func takingNoNewFlows(_ snapshot: ForwardingSnapshot) -> ForwardingSnapshot {
        var s = snapshot
        for i in s.frontends.indices {
            s.frontends[i].selectable = []
            s.frontends[i].standbyBackups = []
            s.frontends[i].maglev = nil
        }
        return s
    }

    /// Servers the data plane cannot select now (no known MAC), with the reason; for `/stats`.
    public var unresolved: [PacketRoutes.Unresolved] { state.withLock { $0.unresolved } }

    /// Frontends whose new flows go to backup servers because no other server has a known MAC
    /// (`on_backup` in `/stats`, as when the runtime sends them to backups).
    public var onBackupForMAC: Set<String> { state.withLock { $0.onBackupForMAC } }

    /// The VIPs the published routes forward: every frontend's, also those still draining
    /// (their established flows need steering until the drain ends).
    public var routedVIPs: Set<Endpoint> { state.withLock { $0.vips } }

    /// Routes published so far (1 after the first `refresh`).
    public var publications: Int { state.withLock { $0.publications } }

    /// The last neighbour-table read error, if the last read failed.
    public var neighbourError: String? { state.withLock { $0.neighbourError } }

    /// MACs of the snapshot's backends from the neighbour table of the data-path interface.
    /// A read failure keeps the MACs known before (and is logged once), so a transient
    /// netlink error never unroutes every backend.
    private func backendMACs(for snapshot: ForwardingSnapshot) -> [IPAddress: MACAddress] {
        let wanted = Set(snapshot.frontends.flatMap { $0.servers.map(\.address.address) })
        do {
            let table = try NeighbourTable.dump(interfaceIndex: interfaceIndex)
            state.withLock { $0.neighbourError = nil }
            var macs: [IPAddress: MACAddress] = [:]
            for entry in table where entry.isUsable && wanted.contains(entry.address) {
                macs[entry.address] = entry.mac
            }
            return macs
        } catch {
            return state.withLock { state in
                if state.neighbourError == nil {
                    logger.warning("cannot read the neighbour table; keeping the backend MACs known before",
                                   metadata: ["error": "\(error)"])
                }
                state.neighbourError = "\(error)"
                return state.macs.filter { wanted.contains($0.key) }
            }
        }
    }

    private func report(old: [PacketRoutes.Unresolved], new: [PacketRoutes.Unresolved], routes: PacketRoutes) {
        let before = Set(old.map(\.server)), after = Set(new.map(\.server))
        for u in new where !before.contains(u.server) {
            logger.warning("server left out of selection", metadata: ["server": "\(u.server)",
                                                                     "addr": "\(u.address)", "reason": "\(u.reason)"])
        }
        // A server also leaves the list when it goes down or away: only a known MAC is news.
        for u in old where !after.contains(u.server) && routes.hasMAC(u.server) {
            let news = u.waitsForSlot ? "server has a backend slot now (one was freed); in selection" : "server's MAC address known; in selection"
            logger.info("\(news)", metadata: ["server": "\(u.server)", "addr": "\(u.address)"])
        }
    }
}
