import Balancer

/// Little-endian bytes for a takeover's messages: what one convey writes, the next reads.
/// Both are the same program family on the same machine, but not necessarily the same build,
/// so every document starts with a format version, and reading checks every length.
struct HandoverWriter {
    /// Room for what is written, zero-filled ahead; `used` bytes of it are written.
    private var storage: [UInt8]
    private var used = 0

    /// `capacity`: the bytes expected, made room for at once (a takeover writes its documents
    /// while the workers are paused; more is made room for if needed).
    init(capacity: Int = 0) { storage = [UInt8](repeating: 0, count: max(capacity, 16)) }

    /// Bytes written so far.
    var count: Int { used }

    /// What was written (the writer's own buffer, not a copy: documents are megabytes).
    mutating func finish() -> [UInt8] {
        storage.removeLast(storage.count - used)
        return storage
    }

    /// Overwrites the 8 bytes at `offset` (a length known only after what follows it).
    mutating func set(_ value: UInt64, at offset: Int) {
        storage.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self) }
    }

    /// Stored in place, little-endian: appending each field's bytes to an array went through
    /// the generic sequence path (about 40 ns a field, most of a takeover's encoding time).
    mutating func put<T: FixedWidthInteger>(_ value: T) {
        let size = MemoryLayout<T>.size
        if storage.count - used < size { storage.append(contentsOf: repeatElement(0, count: max(storage.count, size))) }
        storage.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: used, as: T.self) }
        used += size
    }

    mutating func put(_ text: String) {
        let utf8 = Array(text.utf8)
        put(UInt32(utf8.count))
        for byte in utf8 { put(byte) }
    }
}

/// Reads what `HandoverWriter` wrote; throws `HandoverFormatError` past the end.
struct HandoverReader {
    private let bytes: [UInt8]
    private var offset: Int
    /// Where this reader's part of `bytes` ends.
    private let end: Int

    /// Reads `range` of `bytes` (all of it by default), sharing the array rather than copying it.
    init(_ bytes: [UInt8], range: Range<Int>? = nil) {
        self.bytes = bytes
        let range = range ?? 0..<bytes.count
        offset = range.lowerBound
        end = range.upperBound
    }

    var isAtEnd: Bool { offset == end }

    mutating func get<T: FixedWidthInteger>(_: T.Type = T.self) throws(HandoverFormatError) -> T {
        let size = MemoryLayout<T>.size
        guard end - offset >= size else { throw HandoverFormatError("truncated at byte \(offset)") }
        let value = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        offset += size
        return T(littleEndian: value)
    }

    mutating func get(_: String.Type) throws(HandoverFormatError) -> String {
        let count = Int(try get(UInt32.self))
        guard end - offset >= count else { throw HandoverFormatError("truncated text at byte \(offset)") }
        defer { offset += count }
        return String(decoding: bytes[offset..<(offset + count)], as: UTF8.self)
    }

    /// A 64-bit count or size that must fit an `Int` (and not be negative).
    mutating func size() throws(HandoverFormatError) -> Int {
        let value: UInt64 = try get()
        guard let n = Int(exactly: value) else { throw HandoverFormatError("a size of \(value) at byte \(offset - 8)") }
        return n
    }

    /// A count of items each at least `minimumSize` bytes long, checked against what is left.
    mutating func count(minimumSize: Int) throws(HandoverFormatError) -> Int {
        let n = Int(try get(UInt32.self))
        guard n <= (end - offset) / max(minimumSize, 1) else { throw HandoverFormatError("a count of \(n) items exceeds the document") }
        return n
    }
}

/// A takeover document that does not read as one.
public struct HandoverFormatError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

extension XSKWorkerHandover {
    /// Format of `encoded()`.
    static let formatVersion: UInt32 = 1

    func encoded() -> [UInt8] {
        var w = HandoverWriter(capacity: 48 + 8 * freeFrames.count)
        encode(into: &w)
        return w.finish()
    }

    func encode(into w: inout HandoverWriter) {
        w.put(Self.formatVersion)
        w.put(queue)
        w.put(UInt64(frameCount))
        w.put(UInt64(frameSize))
        w.put(fillSize)
        w.put(completionSize)
        w.put(rxSize)
        w.put(txSize)
        w.put(UInt64(txOutstanding))
        w.put(UInt32(freeFrames.count))
        for frame in freeFrames { w.put(frame) }
    }

