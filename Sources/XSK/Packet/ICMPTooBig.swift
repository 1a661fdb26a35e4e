/// An ICMP "fragmentation needed" (IPv4, type 3 code 4) or ICMPv6 "packet too big" (type 2)
/// message about a TCP segment a VIP sent, read from the quote it carries.
///
/// In DSR the backends answer clients with the VIP as their source, so a router on the way
/// to a client whose link is narrower sends this message to the VIP, which routes to the
/// balancer. The backend that sent the segment must get it, or its path MTU discovery never
/// learns and large replies vanish (a "PMTU black hole"). The quote names the connection:
/// its source is the VIP and port, its destination the client.
public struct ICMPTooBig: Equatable, Sendable {
    /// The client (the quoted segment's destination), widened as flow keys are.
    public var clientHi: UInt64
    public var clientLo: UInt64
    public var clientPort: UInt16
    /// The VIP (the quoted segment's source, the message's destination), widened.
    public var vipHi: UInt64
    public var vipLo: UInt64
    public var vipPort: UInt16

    /// The message in the frame at `frame` of `length` bytes, or nil when the frame is not one:
    /// not ICMP(v6) "too big", truncated, a fragment, or quoting something other than a TCP
    /// segment from the message's own destination. Reads only inside `length`.
    public static func parse(_ frame: UnsafeMutableRawPointer, length: Int) -> ICMPTooBig? {
        let l3 = EthernetHeader.length
        guard length >= l3 &+ 20 else { return nil }
        switch Wire.load16(frame, 12) {
        case EthernetHeader.typeIPv4:
            let ip = IPv4Header(frame + l3)
            let headerLength = ip.headerLength
            guard ip.version == 4, headerLength >= 20, !ip.isFragment, ip.proto == 1 else { return nil }
            let end = l3 &+ ip.totalLength
            let icmp = l3 &+ headerLength
            let quote = icmp &+ 8
            // The quote: an IPv4 header, then at least the TCP ports, inside the packet.
            guard end <= length, quote &+ 20 <= end else { return nil }
            let type = frame.load(fromByteOffset: icmp, as: UInt8.self)
            let code = frame.load(fromByteOffset: icmp &+ 1, as: UInt8.self)
            guard type == 3, code == 4 else { return nil }
            let quoted = IPv4Header(frame + quote)
            let quotedHeader = quoted.headerLength
            let ports = quote &+ quotedHeader
            guard quoted.version == 4, quotedHeader >= 20, quoted.proto == 6, ports &+ 4 <= end,
                  quoted.source == ip.destination else { return nil }
            return ICMPTooBig(clientHi: 0, clientLo: 0xffff_0000_0000 | UInt64(quoted.destination),
                              clientPort: Wire.load16(frame, ports &+ 2),
                              vipHi: 0, vipLo: 0xffff_0000_0000 | UInt64(quoted.source),
                              vipPort: Wire.load16(frame, ports))
        case EthernetHeader.typeIPv6:
            let icmp = l3 &+ IPv6Header.length
            let quote = icmp &+ 8
            let ports = quote &+ IPv6Header.length
            guard ports &+ 4 <= length else { return nil }
            let ip = IPv6Header(frame + l3)
            guard icmp &+ ip.payloadLength <= length, ports &+ 4 <= icmp &+ ip.payloadLength else { return nil }
            guard ip.version == 6, ip.nextHeader == 58,
                  frame.load(fromByteOffset: icmp, as: UInt8.self) == 2,
                  frame.load(fromByteOffset: icmp &+ 1, as: UInt8.self) == 0 else { return nil }
            let quoted = IPv6Header(frame + quote)
            let vip = quoted.source
            let destination = ip.destination
            guard quoted.version == 6, quoted.nextHeader == 6, vip.hi == destination.hi, vip.lo == destination.lo else {
                return nil
            }
            // IPv4-mapped addresses never appear on the wire; taking them would match an IPv4
            // VIP's flows (flow keys hold IPv4 in mapped form), as `FrameParser` refuses too.
            guard !FrameParser.isIPv4Mapped(frame, quote &+ 8), !FrameParser.isIPv4Mapped(frame, quote &+ 24) else { return nil }
            let client = quoted.destination
            return ICMPTooBig(clientHi: client.hi, clientLo: client.lo, clientPort: Wire.load16(frame, ports &+ 2),
                              vipHi: vip.hi, vipLo: vip.lo, vipPort: Wire.load16(frame, ports))
        default:
            return nil
        }
    }
}
