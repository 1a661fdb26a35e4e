/// Where the headers of a TCP frame are, once `FrameParser` has checked them.
public struct TCPFrame: Equatable {
    /// Offset of the IP header (after Ethernet).
    public var ipOffset: Int
    /// Offset of the TCP header.
    public var tcpOffset: Int
    /// One past the last byte the IP header's length field covers (≤ the frame length; the
    /// frame may carry Ethernet padding after it).
    public var ipEnd: Int
    /// True for IPv6, false for IPv4.
    public var isIPv6: Bool

    @inlinable
    public init(ipOffset: Int, tcpOffset: Int, ipEnd: Int, isIPv6: Bool) {
        self.ipOffset = ipOffset
        self.tcpOffset = tcpOffset
        self.ipEnd = ipEnd
        self.isIPv6 = isIPv6
    }
}

/// What a frame is, as far as the forwarders care.
public enum FrameClass: Equatable {
    /// An IPv4 or IPv6 TCP segment whose headers all lie inside the frame.
    case tcp(TCPFrame)
    /// Well-formed but not forwarded: not IP, VLAN-tagged, not TCP, an IPv4 fragment, or an
    /// IPv6 packet with extension headers.
    case unsupported
    /// Truncated, or a header whose length fields contradict the frame.
    case malformed
}

/// Classifies frames: every length field is checked against the received length, so a
/// truncated or lying header yields `.malformed` and never an out-of-bounds read.
public enum FrameParser {
    /// True when the 16-byte address at `offset` is an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
    @inlinable @inline(__always)
    static func isIPv4Mapped(_ frame: UnsafeMutableRawPointer, _ offset: Int) -> Bool {
        Wire.load64(frame, offset) == 0 && Wire.load32(frame, offset &+ 8) == 0xffff
    }

    /// Classifies the frame at `frame` of `length` received bytes.
    @inlinable @inline(__always)
    public static func classify(_ frame: UnsafeMutableRawPointer, length: Int) -> FrameClass {
        if let tcp = plainIPv4TCP(frame, length: length) { return .tcp(tcp) }
        return classifyFully(frame, length: length)
    }

    /// `classify` without the shortcut for the common frame: every shape, every check.
    @inlinable
    public static func classifyFully(_ frame: UnsafeMutableRawPointer, length: Int) -> FrameClass {
        guard length >= EthernetHeader.length + 20 else { return length >= EthernetHeader.length ? .unsupportedOrMalformed(frame) : .malformed }
        let type = Wire.load16(frame, 12)
        let l3 = EthernetHeader.length
        if type == EthernetHeader.typeIPv4 {
            let ip = IPv4Header(frame + l3)
            let headerLength = ip.headerLength
            let total = ip.totalLength
            guard ip.version == 4, headerLength >= 20, total >= headerLength, l3 &+ total <= length else { return .malformed }
            guard !ip.isFragment, ip.proto == 6 else { return .unsupported }
            let l4 = l3 &+ headerLength
            let end = l3 &+ total
            guard l4 &+ 20 <= end else { return .malformed }
            let tcpLength = TCPHeader(frame + l4).headerLength
            guard tcpLength >= 20, l4 &+ tcpLength <= end else { return .malformed }
            return .tcp(TCPFrame(ipOffset: l3, tcpOffset: l4, ipEnd: end, isIPv6: false))
        }
        if type == EthernetHeader.typeIPv6 {
            guard length >= l3 &+ IPv6Header.length else { return .malformed }
            let ip = IPv6Header(frame + l3)
            let end = l3 &+ IPv6Header.length &+ ip.payloadLength
            guard ip.version == 6, end <= length else { return .malformed }
            guard ip.nextHeader == 6 else { return .unsupported }
            // An IPv4-mapped address never appears on the wire (RFC 4291 §2.5.5.2; Linux
            // drops such sources too). Refusing them keeps every flow of an IPv4 frontend an
            // IPv4 flow (addresses are compared in their mapped form).
            guard !Self.isIPv4Mapped(frame, l3 &+ 8), !Self.isIPv4Mapped(frame, l3 &+ 24) else { return .malformed }
            let l4 = l3 &+ IPv6Header.length
            guard l4 &+ 20 <= end else { return .malformed }
            let tcpLength = TCPHeader(frame + l4).headerLength
            guard tcpLength >= 20, l4 &+ tcpLength <= end else { return .malformed }
            return .tcp(TCPFrame(ipOffset: l3, tcpOffset: l4, ipEnd: end, isIPv6: true))
        }
        return .unsupported
    }

    /// The common frame, checked with the fewest tests: IPv4 without options (IHL 5), not a
    /// fragment, TCP, every length consistent. nil means "not this shape" (it may still be a
    /// valid frame; `classify` then looks at it in full and says why it is dropped).
    @inlinable @inline(__always)
    public static func plainIPv4TCP(_ frame: UnsafeMutableRawPointer, length: Int) -> TCPFrame? {
        let l3 = EthernetHeader.length
        let l4 = l3 &+ 20
        guard length >= l4 &+ 20 else { return nil }
        // Two words, little-endian (byte n of the frame in bits 8(n − first)):
        // bytes 12–15: EtherType 0x0800, version 4 with IHL 5; bytes 20–23: flags and
        // fragment offset (no MF, offset 0), TTL (any), protocol 6.
        let typeAndVersion = UInt32(littleEndian: frame.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        let fragmentAndProtocol = UInt32(littleEndian: frame.loadUnaligned(fromByteOffset: l3 &+ 6, as: UInt32.self))
        guard typeAndVersion & 0x00FF_FFFF == 0x0045_0008, fragmentAndProtocol & 0xFF00_FF3F == 0x0600_0000 else {
            return nil
        }
        let end = l3 &+ Int(Wire.load16(frame, l3 &+ 2))
        let tcpEnd = l4 &+ Int(frame.load(fromByteOffset: l4 &+ 12, as: UInt8.self) >> 4) &* 4
        guard end <= length, tcpEnd >= l4 &+ 20, tcpEnd <= end else { return nil }
        return TCPFrame(ipOffset: l3, tcpOffset: l4, ipEnd: end, isIPv6: false)
    }

    /// Classifies a frame given as a buffer (its count is the received length).
    @inlinable @inline(__always)
    public static func classify(_ frame: UnsafeMutableRawBufferPointer) -> FrameClass {
        guard let base = frame.baseAddress else { return .malformed }
        return classify(base, length: frame.count)
    }
}

extension FrameClass {
    /// A frame with a full Ethernet header but too short for any IP header: not IP is
    /// unsupported, claimed IP is malformed.
    @inlinable
    static func unsupportedOrMalformed(_ frame: UnsafeMutableRawPointer) -> FrameClass {
        let type = Wire.load16(frame, 12)
        return type == EthernetHeader.typeIPv4 || type == EthernetHeader.typeIPv6 ? .malformed : .unsupported
    }
}