    /// Reads `range` of `bytes` (all of them by default).
    init(decoding bytes: [UInt8], range: Range<Int>? = nil) throws(HandoverFormatError) {
        var r = HandoverReader(bytes, range: range)
        let version: UInt32 = try r.get()
        guard version == Self.formatVersion else { throw HandoverFormatError("worker format \(version), this convey reads \(Self.formatVersion)") }
        queue = try r.get()
        frameCount = try r.size()
        frameSize = try r.size()
        fillSize = try r.get()
        completionSize = try r.get()
        rxSize = try r.get()
        txSize = try r.get()
        txOutstanding = try r.size()
        let free = try r.count(minimumSize: 8)
        var frames: [UInt64] = []
        frames.reserveCapacity(free)
        for _ in 0..<free { frames.append(try r.get()) }
        freeFrames = frames
        let area = frameCount.multipliedReportingOverflow(by: frameSize)
        guard r.isAtEnd, frameSize == 2048 || frameSize == 4096, frameCount > 0, !area.overflow,
              frames.count + txOutstanding <= frameCount, Set(frames).count == frames.count,
              frames.allSatisfy({ $0 % UInt64(frameSize) == 0 && $0 < UInt64(area.partialValue) }) else {
            throw HandoverFormatError("inconsistent worker hand-over (queue \(queue))")
        }
    }
}

extension FlowRecord {
    /// Format of `encode(_:)`.
    static let formatVersion: UInt32 = 1

    /// `records` as one document: the servers they name once, then the records.
    static func encode(_ records: [FlowRecord]) -> [UInt8] {
        var w = HandoverWriter(capacity: 12 + records.count * 83)
        encode(records, into: &w)
        return w.finish()
    }

    static func encode(_ records: [FlowRecord], into w: inout HandoverWriter) {
        var servers: [ServerID: UInt32] = [:]
        var order: [ServerID] = []
        var serverOf: [UInt32] = []  // each record's server, as an index into `order`
        serverOf.reserveCapacity(records.count)
        for r in records {
            if let index = servers[r.server] {
                serverOf.append(index)
            } else {
                servers[r.server] = UInt32(order.count)
                serverOf.append(UInt32(order.count))
                order.append(r.server)
            }
        }
        w.put(formatVersion)
        w.put(UInt32(order.count))
        for id in order {
            w.put(id.pool)
            w.put(id.name)
        }
        w.put(UInt32(records.count))
        for (k, r) in records.enumerated() {
            w.put(r.clientHi)
            w.put(r.clientLo)
            w.put(r.clientPort)
            w.put(r.vipHi)
            w.put(r.vipLo)
            w.put(r.vipPort)
            w.put(serverOf[k])
            w.put(r.backendHi)
            w.put(r.backendLo)
            w.put(r.backendPort)
            w.put(r.state.rawValue)
            w.put(r.lastSeen)
            w.put(UInt8(r.clientFinished ? 1 : 0))
            w.put(r.clientSequence)
            w.put(r.natPort)
            w.put(r.clientMAC)
            w.put(r.serverClosed.rawValue)
        }
    }

    /// The records of a document `encode` wrote.
    static func decode(_ bytes: [UInt8], range: Range<Int>? = nil) throws(HandoverFormatError) -> [FlowRecord] {
        var r = HandoverReader(bytes, range: range)
        let version: UInt32 = try r.get()
        guard version == formatVersion else { throw HandoverFormatError("flow format \(version), this convey reads \(formatVersion)") }
        let serverCount = try r.count(minimumSize: 8)
        var servers: [ServerID] = []
        for _ in 0..<serverCount {
            let pool = try r.get(String.self)
            servers.append(ServerID(pool: pool, name: try r.get(String.self)))
        }
        let count = try r.count(minimumSize: 83)  // the bytes of one record below
        var records: [FlowRecord] = []
        records.reserveCapacity(count)
        for _ in 0..<count {
            let clientHi: UInt64 = try r.get(), clientLo: UInt64 = try r.get(), clientPort: UInt16 = try r.get()
            let vipHi: UInt64 = try r.get(), vipLo: UInt64 = try r.get(), vipPort: UInt16 = try r.get()
            let server = Int(try r.get(UInt32.self))
            let backendHi: UInt64 = try r.get(), backendLo: UInt64 = try r.get(), backendPort: UInt16 = try r.get()
            let stateValue: UInt8 = try r.get()
            let lastSeen: UInt64 = try r.get()
            let finished: UInt8 = try r.get()
            let sequence: UInt32 = try r.get()
            let natPort: UInt16 = try r.get()
            let clientMAC: UInt64 = try r.get()
            let closedValue: UInt8 = try r.get()
            guard server < servers.count, let state = FlowState(rawValue: stateValue), state != .empty,
                  let closed = ServerClosed(rawValue: closedValue) else {
                throw HandoverFormatError("flow record \(records.count) is inconsistent")
            }
            records.append(FlowRecord(clientHi: clientHi, clientLo: clientLo, clientPort: clientPort, vipHi: vipHi,
                                      vipLo: vipLo, vipPort: vipPort, server: servers[server], backendHi: backendHi,
                                      backendLo: backendLo, backendPort: backendPort, state: state, lastSeen: lastSeen,
                                      clientFinished: finished != 0, clientSequence: sequence, natPort: natPort,
                                      clientMAC: clientMAC, serverClosed: closed))
        }
        guard r.isAtEnd else { throw HandoverFormatError("bytes after the last flow record") }
        return records
    }
}

