import Balancer

/// A takeover's flow hand-over, on the forwarder's side: `exportFlows` writes a stopped
/// worker's table into a `FlowPart`; `importFlows` enters a part's flows into a worker that
/// has not started yet, as if it had seen those connections itself. Neither runs on the
/// packet path, but both run while the replaced convey is paused, over up to millions of
/// flows: records go straight between table and document, never through an array.
extension ForwarderCore {
    /// Every flow this worker tracks. Call it only while no packet is handled (the worker
    /// stopped). Flows whose frontend or server these routes no longer name (a drain under way
    /// for a removed frontend whose routes are gone) are left out.
    func exportFlows() -> FlowPart {
        // The servers the records name: these routes' servers, each once.
        var servers = ServerNumbering()
        let serverOfSlot = routes.servers.prefix(backendCount).map { id in id.map { servers.index(of: $0) } ?? .max }
        // The occupied slots from the table's bitmap, each loaded well ahead of its turn, and
        // (passthrough) its reverse map entry once the slot has arrived: both are scattered,
        // a cache and TLB miss each.
        let slots = table.occupiedSlots()
        var writer = FlowPartWriter(servers: servers.order, atMost: slots.count)
        let ahead = 8
        for k in 0..<min(2 * ahead, slots.count) { table.prefetch(home: slots[k]) }
        writer.append(slots.count) { k in
            if k + 2 * ahead < slots.count { table.prefetch(home: slots[k + 2 * ahead]) }
            if k + ahead < slots.count, let reverse {
                let port = table.entry(at: slots[k + ahead]).pointee.natPort
                if port != 0 { reverse.prefetch(port) }
            }
            let e = table.entry(at: slots[k])
            guard e.pointee.state != .empty else { return nil }
            let frontend = frontends[e.pointee.vipIndex]
            let slot = Int(e.pointee.backendSlot)
            guard frontend.present, slot < serverOfSlot.count, serverOfSlot[slot] != .max else { return nil }
            let backend = backends[slot]
            var flow = CarriedFlow(clientHi: e.pointee.clientHi, clientLo: e.pointee.clientLo,
                                   clientPort: e.pointee.clientPort, vipHi: frontend.vipHi, vipLo: frontend.vipLo,
                                   vipPort: frontend.vipPort, server: serverOfSlot[slot], backendHi: backend.addressHi,
                                   backendLo: backend.addressLo, backendPort: backend.port, state: e.pointee.state,
                                   lastSeen: e.pointee.lastSeen, clientFinished: e.pointee.clientFinished,
                                   clientSequence: e.pointee.clientSequence, natPort: e.pointee.natPort, clientMAC: 0,
                                   serverClosed: .open)
            if flow.natPort != 0, let reverse, let live = reverse.read(flow.natPort) {
                flow.clientMAC = live.entry.clientMAC
                flow.serverClosed = switch reverse.serverClose(flow.natPort) {
                case .open: .open
                case .finished: .finished
                case .reset: .reset
                }
            }
            return flow
        }
        return writer.finish()
    }

    /// Enters `part`'s flows into this worker's table (which must not have started forwarding:
    /// call `beginBatch(now:)` first, so the routes are adopted and the clock set). A record
    /// is left out, and counted in the result, when its VIP is no frontend here, its server is
    /// not at the same address or cannot keep flows, the table has no room, or (passthrough)
    /// its NAT port is not this worker's. Imported flows count as opened on their server, so
    /// `current_connections` and `leastconn` see them.
    mutating func importFlows(_ part: FlowPart, freeNATPorts: [UInt16] = []) -> FlowImportResult {
        // Which of these routes' backend slots hold each server the part names (by index).
        var slotsOf = [[Int]](repeating: [], count: part.servers.count)
        var indicesOf: [ServerID: [Int]] = [:]
        for (k, id) in part.servers.enumerated() { indicesOf[id, default: []].append(k) }
        for slot in 0..<min(backendCount, routes.servers.count) {
            guard let id = routes.servers[slot] else { continue }
            for k in indicesOf[id] ?? [] { slotsOf[k].append(slot) }
        }
        return part.withRecords { records in importFlows(records, slotsOf: slotsOf, freeNATPorts: freeNATPorts) }
    }

