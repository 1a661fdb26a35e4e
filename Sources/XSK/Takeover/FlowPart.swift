import Balancer

/// One flow as a takeover's flow part carries it: a `FlowRecord` whose server is an index into
/// the part's server list. Plain data without references, so a million of them are written
/// from a table and read into one without reference counting or an intermediate array.
struct CarriedFlow {
    var clientHi: UInt64
    var clientLo: UInt64
    var clientPort: UInt16
    var vipHi: UInt64
    var vipLo: UInt64
    var vipPort: UInt16
    /// Index into `FlowPart.servers`.
    var server: UInt32
    var backendHi: UInt64
    var backendLo: UInt64
    var backendPort: UInt16
    var state: FlowState
    var lastSeen: UInt64
    var clientFinished: Bool
    var clientSequence: UInt32
    var natPort: UInt16
    var clientMAC: UInt64
    var serverClosed: FlowRecord.ServerClosed

    /// Bytes of one record on the wire (format 1): every field little-endian, unpadded, in the
    /// order declared above; `state` at byte 58.
    static let size = 83
}

/// Reading, checking and converting records (in an extension, so the memberwise
/// initializer stays the compiler's).
extension CarriedFlow {
    /// Writes the record at `p` (no alignment needed).
    @inline(__always)
    func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: clientHi.littleEndian, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: clientLo.littleEndian, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: clientPort.littleEndian, toByteOffset: 16, as: UInt16.self)
        p.storeBytes(of: vipHi.littleEndian, toByteOffset: 18, as: UInt64.self)
        p.storeBytes(of: vipLo.littleEndian, toByteOffset: 26, as: UInt64.self)
        p.storeBytes(of: vipPort.littleEndian, toByteOffset: 34, as: UInt16.self)
        p.storeBytes(of: server.littleEndian, toByteOffset: 36, as: UInt32.self)
        p.storeBytes(of: backendHi.littleEndian, toByteOffset: 40, as: UInt64.self)
        p.storeBytes(of: backendLo.littleEndian, toByteOffset: 48, as: UInt64.self)
        p.storeBytes(of: backendPort.littleEndian, toByteOffset: 56, as: UInt16.self)
        p.storeBytes(of: state.rawValue, toByteOffset: 58, as: UInt8.self)
        p.storeBytes(of: lastSeen.littleEndian, toByteOffset: 59, as: UInt64.self)
        p.storeBytes(of: UInt8(clientFinished ? 1 : 0), toByteOffset: 67, as: UInt8.self)
        p.storeBytes(of: clientSequence.littleEndian, toByteOffset: 68, as: UInt32.self)
        p.storeBytes(of: natPort.littleEndian, toByteOffset: 72, as: UInt16.self)
        p.storeBytes(of: clientMAC.littleEndian, toByteOffset: 74, as: UInt64.self)
        p.storeBytes(of: serverClosed.rawValue, toByteOffset: 82, as: UInt8.self)
    }

    /// Reads a record `isValid` accepted.
    @inline(__always)
    init(at p: UnsafeRawPointer) {
        func get<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            T(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
        clientHi = get(0, UInt64.self)
        clientLo = get(8, UInt64.self)
        clientPort = get(16, UInt16.self)
        vipHi = get(18, UInt64.self)
        vipLo = get(26, UInt64.self)
        vipPort = get(34, UInt16.self)
        server = get(36, UInt32.self)
        backendHi = get(40, UInt64.self)
        backendLo = get(48, UInt64.self)
        backendPort = get(56, UInt16.self)
        state = FlowState(rawValue: get(58, UInt8.self)) ?? .established
        lastSeen = get(59, UInt64.self)
        clientFinished = get(67, UInt8.self) != 0
        clientSequence = get(68, UInt32.self)
        natPort = get(72, UInt16.self)
        clientMAC = get(74, UInt64.self)
        serverClosed = FlowRecord.ServerClosed(rawValue: get(82, UInt8.self)) ?? .open
    }

    /// The record at `p` names one of `servers` servers, a state other than empty, and a
    /// known way the server closed.
    @inline(__always)
    static func isValid(at p: UnsafeRawPointer, servers: Int) -> Bool {
        let server = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 36, as: UInt32.self))
        let state = p.load(fromByteOffset: 58, as: UInt8.self)
        let closed = p.load(fromByteOffset: 82, as: UInt8.self)
        return Int(server) < servers && FlowState(rawValue: state).map { $0 != .empty } == true
            && FlowRecord.ServerClosed(rawValue: closed) != nil
    }

    init(_ r: FlowRecord, server: UInt32) {
        self.init(clientHi: r.clientHi, clientLo: r.clientLo, clientPort: r.clientPort, vipHi: r.vipHi, vipLo: r.vipLo,
                  vipPort: r.vipPort, server: server, backendHi: r.backendHi, backendLo: r.backendLo,
                  backendPort: r.backendPort, state: r.state, lastSeen: r.lastSeen, clientFinished: r.clientFinished,
                  clientSequence: r.clientSequence, natPort: r.natPort, clientMAC: r.clientMAC,
                  serverClosed: r.serverClosed)
    }
}

