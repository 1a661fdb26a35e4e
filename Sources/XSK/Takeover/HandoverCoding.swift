import Balancer

/// Little-endian bytes for a takeover's messages: what one convey writes, the next reads.
/// Both are the same program family on the same machine, but not necessarily the same build,
/// so every document starts with a format version, and reading checks every length.
struct HandoverWriter {
    private(set) var bytes: [UInt8] = []

    mutating func put<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func put(_ text: String) {
        let utf8 = Array(text.utf8)
        put(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
    }
}

/// Reads what `HandoverWriter` wrote; throws `HandoverFormatError` past the end.
struct HandoverReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { offset == bytes.count }

    mutating func get<T: FixedWidthInteger>(_: T.Type = T.self) throws(HandoverFormatError) -> T {
        let size = MemoryLayout<T>.size
        guard bytes.count - offset >= size else { throw HandoverFormatError("truncated at byte \(offset)") }
        var value = T.zero
        withUnsafeMutableBytes(of: &value) { target in
            for i in 0..<size { target[i] = bytes[offset + i] }
        }
        offset += size
        return T(littleEndian: value)
    }

    mutating func get(_: String.Type) throws(HandoverFormatError) -> String {
        let count = Int(try get(UInt32.self))
        guard bytes.count - offset >= count else { throw HandoverFormatError("truncated text at byte \(offset)") }
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
        guard n <= (bytes.count - offset) / max(minimumSize, 1) else { throw HandoverFormatError("a count of \(n) items exceeds the document") }
        return n
    }
}

/// A takeover document that does not read as one.
struct HandoverFormatError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension XSKWorkerHandover {
    /// Format of `encoded()`.
    static let formatVersion: UInt32 = 1

    func encoded() -> [UInt8] {
        var w = HandoverWriter()
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
        return w.bytes
    }

    init(decoding bytes: [UInt8]) throws(HandoverFormatError) {
        var r = HandoverReader(bytes)
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
        var servers: [ServerID: UInt32] = [:]
        var order: [ServerID] = []
        for r in records where servers[r.server] == nil {
            servers[r.server] = UInt32(order.count)
            order.append(r.server)
        }
        var w = HandoverWriter()
        w.put(formatVersion)
        w.put(UInt32(order.count))
        for id in order {
            w.put(id.pool)
            w.put(id.name)
        }
        w.put(UInt32(records.count))
        for r in records {
            w.put(r.clientHi)
            w.put(r.clientLo)
            w.put(r.clientPort)
            w.put(r.vipHi)
            w.put(r.vipLo)
            w.put(r.vipPort)
            w.put(servers[r.server]!)
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
        return w.bytes
    }

    /// The records of a document `encode` wrote.
    static func decode(_ bytes: [UInt8]) throws(HandoverFormatError) -> [FlowRecord] {
        var r = HandoverReader(bytes)
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
enum WorkerDocument {
    static func encode(_ worker: XSKWorkerHandover, _ forwarder: ForwarderHandover) -> [UInt8] {
        let parts = [worker.encoded(), FlowRecord.encode(forwarder.flows), encode(ports: forwarder.freeNATPorts)]
        var w = HandoverWriter()
        for part in parts { w.put(UInt64(part.count)) }
        return w.bytes + parts.flatMap { $0 }
    }

    static func decode(_ bytes: [UInt8]) throws(HandoverFormatError) -> (XSKWorkerHandover, ForwarderHandover) {
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
        var parts: [[UInt8]] = []
        for length in lengths {
            parts.append(Array(bytes[start..<(start + length)]))
            start += length
        }
        let worker = try XSKWorkerHandover(decoding: parts[0])
        return (worker, ForwarderHandover(flows: try FlowRecord.decode(parts[1]), freeNATPorts: try decode(ports: parts[2])))
    }

    static func encode(ports: [UInt16]) -> [UInt8] {
        var w = HandoverWriter()
        w.put(UInt32(ports.count))
        for port in ports { w.put(port) }
        return w.bytes
    }

    static func decode(ports bytes: [UInt8]) throws(HandoverFormatError) -> [UInt16] {
        var r = HandoverReader(bytes)
        let count = try r.count(minimumSize: 2)
        var ports: [UInt16] = []
        ports.reserveCapacity(count)
        for _ in 0..<count { ports.append(try r.get()) }
        guard r.isAtEnd else { throw HandoverFormatError("bytes after the free NAT ports") }
        return ports
    }
}