    private mutating func importFlows(_ records: FlowPart.Records, slotsOf: [[Int]], freeNATPorts: [UInt16])
        -> FlowImportResult {
        var result = FlowImportResult()
        // Into an empty table only flows are added, each at the first empty slot from its home,
        // so a record given twice is found between its home and that slot (`holds(before:)`);
        // otherwise (flows already in) by a full lookup.
        let onlyAdded = table.count == 0
        var usedPorts = PortSet()
        /// Starts loading the table slot and (passthrough) the reverse map entry of the record
        /// `ahead` places on: each is a cache and TLB miss (a table of millions of slots, a map
        /// of 8 MiB), and the import runs while the replaced convey is paused.
        let ahead = 8
        func prefetch(_ k: Int) {
            guard k < records.count else { return }
            let r = records[k]
            if natEnabled, let reverse { reverse.prefetch(r.natPort) }
            let frontend = frontendIndex(hi: r.vipHi, lo: r.vipLo, port: r.vipPort)
            guard frontend >= 0 else { return }
            table.prefetch(home: table.home(hi: r.clientHi, lo: r.clientLo, key: FlowEntry.key(port: r.clientPort, vip: frontend)))
        }
        for k in 0..<min(ahead, records.count) { prefetch(k) }
        var openedOn = [Int64](repeating: 0, count: backendCount)  // added to `openFlows` at the end
        for k in 0..<records.count {
            let r = records[k]
            prefetch(k + ahead)
            let frontend = frontendIndex(hi: r.vipHi, lo: r.vipLo, port: r.vipPort)
            guard frontend >= 0 else { result.noFrontend += 1; continue }
            guard let slot = carriedSlot(of: r, among: slotsOf[Int(r.server)], frontend: frontend) else {
                result.noServer += 1
                continue
            }
            if natEnabled {
                guard r.natPort != 0, ports.range?.contains(r.natPort) == true, !usedPorts.contains(r.natPort) else {
                    result.natPortUnavailable += 1
                    continue
                }
                let clientIsV6 = StableHash.mappedIPv4(hi: r.clientHi, lo: r.clientLo) == nil
                guard clientIsV6 ? hasNAT6 : hasNAT4 else { result.noServer += 1; continue }
            }
            let key = FlowEntry.key(port: r.clientPort, vip: frontend)
            let home = table.home(hi: r.clientHi, lo: r.clientLo, key: key)
            let at = table.slotForInsert(home: home, now: now, minIdle: .max)
            guard at >= 0, table.entry(at: at).pointee.state == .empty,
                  onlyAdded ? !table.holds(hi: r.clientHi, lo: r.clientLo, key: key, home: home, before: at)
                            : table.find(hi: r.clientHi, lo: r.clientLo, key: key, home: home) < 0 else {
                result.tableFull += 1
                continue
            }
            let state: FlowState = r.state == .empty ? .established : r.state
            var entry = FlowEntry(clientHi: r.clientHi, clientLo: r.clientLo, lastSeen: r.lastSeen, backendSlot: slot,
                                  portAndVIP: key, natPort: natEnabled ? r.natPort : 0, state: state)
            entry.idleTimeout = switch state {
            case .syn: settings.synTimeout
            case .closing: settings.closingTimeout
            default: settings.establishedTimeout
            }
            entry.clientSequence = r.clientSequence
            entry.clientFinished = r.clientFinished
            let b = backends[Int(slot)]
            if natEnabled {
                setNATRewrite(&entry, clientHi: r.clientHi, clientLo: r.clientLo, clientPort: r.clientPort,
                              vipHi: r.vipHi, vipLo: r.vipLo, vipPort: r.vipPort, backend: b, natPort: r.natPort)
            }
            table.insert(entry, at: at)
            if natEnabled, let reverse {
                usedPorts.insert(r.natPort)
                let reverseEntry = NATReverseEntry(clientHi: r.clientHi, clientLo: r.clientLo, clientPort: r.clientPort,
                                                   clientMAC: r.clientMAC, vipHi: r.vipHi, vipLo: r.vipLo,
                                                   vipPort: r.vipPort, backendHi: b.addressHi, backendLo: b.addressLo,
                                                   backendPort: b.port, backendSlot: slot)
                reverse.publish(r.natPort, reverseEntry, rewrite: replyRewrite(reverseEntry, natPort: r.natPort))
                if r.serverClosed != .open, let version = reverse.read(r.natPort)?.version {
                    reverse.markClosedByServer(r.natPort, version: version, reset: r.serverClosed == .reset)
                }
                if state == .syn { halfOpen.push(r.natPort) }
            }
            // Opened here; a closing passthrough flow was closed when it began to close
            // (`startClosing`), so it is opened and closed at once.
            c.add(c.backend(slot), 1)
            openedOn[Int(slot)] += 1
            if state == .closing {
                c.add(ForwarderCounters.flowsClosing, 1)
                if natEnabled {
                    c.add(c.backend(slot) &+ 1, 1)
                    openedOn[Int(slot)] -= 1
                }
            }
            result.imported += 1
        }
        for (slot, n) in openedOn.enumerated() where n != 0 { openFlows.add(UInt32(slot), n) }
        if natEnabled && !adoptQueue(freeNATPorts, besides: usedPorts) { ports.remove(usedPorts) }
        c.set(ForwarderCounters.flowsActive, UInt64(table.count))
        return result
    }

