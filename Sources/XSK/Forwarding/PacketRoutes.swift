import Balancer

/// Everything a packet forwarder needs to place and keep flows, as one immutable object built
/// by the control plane from a `ForwardingSnapshot` and the neighbour table, and swapped in
/// atomically through `PacketRoutesPublisher`.
///
/// What it holds:
/// - VIP lookup: (address, port) → frontend index through a small open-addressed table;
///   a lookup reads two cache lines and allocates nothing.
/// - Backends by slot (`BackendSlotRegistry`: stable across builds; one per frontend and
///   server): address, port, MAC, and
///   flags (present in this snapshot, keeps its flows, has a MAC). Flows name their backend by
///   slot, so they survive any swap; a slot that left the snapshot, or whose drain ended
///   (`keepsFlows == false`), ends its flows.
/// - Per frontend, the candidates for new flows: the selectable servers that have a MAC, and
///   for `maglev`/`source` a Maglev table mapping hash → slot. It is the runtime's table when
///   every selectable server has a MAC (so placement equals `Scheduler` for the same 5-tuple on
///   every balancer); otherwise a table rebuilt over the servers that do, with the same keys —
///   what the runtime itself would build if the others were down. `wrr` walks a precomputed
///   smooth weighted sequence (each worker its own cursor); `leastconn` compares the open
///   flows of the frontend's slots over every worker (`OpenFlowCounts`: one shared load per
///   candidate per SYN).
/// - `max_connections`: per limited server and frontend, the slots whose open flows count
///   against the limit (every slot of that server or frontend, held ones included), in
///   `slots` after the candidates (`Backend.limitSlots*`, `Frontend.limitSlots*`).
/// - `unresolved`: servers that cannot take flows because the neighbour table has no MAC for
///   them (or no slot was left); /stats shows them.
///
/// The buffers are allocated in `init` and freed in `deinit`; workers keep a strong reference to
/// the routes they use and read through raw pointers, so the packet path does no reference
/// counting.
public final class PacketRoutes: @unchecked Sendable {
    /// A backend as the packet path reads it.
    struct Backend {
        var addressHi: UInt64
        var addressLo: UInt64
        var mac: UInt64
        /// The Ethernet addresses of a frame to this backend: its MAC, then the interface's.
        var ethernet: EthernetAddresses = .zero
        var port: UInt16
        let flags: UInt8
        /// The `usable` bits this backend lacks: zero when established flows may go on (one
        /// byte compare on the packet path instead of a mask and compare).
        let unusableBits: UInt8
        var weight: UInt16
        /// The server's `max_connections` (0: none): a new flow goes elsewhere while the open
        /// flows of `limitSlots` (every slot of this server, under any frontend) reach it.
        var limit: UInt32 = 0
        /// Where the server's slots start in `slots`, and how many there are (with a limit).
        var limitSlotsStart: Int32 = 0
        var limitSlotsCount: Int32 = 0
        /// Pads a backend to 64 bytes: one cache line, and indexing is one shift.
        private var padding: UInt32 = 0

        init(addressHi: UInt64, addressLo: UInt64, mac: UInt64, port: UInt16, flags: UInt8, weight: UInt16,
             interfaceMAC: UInt64 = 0) {
            self.addressHi = addressHi
            self.addressLo = addressLo
            self.mac = mac
            ethernet = EthernetAddresses(destination: mac, source: interfaceMAC)
            self.port = port
            self.flags = flags
            unusableBits = Self.usable & ~flags
            self.weight = weight
        }

        static let present: UInt8 = 1
        static let keepsFlows: UInt8 = 2
        static let hasMAC: UInt8 = 4
        static let ipv6: UInt8 = 8
        /// Present, keeping flows and with a MAC: established flows may go on.
        static let usable: UInt8 = present | keepsFlows | hasMAC
    }