/// The flows of one worker's hand-over, encoded as the takeover document carries them and
/// read in place: a worker's table of a million flows goes from one convey's table into the
/// document and from the document into the next convey's table with no array of records in
/// between (that array, its copies and its per-record server names were most of the cost of
/// a takeover at that scale; see `TakeoverBenchmarks`).
///
/// Format 1, little-endian: version (UInt32), the servers the records index into (count
/// UInt32, then pool and name, each a UInt32 length and UTF-8; an export lists every server
/// of its routes, so some may have no record), the record count (UInt32), then the records,
/// `CarriedFlow.size` bytes each. Conveys of other builds read and write the same
/// bytes, so a takeover works across versions that share the format.
public struct FlowPart: Sendable, Equatable {
    static let formatVersion: UInt32 = 1

    /// The document (or the part alone) and where the part lies in it.
    let bytes: [UInt8]
    let range: Range<Int>
    /// The servers the records name, by index.
    let servers: [ServerID]
    /// Where the first record starts in `bytes`.
    let recordsStart: Int
    /// The number of flows.
    public let count: Int

    /// Reads and checks the part at `range` of `bytes` (all of it by default), sharing the
    /// array rather than copying it. Every record is checked here, so a damaged document is
    /// refused before anything is imported from it.
    public init(validating bytes: [UInt8], range: Range<Int>? = nil) throws(HandoverFormatError) {
        let range = range ?? 0..<bytes.count
        guard range.lowerBound >= 0, range.upperBound <= bytes.count else {
            throw HandoverFormatError("flow part \(range) is outside the \(bytes.count)-byte document")
        }
        var r = HandoverReader(bytes, range: range)
        let version: UInt32 = try r.get()
        guard version == Self.formatVersion else {
            throw HandoverFormatError("flow format \(version), this convey reads \(Self.formatVersion)")
        }
        let serverCount = try r.count(minimumSize: 8)
        var servers: [ServerID] = []
        for _ in 0..<serverCount {
            let pool = try r.get(String.self)
            servers.append(ServerID(pool: pool, name: try r.get(String.self)))
        }
        let count = try r.count(minimumSize: CarriedFlow.size)
        let start = range.upperBound - r.remaining
        guard r.remaining == count * CarriedFlow.size else {
            throw HandoverFormatError("bytes after the last flow record")
        }
        let bad = bytes.withUnsafeBytes { raw -> Int? in
            let base = raw.baseAddress! + start
            for k in 0..<count where !CarriedFlow.isValid(at: base + k * CarriedFlow.size, servers: servers.count) {
                return k
            }
            return nil
        }
        if let bad { throw HandoverFormatError("flow record \(bad) is inconsistent") }
        self.init(bytes: bytes, range: range, servers: servers, recordsStart: start, count: count)
    }

    /// `records`, encoded.
    public init(_ records: [FlowRecord]) {
        var servers = ServerNumbering()
        let carried = records.map { CarriedFlow($0, server: servers.index(of: $0.server)) }
        var w = FlowPartWriter(servers: servers.order, atMost: carried.count)
        w.append(carried.count) { k in carried[k] }
        self = w.finish()
    }

