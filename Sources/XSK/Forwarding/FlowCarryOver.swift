import Balancer

/// A takeover's flow hand-over, on the forwarder's side: `exportFlows` turns a stopped
/// worker's table into `FlowRecord`s; `importFlows` enters records into a worker that has not
/// started yet, as if it had seen those connections itself. Neither runs on the packet path.
extension ForwarderCore {
    /// Every flow this worker tracks, as records. Call it only while no packet is handled (the
    /// worker stopped). Flows whose frontend or server these routes no longer name (a drain
    /// under way for a removed frontend whose routes are gone) are left out.
    func exportFlows() -> [FlowRecord] {
        var records: [FlowRecord] = []
        records.reserveCapacity(table.count)
        // The occupied slots from the table's bitmap, each loaded well ahead of its turn, and
        // (passthrough) its reverse map entry once the slot has arrived: both are scattered,
        // a cache and TLB miss each.
        let slots = table.occupiedSlots()
        let ahead = 8
        for k in 0..<min(2 * ahead, slots.count) { table.prefetch(home: slots[k]) }
        for (k, i) in slots.enumerated() {
            if k + 2 * ahead < slots.count { table.prefetch(home: slots[k + 2 * ahead]) }
            if k + ahead < slots.count, let reverse {
                let port = table.entry(at: slots[k + ahead]).pointee.natPort
                if port != 0 { reverse.prefetch(port) }
            }
            let e = table.entry(at: i)
            guard e.pointee.state != .empty else { continue }
            let frontend = frontends[e.pointee.vipIndex]
            let slot = Int(e.pointee.backendSlot)
            guard frontend.present, slot < backendCount, slot < routes.servers.count, let server = routes.servers[slot]
            else { continue }
            let backend = backends[slot]
            var record = FlowRecord(clientHi: e.pointee.clientHi, clientLo: e.pointee.clientLo,
                                    clientPort: e.pointee.clientPort, vipHi: frontend.vipHi, vipLo: frontend.vipLo,
                                    vipPort: frontend.vipPort, server: server, backendHi: backend.addressHi,
                                    backendLo: backend.addressLo, backendPort: backend.port, state: e.pointee.state,
                                    lastSeen: e.pointee.lastSeen, clientFinished: e.pointee.clientFinished,
                                    clientSequence: e.pointee.clientSequence, natPort: e.pointee.natPort)
            if record.natPort != 0, let reverse, let live = reverse.read(record.natPort) {
                record.clientMAC = live.entry.clientMAC
                record.serverClosed = switch reverse.serverClose(record.natPort) {
                case .open: .open
                case .finished: .finished
                case .reset: .reset
                }
            }
            records.append(record)
        }
        return records
    }

    /// Enters `records` into this worker's table (which must not have started forwarding:
    /// call `beginBatch(now:)` first, so the routes are adopted and the clock set). A record
    /// is left out, and counted in the result, when its VIP is no frontend here, its server is
    /// not at the same address or cannot keep flows, the table has no room, or (passthrough)
    /// its NAT port is not this worker's. Imported flows count as opened on their server, so
    /// `current_connections` and `leastconn` see them.
    mutating func importFlows(_ records: [FlowRecord], freeNATPorts: [UInt16]? = nil) -> FlowImportResult {
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
            // Field by field: copying a whole record (its server's name) costs more than the load.
            if natEnabled, let reverse { reverse.prefetch(records[k].natPort) }
            let frontend = frontendIndex(hi: records[k].vipHi, lo: records[k].vipLo, port: records[k].vipPort)
            guard frontend >= 0 else { return }
            table.prefetch(home: table.home(hi: records[k].clientHi, lo: records[k].clientLo,
                                            key: FlowEntry.key(port: records[k].clientPort, vip: frontend)))
        }
        for k in 0..<min(ahead, records.count) { prefetch(k) }
        var openedOn = [Int64](repeating: 0, count: backendCount)  // added to `openFlows` at the end
        for (k, r) in records.enumerated() {
            prefetch(k + ahead)
            let frontend = frontendIndex(hi: r.vipHi, lo: r.vipLo, port: r.vipPort)
            guard frontend >= 0 else { result.noFrontend += 1; continue }
            guard let slot = carriedSlot(of: r, frontend: frontend) else { result.noServer += 1; continue }
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
    /// the longest-free port still goes first; false, changing nothing, unless it is exactly
    /// the ports of this worker's slice that the imported flows (`used`) do not hold.
    private mutating func adoptQueue(_ queue: [UInt16]?, besides used: PortSet) -> Bool {
        guard let queue, queue.count + used.count == ports.size, !queue.contains(where: used.contains) else { return false }
        return ports.replaceQueue(with: queue)
    }

    /// The backend slot that carries `record` on in these routes: the slot of the same server
    /// at the same address and port, among the frontend's candidates first, that keeps flows.
    private func carriedSlot(of record: FlowRecord, frontend: Int) -> UInt32? {
        func matches(_ slot: Int) -> Bool {
            guard slot < backendCount, slot < routes.servers.count, routes.servers[slot] == record.server,
                  keepsFlows(UInt32(slot)) else { return false }
            let b = backends[slot]
            return b.addressHi == record.backendHi && b.addressLo == record.backendLo && b.port == record.backendPort
        }
        let f = frontends[frontend]
        for k in 0..<Int(f.candidatesCount) {
            let slot = Int(slots[Int(f.candidatesStart) + k])
            if matches(slot) { return UInt32(slot) }
        }
        for slot in 0..<backendCount where matches(slot) { return UInt32(slot) }
        return nil
    }
}

/// A packet handler whose flows a takeover can carry from one convey to the next (the
/// forwarders; see `ForwarderCore.exportFlows` and `importFlows`).
public protocol FlowCarrying {
    /// Every tracked flow, as records (only while the worker is stopped).
    func exportFlows() -> [FlowRecord]
    /// Passthrough: the worker's free NAT ports in the order it hands them out (else empty).
    func exportFreeNATPorts() -> [UInt16]
    /// Enters `records` before the worker starts, with the replaced worker's free NAT port
    /// queue when it had one; `now` is the monotonic clock.
    mutating func importFlows(_ records: [FlowRecord], freeNATPorts: [UInt16]?, now: UInt64) -> FlowImportResult
}

extension DSRForwarder: FlowCarrying {
    public func exportFlows() -> [FlowRecord] { core.exportFlows() }

    public func exportFreeNATPorts() -> [UInt16] { core.natEnabled ? core.ports.queue : [] }

    public mutating func importFlows(_ records: [FlowRecord], freeNATPorts: [UInt16]? = nil, now: UInt64) -> FlowImportResult {
        core.beginBatch(now: now)
        return core.importFlows(records, freeNATPorts: freeNATPorts)
    }
}

extension PassthroughForwarder: FlowCarrying {
    public func exportFlows() -> [FlowRecord] { core.exportFlows() }

    public func exportFreeNATPorts() -> [UInt16] { core.natEnabled ? core.ports.queue : [] }

    public mutating func importFlows(_ records: [FlowRecord], freeNATPorts: [UInt16]? = nil, now: UInt64) -> FlowImportResult {
        core.beginBatch(now: now)
        return core.importFlows(records, freeNATPorts: freeNATPorts)
    }
}
