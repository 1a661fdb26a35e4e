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

    /// Overwrites the bytes at `offset` (a length or count known only after what follows it).
    mutating func set<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        storage.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self) }
    }

    /// Makes room for `maximum` bytes and lets `body` write them in place; `body` returns how
    /// many it wrote. For fixed-size records by the million: one capacity check and one
    /// uniqueness check for all of them, not one per field.
    mutating func write(atMost maximum: Int, _ body: (UnsafeMutableRawPointer) -> Int) {
        if storage.count - used < maximum { storage.append(contentsOf: repeatElement(0, count: maximum - (storage.count - used))) }
        let start = used
        let written = storage.withUnsafeMutableBytes { body($0.baseAddress! + start) }
        precondition(written <= maximum, "wrote past the room made")
        used += written
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

    /// Bytes not read yet.
    var remaining: Int { end - offset }

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
    /// `records` as a flow part (see `FlowPart`).
    static func encode(_ records: [FlowRecord]) -> [UInt8] { Array(FlowPart(records).encoded) }

    /// The records of a flow part.
    static func decode(_ bytes: [UInt8], range: Range<Int>? = nil) throws(HandoverFormatError) -> [FlowRecord] {
        try FlowPart(validating: bytes, range: range).records
    }
}

/// What a takeover carries of one worker's forwarder: its flows and, in passthrough, its
/// queue of free NAT ports (in the order it hands them out).
public struct ForwarderHandover: Sendable, Equatable {
    /// Encoded, as the document carries them (see `FlowPart`).
    public var flows: FlowPart
    public var freeNATPorts: [UInt16]

    public init(flows: FlowPart, freeNATPorts: [UInt16]) {
        self.flows = flows
        self.freeNATPorts = freeNATPorts
    }

    public init(flows: [FlowRecord], freeNATPorts: [UInt16]) {
        self.init(flows: FlowPart(flows), freeNATPorts: freeNATPorts)
    }
}
