#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

/// A convey's cumulative counters as a takeover hands them to the convey replacing it, so that
/// `total_connections`, the byte totals, connect failures and the refusal counts go on from
/// where they were instead of starting again at zero: the status page's totals stay the
/// service's rather than the process's, and Prometheus sees a counter that never went back
/// (no reset in `rate()` or `increase()`).
///
/// Only counters are carried. Gauges (open connections, clients waiting) describe the process
/// that holds them: the successor counts the flows it carries itself, and a proxy-mode
/// predecessor's connections close there. Per-worker and per-loop data-plane counters (packets,
/// drops by reason, ring statistics) describe sockets and threads, and start afresh.
///
/// Sent as JSON in a memory file (`MemoryFile`): the same key names as `/stats`, so the
/// document is readable with `jq` when a takeover is debugged. A counter added later is read
/// as optional (0 when an older convey's document lacks it), never by a new `format`, which
/// would make the two conveys refuse each other's counts.
public struct CarriedCounters: Sendable, Equatable, Codable {
    public struct Frontend: Sendable, Equatable, Codable {
        public var name: String
        public var totals = TrafficTotals()
        public var noBackend: Int64 = 0
        public var overLimit: Int64 = 0
        public var denied: Int64 = 0
        public var queueTimeouts: Int64 = 0
        public var queueFull: Int64 = 0
        public var serversFull: Int64 = 0
        public var badProxyHeader: Int64 = 0

        public init(name: String) { self.name = name }

        enum CodingKeys: String, CodingKey {
            case name, totals, noBackend = "no_backend", overLimit = "over_limit", denied
            case queueTimeouts = "queue_timeouts", queueFull = "queue_full", serversFull = "servers_full"
            case badProxyHeader = "bad_proxy_header"
        }

