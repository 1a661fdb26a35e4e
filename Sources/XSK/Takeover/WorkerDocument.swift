#if canImport(Glibc)
import Glibc
#endif
import Balancer
import SystemPackage

/// The document a takeover sends for one worker (in a memfd, beside the worker's socket and
/// UMEM): the worker's hand-over, then its forwarder's, each part prefixed with its length.
/// (Public for the benchmarks, which time a takeover's hand-over: `TakeoverBenchmarks`.)
public enum WorkerDocument {
    /// The document in three pieces, to be written one after the other (into a memfd, without
    /// joining them first: the flows are megabytes, written while the workers are paused).
    static func pieces(_ worker: XSKWorkerHandover, _ forwarder: ForwarderHandover) -> [ArraySlice<UInt8>] {
        let flows = forwarder.flows.encoded
        var head = HandoverWriter(capacity: 24 + 48 + 8 * worker.freeFrames.count)
        for _ in 0..<3 { head.put(UInt64(0)) }
        worker.encode(into: &head)
        head.set(UInt64(head.count - 24), at: 0)
        head.set(UInt64(flows.count), at: 8)
        var ports = HandoverWriter(capacity: 4 + 2 * forwarder.freeNATPorts.count)
        encode(ports: forwarder.freeNATPorts, into: &ports)
        head.set(UInt64(ports.count), at: 16)
        return [head.finish()[...], flows, ports.finish()[...]]
    }

    /// The document as one buffer (what `pieces` writes, joined).
    public static func encode(_ worker: XSKWorkerHandover, _ forwarder: ForwarderHandover) -> [UInt8] {
        let pieces = pieces(worker, forwarder)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(pieces.reduce(0) { $0 + $1.count })
        for piece in pieces { bytes.append(contentsOf: piece) }
        return bytes
    }

    /// A new memfd holding the document, to be sent with the worker's sockets (the caller
    /// closes it).
    public static func write(_ worker: XSKWorkerHandover, _ forwarder: ForwarderHandover) throws(Errno) -> Int32 {
        try MemoryFile.holding(pieces: pieces(worker, forwarder), name: "convey-takeover").rawValue
    }

    /// The whole content of a document's memfd (`decode` reads it), however large.
    public static func read(memfd fd: Int32) throws(Errno) -> [UInt8] {
        try MemoryFile.contents(of: FileDescriptor(rawValue: fd), limit: .max)
    }

    /// Reads a document; its flows stay in `bytes`, read in place.
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
        return (worker, ForwarderHandover(flows: try FlowPart(validating: bytes, range: parts[1]),
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