    /// Makes `queue` (the replaced worker's free NAT ports) this worker's, in its order, so
    /// the longest-free port still goes first (none given: empty, which only a slice whose
    /// every port the flows hold matches); false, changing nothing, unless it is exactly
    /// the ports of this worker's slice that the imported flows (`used`) do not hold.
    private mutating func adoptQueue(_ queue: [UInt16], besides used: PortSet) -> Bool {
        guard queue.count + used.count == ports.size, !queue.contains(where: used.contains) else { return false }
        return ports.replaceQueue(with: queue)
    }

    /// The backend slot that carries `flow` on in these routes: of the slots that hold its
    /// server (`slots`), the one at the same address and port that keeps flows, among the
    /// frontend's candidates first.
    private func carriedSlot(of flow: CarriedFlow, among slots: [Int], frontend: Int) -> UInt32? {
        func matches(_ slot: Int) -> Bool {
            guard keepsFlows(UInt32(slot)) else { return false }
            let b = backends[slot]
            return b.addressHi == flow.backendHi && b.addressLo == flow.backendLo && b.port == flow.backendPort
        }
        guard !slots.isEmpty else { return nil }
        if slots.count > 1 {
            let f = frontends[frontend]
            for k in 0..<Int(f.candidatesCount) {
                let slot = Int(self.slots[Int(f.candidatesStart) + k])
                if slots.contains(slot) && matches(slot) { return UInt32(slot) }
            }
        }
        for slot in slots where matches(slot) { return UInt32(slot) }
        return nil
    }
}

/// A packet handler whose flows a takeover can carry from one convey to the next (the
/// forwarders; see `ForwarderCore.exportFlows` and `importFlows`).
public protocol FlowCarrying {
    /// Every tracked flow and (passthrough) the free NAT ports in the order they are handed
    /// out (only while the worker is stopped).
    func exportHandover() -> ForwarderHandover
    /// Enters a replaced worker's flows before this worker starts, with its free NAT port
    /// queue when it had one; `now` is the monotonic clock.
    mutating func importFlows(_ handover: ForwarderHandover, now: UInt64) -> FlowImportResult
}

extension FlowCarrying {
    /// Every tracked flow, as records (tests and inspection: a whole export, then decoded).
    public func exportFlows() -> [FlowRecord] { exportHandover().flows.records }

    /// Passthrough: the free NAT ports in the order they are handed out, else empty (tests and
    /// inspection: a whole export).
    public func exportFreeNATPorts() -> [UInt16] { exportHandover().freeNATPorts }

    /// Enters `records` (encoded first, as a takeover carries them), with the replaced
    /// worker's free NAT port queue (none: the ports the flows do not hold stay free here).
    public mutating func importFlows(_ records: [FlowRecord], freeNATPorts: [UInt16] = [],
                                     now: UInt64) -> FlowImportResult {
        importFlows(ForwarderHandover(flows: records, freeNATPorts: freeNATPorts), now: now)
    }
}

extension DSRForwarder: FlowCarrying {
    public func exportHandover() -> ForwarderHandover {
        ForwarderHandover(flows: core.exportFlows(), freeNATPorts: core.natEnabled ? core.ports.queue : [])
    }

    public mutating func importFlows(_ handover: ForwarderHandover, now: UInt64) -> FlowImportResult {
        core.beginBatch(now: now)
        return core.importFlows(handover.flows, freeNATPorts: handover.freeNATPorts)
    }
}

extension PassthroughForwarder: FlowCarrying {
    public func exportHandover() -> ForwarderHandover {
        ForwarderHandover(flows: core.exportFlows(), freeNATPorts: core.natEnabled ? core.ports.queue : [])
    }

    public mutating func importFlows(_ handover: ForwarderHandover, now: UInt64) -> FlowImportResult {
        core.beginBatch(now: now)
        return core.importFlows(handover.flows, freeNATPorts: handover.freeNATPorts)
    }
}