        /// A count a document lacks (one written before that counter) is 0.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            totals = try c.decodeIfPresent(TrafficTotals.self, forKey: .totals) ?? TrafficTotals()
            func count(_ key: CodingKeys) throws -> Int64 { try c.decodeIfPresent(Int64.self, forKey: key) ?? 0 }
            noBackend = try count(.noBackend)
            overLimit = try count(.overLimit)
            denied = try count(.denied)
            queueTimeouts = try count(.queueTimeouts)
            queueFull = try count(.queueFull)
            serversFull = try count(.serversFull)
            badProxyHeader = try count(.badProxyHeader)
        }
    }

    public struct Server: Sendable, Equatable, Codable {
        public var pool: String
        public var name: String
        public var totals = TrafficTotals()

        public init(pool: String, name: String, totals: TrafficTotals = TrafficTotals()) {
            self.pool = pool
            self.name = name
            self.totals = totals
        }

        var id: ServerID { ServerID(pool: pool, name: name) }
    }

    /// What became of a carried document in the convey that took it (for its log line).
    public struct Outcome: Sendable, Equatable {
        /// Frontends and servers of this convey's configuration that carry on their predecessor's counts.
        public var frontends = 0
        public var servers = 0
        /// Carried frontends and servers this configuration no longer has: their counts went
        /// to the retired totals (so the whole, and their pool's sum, still go on).
        public var retiredFrontends: [String] = []
        public var retiredServers: [ServerID] = []

        /// For a log line: "the counts of 2 frontend(s) and 5 server(s) go on[; …]".
        public var description: String {
            var text = "the counts of \(frontends) frontend(s) and \(servers) server(s) go on"
            let gone = retiredFrontends.map { "frontend \($0)" } + retiredServers.map { "server \($0)" }
            if !gone.isEmpty {
                text += "; no longer configured, their counts added to the retired totals: " + gone.prefix(10).joined(separator: ", ")
                    + (gone.count > 10 ? " and \(gone.count - 10) more" : "")
            }
            return text
        }
    }

    /// The document's format; a reader refuses another.
    public var format = 1
    public var frontends: [Frontend] = []
    public var servers: [Server] = []
    /// What servers and frontends gone from the predecessor's configuration had counted.
    public var retiredPools: [String: TrafficTotals] = [:]
    public var retiredFrontends = TrafficTotals()

    public init() {}

    enum CodingKeys: String, CodingKey {
        case format, frontends, servers, retiredPools = "retired_pools", retiredFrontends = "retired_frontends"
    }

    /// The counts of these counters now.
    package init(frontends: [String: FrontendCounters], servers: [ServerID: ServerCounters], retired: RetiredTotals) {
        self.frontends = frontends.sorted { $0.key < $1.key }.map { name, c in
            var f = Frontend(name: name)
            f.totals = RetiredTotals.cumulative(c.snapshot())
            f.noBackend = c.noBackend.load(ordering: .relaxed)
            f.overLimit = c.overLimit.load(ordering: .relaxed)
            f.denied = c.denied.load(ordering: .relaxed)
            f.queueTimeouts = c.queueTimeouts.load(ordering: .relaxed)
            f.queueFull = c.queueFull.load(ordering: .relaxed)
            f.serversFull = c.serversFull.load(ordering: .relaxed)
            f.badProxyHeader = c.badProxyHeader.load(ordering: .relaxed)
            return f
        }
        self.servers = servers.sorted { $0.key < $1.key }.map { Server(pool: $0.key.pool, name: $0.key.name, totals: RetiredTotals.cumulative($0.value.snapshot())) }
        retiredPools = retired.pools.mapValues(RetiredTotals.cumulative)
        retiredFrontends = RetiredTotals.cumulative(retired.frontends)
    }

    /// Adds these counts to live counters (a takeover's successor). Counts of frontends and
    /// servers not among them go to `retired`. `alreadyCounted` is what the successor counted
    /// of the same events itself (an AF_XDP takeover's carried flows count as opened when they
    /// enter its tables, and are in these totals already): it is left out.
    package func add(to frontendCounters: [String: FrontendCounters], _ serverCounters: [ServerID: ServerCounters],
             retired: inout RetiredTotals, less alreadyCounted: CarriedCounters?) -> Outcome {
        var outcome = Outcome()
        let countedFrontends = Dictionary((alreadyCounted?.frontends ?? []).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let countedServers = Dictionary((alreadyCounted?.servers ?? []).map { ($0.id, $0.totals) }, uniquingKeysWith: { a, _ in a })
        func add(_ n: Int64, _ atomic: borrowing Atomic<Int64>) {
            if n > 0 { atomic.wrappingAdd(n, ordering: .relaxed) }
        }
        for f in frontends {
            let t = f.totals.less(countedFrontends[f.name]?.totals)
            guard let c = frontendCounters[f.name] else {
                retired.frontends += t
                outcome.retiredFrontends.append(f.name)
                continue
            }
            let counted = countedFrontends[f.name]
            add(t.totalConnections, c.totalConnections)
            add(t.bytesTx, c.bytesTx)
            add(t.bytesRx, c.bytesRx)
            add(f.noBackend - (counted?.noBackend ?? 0), c.noBackend)
            add(f.overLimit - (counted?.overLimit ?? 0), c.overLimit)
            add(f.denied - (counted?.denied ?? 0), c.denied)
            add(f.queueTimeouts - (counted?.queueTimeouts ?? 0), c.queueTimeouts)
            add(f.queueFull - (counted?.queueFull ?? 0), c.queueFull)
            add(f.serversFull - (counted?.serversFull ?? 0), c.serversFull)
            add(f.badProxyHeader - (counted?.badProxyHeader ?? 0), c.badProxyHeader)
            outcome.frontends += 1
        }
        for s in servers {
            let t = s.totals.less(countedServers[s.id])
            guard let c = serverCounters[s.id] else {
                retired.pools[s.pool, default: TrafficTotals()] += t
                outcome.retiredServers.append(s.id)
                continue
            }
            add(t.totalConnections, c.totalConnections)
            add(t.bytesTx, c.bytesTx)
            add(t.bytesRx, c.bytesRx)
            add(t.connectFailures, c.connectFailures)
            outcome.servers += 1
        }
        for (pool, t) in retiredPools { retired.pools[pool, default: TrafficTotals()] += t.nonNegative }
        retired.frontends += retiredFrontends.nonNegative
        return outcome
    }

    /// The JSON document.
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Plain integers and strings: encoding cannot fail.
        return Array((try? encoder.encode(self)) ?? Data())
    }

    /// Reads a document `encoded()` wrote; throws with what is wrong.
    public init(decoding bytes: [UInt8]) throws(CarriedCountersError) {
        let decoded: CarriedCounters
        do { decoded = try JSONDecoder().decode(CarriedCounters.self, from: Data(bytes)) } catch {
            throw CarriedCountersError(reason: "not a counters document: \(error)")
        }
        guard decoded.format == 1 else {
            throw CarriedCountersError(reason: "counters document format \(decoded.format), this convey reads format 1")
        }
        self = decoded
    }
}

extension TrafficTotals {
    /// These counts less `other` (never below zero; no open connections).
    func less(_ other: Self?) -> Self {
        let o = other ?? Self()
        return Self(totalConnections: max(0, totalConnections - o.totalConnections), bytesTx: max(0, bytesTx - o.bytesTx),
                    bytesRx: max(0, bytesRx - o.bytesRx), connectFailures: max(0, connectFailures - o.connectFailures))
    }

    var nonNegative: Self { less(nil) }
}

/// A counters document that does not read (the successor then starts its counts afresh).
public struct CarriedCountersError: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}