    init(bytes: [UInt8], range: Range<Int>, servers: [ServerID], recordsStart: Int, count: Int) {
        self.bytes = bytes
        self.range = range
        self.servers = servers
        self.recordsStart = recordsStart
        self.count = count
    }

    /// Calls `body` with a reader of the records (see `Records`).
    func withRecords<R>(_ body: (Records) -> R) -> R {
        bytes.withUnsafeBytes { raw in body(Records(base: raw.baseAddress! + recordsStart, count: count)) }
    }

    /// The records of a part, read in place (valid only inside `withRecords`).
    struct Records {
        let base: UnsafeRawPointer
        let count: Int

        @inline(__always)
        subscript(k: Int) -> CarriedFlow { CarriedFlow(at: base + k * CarriedFlow.size) }
    }

    /// The flows as records (for tests and inspection; a takeover reads them in place).
    public var records: [FlowRecord] {
        withRecords { flows in
            (0..<flows.count).map { k in
                let f = flows[k]
                return FlowRecord(clientHi: f.clientHi, clientLo: f.clientLo, clientPort: f.clientPort, vipHi: f.vipHi,
                                  vipLo: f.vipLo, vipPort: f.vipPort, server: servers[Int(f.server)],
                                  backendHi: f.backendHi, backendLo: f.backendLo, backendPort: f.backendPort,
                                  state: f.state, lastSeen: f.lastSeen, clientFinished: f.clientFinished,
                                  clientSequence: f.clientSequence, natPort: f.natPort, clientMAC: f.clientMAC,
                                  serverClosed: f.serverClosed)
            }
        }
    }

    /// The encoded bytes of the part.
    var encoded: ArraySlice<UInt8> { bytes[range] }

    public static func == (a: FlowPart, b: FlowPart) -> Bool { a.encoded == b.encoded }
}

/// Writes a `FlowPart`: the servers first, then the records in place, then their count.
struct FlowPartWriter {
    private var w: HandoverWriter
    private let servers: [ServerID]
    private let countOffset: Int
    private var recordsStart = 0
    private var count = 0

    /// `servers`: the list records index into; `atMost`: how many records will be appended,
    /// made room for at once.
    init(servers: [ServerID], atMost: Int) {
        w = HandoverWriter(capacity: 12 + servers.reduce(0) { $0 + 8 + $1.pool.utf8.count + $1.name.utf8.count }
                           + atMost * CarriedFlow.size)
        self.servers = servers
        w.put(FlowPart.formatVersion)
        w.put(UInt32(servers.count))
        for id in servers {
            w.put(id.pool)
            w.put(id.name)
        }
        countOffset = w.count
        w.put(UInt32(0))
        recordsStart = w.count
    }

    /// Appends up to `maximum` records: `next(k)` gives the k-th or nil to skip it. Written in
    /// place, without a capacity check or a copy per record.
    @inline(__always)
    mutating func append(_ maximum: Int, _ next: (Int) -> CarriedFlow?) {
        var added = 0
        w.write(atMost: maximum * CarriedFlow.size) { base in
            for k in 0..<maximum {
                guard let flow = next(k) else { continue }
                flow.store(to: base + added * CarriedFlow.size)
                added += 1
            }
            return added * CarriedFlow.size
        }
        count += added
    }

    mutating func finish() -> FlowPart {
        w.set(UInt32(count), at: countOffset)
        let bytes = w.finish()
        return FlowPart(bytes: bytes, range: 0..<bytes.count, servers: servers, recordsStart: recordsStart, count: count)
    }
}

/// The server list of a part being written: each server once, numbered in the order first
/// named.
struct ServerNumbering {
    private(set) var order: [ServerID] = []
    private var indexOf: [ServerID: UInt32] = [:]

    /// `id`'s index, numbering it if it is new.
    mutating func index(of id: ServerID) -> UInt32 {
        if let index = indexOf[id] { return index }
        let index = UInt32(order.count)
        indexOf[id] = index
        order.append(id)
        return index
    }
}
