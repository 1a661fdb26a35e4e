import Balancer
import XSK

/// Builds Ethernet/IPv4|IPv6/TCP frames as byte arrays with correct checksums, and checks
/// checksums by full recomputation: the reference the forwarders' incremental updates are
/// compared with.
enum TestFrames {
    static let clientMAC: UInt64 = 0x02_00_00_00_00_10
    static let lbMAC: UInt64 = 0x02_00_00_00_00_02

    static func mac(_ v: UInt64) -> [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: v >> (40 - 8 * UInt64($0))) } }
    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }

    static func ipv4(_ text: String) -> UInt32 {
        guard case .v4(let a) = IPAddress(text) else { fatalError("not IPv4: \(text)") }
        return a
    }

    /// A TCP header with the checksum left 0.
    static func tcp(sport: UInt16, dport: UInt16, flags: UInt8, seq: UInt32 = 1000, options: [UInt8] = [],
                    payload: [UInt8] = []) -> [UInt8] {
        precondition(options.count % 4 == 0)
        let offset = UInt8((20 + options.count) / 4)
        return be16(sport) + be16(dport) + be32(seq) + be32(seq &+ 77) + [offset << 4, flags] + be16(65_000)
            + [0, 0] + [0, 0] + options + payload
    }

    /// Ethernet + IPv4 (with `ipOptions`) + TCP, both checksums valid; `padding` bytes after
    /// the IP packet, as Ethernet adds to short frames.
    static func ipv4TCP(src: UInt32, dst: UInt32, sport: UInt16, dport: UInt16, flags: UInt8,
                        srcMAC: UInt64 = clientMAC, dstMAC: UInt64 = lbMAC, ttl: UInt8 = 64,
                        ipOptions: [UInt8] = [], tcpOptions: [UInt8] = [], payload: [UInt8] = [],
                        fragment: UInt16 = 0x4000, padding: Int = 0, seq: UInt32 = 1000) -> [UInt8] {
        precondition(ipOptions.count % 4 == 0)
        var segment = tcp(sport: sport, dport: dport, flags: flags, seq: seq, options: tcpOptions, payload: payload)
        let pseudo = be32(src) + be32(dst) + [0, 6] + be16(UInt16(segment.count))
        let c = checksum(pseudo + segment)
        segment[16] = UInt8(c >> 8)
        segment[17] = UInt8(c & 0xff)
        let ihl = UInt8((20 + ipOptions.count) / 4)
        let total = UInt16(20 + ipOptions.count + segment.count)
        var ip = [0x40 | ihl, 0] + be16(total) + be16(0x1234) + be16(fragment) + [ttl, 6, 0, 0] + be32(src) + be32(dst)
            + ipOptions
        let h = checksum(ip)
        ip[10] = UInt8(h >> 8)
        ip[11] = UInt8(h & 0xff)
        return mac(dstMAC) + mac(srcMAC) + [0x08, 0x00] + ip + segment + [UInt8](repeating: 0, count: padding)
    }

    /// Ethernet + IPv6 + TCP with a valid checksum (`nextHeader` other than 6 makes an
    /// extension-header packet).
    static func ipv6TCP(src: [UInt8], dst: [UInt8], sport: UInt16, dport: UInt16, flags: UInt8,
                        srcMAC: UInt64 = clientMAC, dstMAC: UInt64 = lbMAC, nextHeader: UInt8 = 6,
                        payload: [UInt8] = []) -> [UInt8] {
        var segment = tcp(sport: sport, dport: dport, flags: flags, payload: payload)
        let pseudo = src + dst + be32(UInt32(segment.count)) + [0, 0, 0, 6]
        let c = checksum(pseudo + segment)
        segment[16] = UInt8(c >> 8)
        segment[17] = UInt8(c & 0xff)
        let ip: [UInt8] = [0x60, 0, 0, 0] + be16(UInt16(segment.count)) + [nextHeader, 64] + src + dst
        return mac(dstMAC) + mac(srcMAC) + [0x86, 0xDD] + ip + segment
    }

    /// The Internet checksum of `bytes` (from scratch).
    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        bytes.withUnsafeBytes { Checksum.finish(Checksum.sum($0)) }
    }

    /// The IPv4 header checksum recomputed over the frame's header (field zeroed).
    static func recomputedIPv4Checksum(_ frame: [UInt8]) -> UInt16 {
        let ihl = Int(frame[14] & 0x0f) * 4
        var header = Array(frame[14..<(14 + ihl)])
        header[10] = 0
        header[11] = 0
        return checksum(header)
    }

    /// The TCP checksum recomputed over the frame's segment and IPv4 pseudo-header (field zeroed).
    static func recomputedTCPChecksum(_ frame: [UInt8]) -> UInt16 {
        let ihl = Int(frame[14] & 0x0f) * 4
        let total = Int(frame[16]) << 8 | Int(frame[17])
        var segment = Array(frame[(14 + ihl)..<(14 + total)])
        segment[16] = 0
        segment[17] = 0
        let pseudo = Array(frame[26..<34]) + [0, 6] + be16(UInt16(segment.count))
        return checksum(pseudo + segment)
    }

    /// The TCP checksum of an IPv6 frame recomputed over its segment and pseudo-header.
    static func recomputedTCP6Checksum(_ frame: [UInt8]) -> UInt16 {
        let length = Int(frame[18]) << 8 | Int(frame[19])
        var segment = Array(frame[54..<(54 + length)])
        segment[16] = 0
        segment[17] = 0
        let pseudo = Array(frame[22..<54]) + be32(UInt32(length)) + [0, 0, 0, 6]
        return checksum(pseudo + segment)
    }

    static func storedTCP6Checksum(_ frame: [UInt8]) -> UInt16 { UInt16(frame[70]) << 8 | UInt16(frame[71]) }

    static func storedIPv4Checksum(_ frame: [UInt8]) -> UInt16 { UInt16(frame[24]) << 8 | UInt16(frame[25]) }

    static func storedTCPChecksum(_ frame: [UInt8]) -> UInt16 {
        let off = 14 + Int(frame[14] & 0x0f) * 4 + 16
        return UInt16(frame[off]) << 8 | UInt16(frame[off + 1])
    }

    /// Fields of an IPv4/TCP frame, for assertions.
    struct V4: Equatable {
        var dstMAC: UInt64, srcMAC: UInt64, src: UInt32, dst: UInt32, sport: UInt16, dport: UInt16, ttl: UInt8
    }

    static func fields(_ f: [UInt8]) -> V4 {
        func mac(_ o: Int) -> UInt64 { f[o..<(o + 6)].reduce(0) { $0 << 8 | UInt64($1) } }
        func u32(_ o: Int) -> UInt32 { f[o..<(o + 4)].reduce(0) { $0 << 8 | UInt32($1) } }
        func u16(_ o: Int) -> UInt16 { UInt16(f[o]) << 8 | UInt16(f[o + 1]) }
        let l4 = 14 + Int(f[14] & 0x0f) * 4
        return V4(dstMAC: mac(0), srcMAC: mac(6), src: u32(26), dst: u32(30), sport: u16(l4), dport: u16(l4 + 2),
                  ttl: f[22])
    }
}

/// A deterministic pseudo-random generator (xorshift*), so failures reproduce.
struct TestRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed | 1 }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}

/// Runs `body` on the frame's bytes as the worker would hand them over.
@discardableResult
func withFrame<R>(_ frame: inout [UInt8], _ body: (UnsafeMutableRawBufferPointer) -> R) -> R {
    frame.withUnsafeMutableBytes { body($0) }
}

/// Runs one frame through `handler`'s batch path (`handle(batch:verdicts:)`, as the worker
/// calls it), the frame's bytes updated in place; the verdict.
func handleAsBatch<H: PacketHandler>(_ frame: inout [UInt8], _ handler: inout H) -> PacketVerdict {
    var verdict = PacketVerdict.drop
    frame.withUnsafeMutableBytes { bytes in
        let frames = [PacketFrame(base: bytes.baseAddress!, length: bytes.count)]
        frames.withUnsafeBufferPointer { handler.handle(batch: $0, verdicts: &verdict) }
    }
    return verdict
}