    /// A frontend as the packet path reads it.
    struct Frontend {
        var vipHi: UInt64
        var vipLo: UInt64
        var vipPort: UInt16
        var algorithm: UInt8
        var isIPv6: Bool
        var candidatesStart: Int32
        var candidatesCount: Int32
        var maglevStart: Int32
        /// 0: no table, place by `candidates[hash mod count]` (as `Scheduler` does without one).
        var maglevSize: Int32
        var sequenceStart: Int32
        var sequenceCount: Int32
        /// False at an index no frontend of these routes has (free, or retired with flows
        /// of a removed VIP still to be swept): no lookup returns it.
        var present = true
        /// The frontend's `deny` prefixes, then its `allow` ones, in `sourcePrefixes`.
        var sourcesStart: Int32 = 0
        var denyCount: Int32 = 0
        var allowCount: Int32 = 0
        /// The frontend's `max_connections` (0: none): no new flow while the open flows of
        /// `limitSlots` (every slot of this frontend, those of servers it left included) reach it.
        var limit: UInt32 = 0
        var limitSlotsStart: Int32 = 0
        var limitSlotsCount: Int32 = 0

        /// What stands at an index without a frontend.
        static let absent = Frontend(vipHi: 0, vipLo: 0, vipPort: 0, algorithm: wrr, isIPv6: false, candidatesStart: 0,
                                     candidatesCount: 0, maglevStart: 0, maglevSize: 0, sequenceStart: 0,
                                     sequenceCount: 0, present: false)

        static let wrr: UInt8 = 0
        static let leastconn: UInt8 = 1
        static let maglev: UInt8 = 2
        static let source: UInt8 = 3
    }

    /// A server that cannot take new flows for a reason the data plane owns.
    public struct Unresolved: Sendable, Equatable, CustomStringConvertible {
        public var server: ServerID
        public var address: Endpoint
        public var reason: String
        public var description: String { "\(server) (\(address)): \(reason)" }
        /// True when the server found every backend slot taken (a freed one would take it).
        var waitsForSlot: Bool { reason.hasPrefix(PacketRoutes.noSlotReason) }
    }

    /// The most frontends routes hold (flow entries name a frontend in 16 bits).
    public static let maxFrontends = 65_535

    /// The `Unresolved.reason` of a server that found every backend slot taken.
    static let noSlotReason = "no backend slot left"

    /// Frontend indices in use or retired (the size of `frontends`; see `FrontendIndexRegistry`).
    let frontendCount: Int
    /// The frontends of these routes (the rest are absent).
    let presentFrontendCount: Int
    /// With exactly one frontend, its index.
    let singleFrontendIndex: Int
    /// The indices of the frontends in these routes.
    let usedFrontendIndices: Set<UInt32>
    let frontends: UnsafeMutablePointer<Frontend>
    let vipBuckets: UnsafeMutablePointer<UInt16>
    let vipMask: Int
    let backendCount: Int
    let backends: UnsafeMutablePointer<Backend>
    /// The slots of the backends in these routes (the rest are free or retired).
    let usedSlots: Set<UInt32>
    let slots: UnsafeMutablePointer<UInt32>
    let slotsCount: Int
    /// Every frontend's `allow` / `deny` prefixes (see `Frontend.sourcesStart`).
    let sourcePrefixes: UnsafeMutablePointer<SourceFilter.Prefix>

    /// The interface's own MAC: the source of every transmitted frame.
    public let interfaceMAC: MACAddress
    /// Servers left out of selection by the data plane (no MAC, no slot).
    public let unresolved: [Unresolved]
    /// Frontends (name → pool) whose new flows go to backup servers because no server that
    /// could take them has a known MAC: on backup although the runtime, which knows nothing
    /// of MACs, does not say so.
    public let onBackupForMAC: [String: String]
    /// The frontends' names, by frontend index ("" where none).
    public let frontendNames: [String]
    /// Where `BackendStatsFlusher` books each slot's traffic: the counters of its server and
    /// of its frontend in this snapshot, or, for a slot that left the routes but is not free
    /// yet, the ones it had when it left (its last flows' ends and bytes still arrive, and its
    /// server may live on under another frontend); nil for free slots.
    public let serverCounters: [ServerCounters?]
    public let frontendCounters: [FrontendCounters?]
    /// The server of each slot in this snapshot (nil for slots not in it).
    public let servers: [ServerID?]
    /// The counters of each frontend index's frontend in this snapshot (nil where none), for
    /// its `no_backend`.
    public let frontendCountersByIndex: [FrontendCounters?]

    /// Routes with no frontend: every frame is dropped (before the first publish).
    convenience init() {
        self.init(snapshot: ForwardingSnapshot(frontends: []), backendMACs: [:], interfaceMAC: MACAddress(rawValue: 0),
                  registry: BackendSlotRegistry(limit: 0), frontendRegistry: FrontendIndexRegistry(limit: 0))
    }