/// What a takeover carries of one worker's forwarder: its flows and, in passthrough, its
/// queue of free NAT ports (in the order it hands them out).
public struct ForwarderHandover: Sendable, Equatable {
    public var flows: [FlowRecord]
    public var freeNATPorts: [UInt16]

    public init(flows: [FlowRecord], freeNATPorts: [UInt16]) {
        self.flows = flows
        self.freeNATPorts = freeNATPorts
    }
}

/// The document a takeover sends for one worker (in a memfd, beside the worker's socket and
/// UMEM): the worker's hand-over, then its forwarder's, each part prefixed with its length.
/// (Public for the benchmarks, which time a takeover's hand-over: `TakeoverBenchmarks`.)
public enum WorkerDocument {
    /// Written in one buffer (documents are megabytes, written while the workers are paused):
    /// the three lengths are filled in once their parts are written.
    public static func encode(_ worker: XSKWorkerHandover, _ forwarder: ForwarderHandover) -> [UInt8] {
        var w = HandoverWriter(capacity: 24 + 48 + 8 * worker.freeFrames.count + 12 + 40 + 83 * forwarder.flows.count
                               + 4 + 2 * forwarder.freeNATPorts.count)
        for _ in 0..<3 { w.put(UInt64(0)) }
        var start = w.count
        worker.encode(into: &w)
        w.set(UInt64(w.count - start), at: 0)
        start = w.count
        FlowRecord.encode(forwarder.flows, into: &w)
        w.set(UInt64(w.count - start), at: 8)
        start = w.count
        encode(ports: forwarder.freeNATPorts, into: &w)
        w.set(UInt64(w.count - start), at: 16)
        return w.finish()
    }

    public static func decode(_ bytes: [UInt8]) throws(HandoverFormatError) -> (XSKWorkerHandover, ForwarderHandover) {
        var r = HandoverReader(bytes)
        var lengths: [Int] = []
        var left = bytes.count - 24
        for _ in 0..<3 {
            let length = try r.size()
            guard length <= left else { throw HandoverFormatError("the worker document's parts do not add up") }
            left -= length
            lengths.append(length)
        }
        guard left == 0 else { throw HandoverFormatError("the worker document's parts do not add up") }
        var start = 24
        var parts: [Range<Int>] = []  // read in place, not copied
        for length in lengths {
            parts.append(start..<(start + length))
            start += length
        }
        let worker = try XSKWorkerHandover(decoding: bytes, range: parts[0])
        return (worker, ForwarderHandover(flows: try FlowRecord.decode(bytes, range: parts[1]),
                                          freeNATPorts: try decode(ports: bytes, range: parts[2])))
    }

    static func encode(ports: [UInt16], into w: inout HandoverWriter) {
        w.put(UInt32(ports.count))
        for port in ports { w.put(port) }
    }

    static func decode(ports bytes: [UInt8], range: Range<Int>? = nil) throws(HandoverFormatError) -> [UInt16] {
        var r = HandoverReader(bytes, range: range)
        let count = try r.count(minimumSize: 2)
        var ports: [UInt16] = []
        ports.reserveCapacity(count)
        for _ in 0..<count { ports.append(try r.get()) }
        guard r.isAtEnd else { throw HandoverFormatError("bytes after the free NAT ports") }
        return ports
    }
}