    /// Routes for `snapshot`; `previous` (the routes these replace) lends its counters to the
    /// slots that left but are still held (see `serverCounters`).
    init(snapshot: ForwardingSnapshot, backendMACs: [IPAddress: MACAddress], interfaceMAC: MACAddress,
         registry: BackendSlotRegistry, frontendRegistry: FrontendIndexRegistry, previous: PacketRoutes? = nil) {
        self.interfaceMAC = interfaceMAC
        var unresolved: [Unresolved] = []
        var onBackupForMAC: [String: String] = [:]
        var backendList: [Int: Backend] = [:]
        var counters: [Int: ServerCounters] = [:]
        var frontendCountersOfSlot: [Int: FrontendCounters] = [:]
        var ids: [Int: ServerID] = [:]
        var limits: [Int: Int] = [:]
        var frontendList: [(index: Int, frontend: Frontend)] = []
        var slotList: [UInt32] = []
        var prefixList: [SourceFilter.Prefix] = []
        var names: [Int: String] = [:]
        var countersOfIndex: [Int: FrontendCounters] = [:]
        var frontendLimits: [Int: Int] = [:]

        // Frontend indices are 16-bit in flow keys and the VIP table: 65535 frontends at most.
        for route in snapshot.frontends {
            // A VIP keeps its index for as long as it is routed (flow keys hold it); a second
            // frontend on the same VIP (refused by config validation) would be skipped.
            guard let index = frontendRegistry.slot(for: route.config.listen).map(Int.init), names[index] == nil else {
                continue
            }
            // Slots of every server of the route (nil: none left).
            var routeSlots: [UInt32?] = []
            for server in route.servers {
                let key = BackendKey(frontend: route.config.listen, id: server.id, address: server.address)
                guard let slot = registry.slot(for: key) else {
                    routeSlots.append(nil)
                    if !unresolved.contains(where: { $0.server == server.id }) {
                        unresolved.append(Unresolved(server: server.id, address: server.address,
                                                     reason: "\(Self.noSlotReason) (limit \(registry.limit))"))
                    }
                    continue
                }
                routeSlots.append(slot)
                let wide = StableHash.widened(server.address.address)
                let mac = backendMACs[server.address.address]
                var flags = Backend.present
                if server.keepsFlows { flags |= Backend.keepsFlows }
                if let mac, !mac.isZero { flags |= Backend.hasMAC }
                if !server.address.address.isIPv4 { flags |= Backend.ipv6 }
                backendList[Int(slot)] = Backend(addressHi: wide.hi, addressLo: wide.lo, mac: mac?.rawValue ?? 0,
                                                 port: server.address.port, flags: flags,
                                                 weight: UInt16(clamping: max(0, server.weight)),
                                                 interfaceMAC: interfaceMAC.rawValue)
                counters[Int(slot)] = server.counters
                frontendCountersOfSlot[Int(slot)] = route.counters
                ids[Int(slot)] = server.id
                limits[Int(slot)] = server.maxConnections
                if flags & Backend.hasMAC == 0, server.state == .up || server.state == .standby,
                   !unresolved.contains(where: { $0.server == server.id }) {
                    unresolved.append(Unresolved(server: server.id, address: server.address,
                                                 reason: "no MAC address in the neighbour table"))
                }
            }
            // Candidates: selectable servers with a slot and a MAC, in `selectable` order; when
            // none has a MAC yet, the backup servers standing by that have one.
            func withMAC(_ indices: [Int]) -> [Int] {
                indices.filter { i in routeSlots[i].map { backendList[Int($0)]!.flags & Backend.hasMAC != 0 } ?? false }
            }
            var eligible = withMAC(route.selectable)
            if eligible.isEmpty {
                // (Backups stand by only while a non-backup server is selectable.)
                eligible = withMAC(route.standbyBackups)
                if !eligible.isEmpty { onBackupForMAC[route.name] = route.config.pool }
            }
            let vip = StableHash.widened(route.config.listen.address)
            var f = Frontend(vipHi: vip.hi, vipLo: vip.lo, vipPort: route.config.listen.port, algorithm: Frontend.wrr,
                             isIPv6: !route.config.listen.address.isIPv4,
                             candidatesStart: Int32(slotList.count), candidatesCount: Int32(eligible.count),
                             maglevStart: 0, maglevSize: 0, sequenceStart: 0, sequenceCount: 0)
            slotList.append(contentsOf: eligible.map { routeSlots[$0]! })
            let sources = route.config.sources
            f.sourcesStart = Int32(prefixList.count)
            f.denyCount = Int32(sources.deny.count)
            f.allowCount = Int32(sources.allow.count)
            prefixList += sources.deny + sources.allow
            switch route.config.balance {
            case .leastconn:
                f.algorithm = Frontend.leastconn  // picks among the candidates: no sequence
            case .wrr:
                f.algorithm = Frontend.wrr
                // Large weights over many servers (or a slow_start ramp's scaled ones) would
                // make the exact cycle long and slow to build: it is scaled to `maxWRRCycle`.
                let sequence = SmoothWeightedRoundRobin.cycle(weights: eligible.map { route.servers[$0].weight },
                                                              scaledTo: FrontendRoute.maxWRRCycle)
                f.sequenceStart = Int32(slotList.count)
                f.sequenceCount = Int32(sequence.count)
                slotList.append(contentsOf: sequence.map { routeSlots[eligible[$0]]! })
            case .maglev, .source:
                f.algorithm = route.config.balance == .maglev ? Frontend.maglev : Frontend.source
                var table: MaglevTable? = nil
                if eligible == route.selectable {
                    if let t = route.maglev, t.backendCount == eligible.count { table = t }
                } else if !eligible.isEmpty {
                    table = MaglevTable(backends: eligible.map { (route.servers[$0].address.description,
                                                                  route.servers[$0].weight) })
                }
                if let table {
                    f.maglevStart = Int32(slotList.count)
                    f.maglevSize = Int32(table.size)
                    slotList.append(contentsOf: table.entries.map { $0 < 0 ? UInt32.max : routeSlots[eligible[Int($0)]]! })
                }
            }
            frontendList.append((index, f))
            names[index] = route.name
            countersOfIndex[index] = route.counters
            frontendLimits[index] = route.config.maxConnections
        }

        frontendCount = frontendRegistry.count
        presentFrontendCount = frontendList.count
        singleFrontendIndex = frontendList.count == 1 ? frontendList[0].index : -1
        usedFrontendIndices = Set(frontendList.map { UInt32($0.index) })
        frontends = .allocate(capacity: max(1, frontendCount))
        frontends.initialize(repeating: .absent, count: max(1, frontendCount))
        for (index, f) in frontendList { frontends[index] = f }
        frontendNames = (0..<frontendCount).map { names[$0] ?? "" }
        frontendCountersByIndex = (0..<frontendCount).map { countersOfIndex[$0] }

        backendCount = registry.count
        usedSlots = Set(backendList.keys.map { UInt32($0) })
        backends = .allocate(capacity: max(1, backendCount))
        backends.initialize(repeating: Backend(addressHi: 0, addressLo: 0, mac: 0, port: 0, flags: 0, weight: 0),
                            count: max(1, backendCount))
        for (slot, b) in backendList { backends[slot] = b }
        func carried<T>(_ slot: Int, _ old: [T?]?) -> T? {
            guard registry.isHeld(slot), let old, slot < old.count else { return nil }
            return old[slot]
        }
        serverCounters = (0..<backendCount).map { counters[$0] ?? carried($0, previous?.serverCounters) }
        frontendCounters = (0..<backendCount).map { frontendCountersOfSlot[$0] ?? carried($0, previous?.frontendCounters) }
        servers = (0..<backendCount).map { ids[$0] }
        // Each limited server's slots, once: the ones these routes give it under any
        // frontend, and those it left that still carry flows (held slots booked to the same
        // server's counters).
        var slotsOfServer: [ObjectIdentifier: [UInt32]] = [:]
        for slot in 0..<backendCount {
            if let c = serverCounters[slot] { slotsOfServer[ObjectIdentifier(c), default: []].append(UInt32(slot)) }
        }
        var groupStart: [ObjectIdentifier: Int32] = [:]
        for (slot, limit) in limits.sorted(by: { $0.key < $1.key }) where limit > 0 {
            guard let c = serverCounters[slot], let group = slotsOfServer[ObjectIdentifier(c)] else { continue }
            let start = groupStart[ObjectIdentifier(c)] ?? {
                let start = Int32(slotList.count)
                slotList.append(contentsOf: group)
                return start
            }()
            groupStart[ObjectIdentifier(c)] = start
            backends[slot].limit = UInt32(clamping: limit)
            backends[slot].limitSlotsStart = start
            backends[slot].limitSlotsCount = Int32(group.count)
        }
        // Each limited frontend's slots: the same, by the frontend counters each slot books to.
        var slotsOfFrontend: [ObjectIdentifier: [UInt32]] = [:]
        for slot in 0..<backendCount {
            if let c = frontendCounters[slot] { slotsOfFrontend[ObjectIdentifier(c), default: []].append(UInt32(slot)) }
        }
        for (index, limit) in frontendLimits.sorted(by: { $0.key < $1.key }) where limit > 0 {
            guard let c = countersOfIndex[index] else { continue }
            let group = slotsOfFrontend[ObjectIdentifier(c)] ?? []
            frontends[index].limit = UInt32(clamping: limit)
            frontends[index].limitSlotsStart = Int32(slotList.count)
            frontends[index].limitSlotsCount = Int32(group.count)
            slotList.append(contentsOf: group)
        }

        slotsCount = slotList.count
        slots = .allocate(capacity: max(1, slotList.count))
        slots.initialize(from: slotList, count: slotList.count)
        sourcePrefixes = .allocate(capacity: max(1, prefixList.count))
        sourcePrefixes.initialize(from: prefixList, count: prefixList.count)

        var buckets = 8
        while buckets < frontendList.count * 2 { buckets <<= 1 }
        vipMask = buckets - 1
        vipBuckets = .allocate(capacity: buckets)
        vipBuckets.initialize(repeating: 0, count: buckets)
        for (i, f) in frontendList {
            var b = Self.vipHash(hi: f.vipHi, lo: f.vipLo, port: f.vipPort) & vipMask
            while vipBuckets[b] != 0 { b = (b + 1) & vipMask }
            vipBuckets[b] = UInt16(i + 1)
        }
        self.unresolved = unresolved
        self.onBackupForMAC = onBackupForMAC
    }

    deinit {
        sourcePrefixes.deallocate()
        frontends.deallocate()
        backends.deallocate()
        slots.deallocate()
        vipBuckets.deallocate()
    }

    @inline(__always)
    static func vipHash(hi: UInt64, lo: UInt64, port: UInt16) -> Int {
        let h = (lo ^ hi ^ UInt64(port) << 40) &* 0x9E37_79B9_7F4A_7C15
        return Int(truncatingIfNeeded: h >> 40)
    }

    /// The frontend index for a destination (address halves in the widened form, port), or -1.
    @inline(__always)
    func frontendIndex(hi: UInt64, lo: UInt64, port: UInt16) -> Int {
        var b = Self.vipHash(hi: hi, lo: lo, port: port) & vipMask
        while true {
            let v = Int(vipBuckets[b])
            if v == 0 { return -1 }
            let f = frontends + (v - 1)
            if f.pointee.vipLo == lo, f.pointee.vipPort == port, f.pointee.vipHi == hi { return v - 1 }
            b = (b + 1) & vipMask
        }
    }

    /// The frontend index named `name` (tests and the control plane).
    public func frontendIndex(named name: String) -> Int? {
        name.isEmpty ? nil : frontendNames.firstIndex(of: name)
    }

    /// The first slot of `server` in these routes, if it is in them (tests; a server has one
    /// slot per frontend whose pool holds it).
    public func slot(of server: ServerID) -> Int? { servers.firstIndex { $0 == server } }

    /// True when `server` is in these routes with a known MAC (under any frontend).
    public func hasMAC(_ server: ServerID) -> Bool {
        servers.indices.contains { servers[$0] == server && backends[$0].flags & Backend.hasMAC != 0 }
    }

    /// Slots assigned so far (the size per-backend arrays need).
    public var slotCount: Int { backendCount }

    /// The address and port of the backend in `slot`, if these routes hold one there.
    public func backendEndpoint(slot: Int) -> Endpoint? {
        guard slot >= 0, slot < backendCount, backends[slot].flags & Backend.present != 0 else { return nil }
        let b = backends[slot]
        let address: IPAddress = StableHash.mappedIPv4(hi: b.addressHi, lo: b.addressLo).map { .v4($0) } ?? .v6(b.addressHi, b.addressLo)
        return Endpoint(address: address, port: b.port)
    }
}
