/// Turns a TCP segment, in place, into the reset its sender gets from a host that has no
/// connection for it (RFC 9293, 3.10.7.1): back to the sender's MAC, addresses and ports
/// swapped; if the segment acknowledged something, the reset's sequence number is that
/// acknowledgment (what the sender expects next, so it accepts the reset at once); otherwise
/// sequence 0 and an acknowledgment of the segment. No payload, no options; the frame keeps
/// its length, the bytes past the IP length being Ethernet padding (zeroed where the
/// segment's own options and payload were).
///
/// The forwarders answer this way a segment of a connection they no longer carry (its drain
/// ended, convey restarted), so that client and backend learn at their next segment that it
/// is gone instead of retransmitting into silence. Runs only off the steady path; checksums are
/// computed in full over the 40 or 60 bytes.
public enum ResetReply {
    /// Rewrites frame `p`, parsed as `frame`, into the reset answering it. Returns false, with
    /// the frame unchanged, for a segment no reset answers (a reset) or one this does not build
    /// (IPv4 options, IPv6 extension headers).
    public static func rewrite(_ p: UnsafeMutableRawPointer, _ frame: TCPFrame) -> Bool {
        let ipHeaderLength = frame.tcpOffset - frame.ipOffset
        guard ipHeaderLength == (frame.isIPv6 ? IPv6Header.length : 20) else { return false }
        let tcp = p + frame.tcpOffset
        let flags = tcp.load(fromByteOffset: 13, as: UInt8.self)
        guard flags & TCPHeader.rst == 0 else { return false }
        let dataOffset = Int(tcp.load(fromByteOffset: 12, as: UInt8.self) >> 4) * 4
        let segmentLength = max(0, frame.ipEnd - frame.tcpOffset - dataOffset)
            + (flags & TCPHeader.syn != 0 ? 1 : 0) + (flags & TCPHeader.fin != 0 ? 1 : 0)
        let sequence = TCPHeader(tcp).sequenceNumber
        let acknowledgment = Wire.load32(tcp, 8)

        // Ethernet: back where it came from.
        let destinationMAC = Wire.loadMAC(p, 0)
        Wire.storeMAC(p, 0, Wire.loadMAC(p, 6))
        Wire.storeMAC(p, 6, destinationMAC)

        let ip = p + frame.ipOffset
        var pseudo: UInt64
        if frame.isIPv6 {
            for i in stride(from: 0, to: 16, by: 8) {
                let source = Wire.load64(ip, 8 + i)
                Wire.store64(ip, 8 + i, Wire.load64(ip, 24 + i))
                Wire.store64(ip, 24 + i, source)
            }
            Wire.store16(ip, 4, 20)  // payload length
            ip.storeBytes(of: 64, toByteOffset: 7, as: UInt8.self)  // hop limit
            pseudo = Checksum.sum(UnsafeRawBufferPointer(start: ip + 8, count: 32))
        } else {
            let source = Wire.load32(ip, 12)
            Wire.store32(ip, 12, Wire.load32(ip, 16))
            Wire.store32(ip, 16, source)
            Wire.store16(ip, 2, 40)  // total length
            Wire.store16(ip, 6, 0x4000)  // don't fragment
            ip.storeBytes(of: 64, toByteOffset: 8, as: UInt8.self)  // TTL
            Wire.store16(ip, 10, 0)
            Wire.store16(ip, 10, Checksum.finish(Checksum.sum(UnsafeRawBufferPointer(start: ip, count: 20))))
            pseudo = Checksum.sum(UnsafeRawBufferPointer(start: ip + 12, count: 8))
        }

        let sourcePort = Wire.load16(tcp, 0)
        Wire.store16(tcp, 0, Wire.load16(tcp, 2))
        Wire.store16(tcp, 2, sourcePort)
        if flags & TCPHeader.ack != 0 {
            Wire.store32(tcp, 4, acknowledgment)
            Wire.store32(tcp, 8, 0)
            tcp.storeBytes(of: TCPHeader.rst, toByteOffset: 13, as: UInt8.self)
        } else {
            Wire.store32(tcp, 4, 0)
            Wire.store32(tcp, 8, sequence &+ UInt32(truncatingIfNeeded: segmentLength))
            tcp.storeBytes(of: TCPHeader.rst | TCPHeader.ack, toByteOffset: 13, as: UInt8.self)
        }
        tcp.storeBytes(of: 5 << 4, toByteOffset: 12, as: UInt8.self)  // 20 bytes, no options
        Wire.store16(tcp, 14, 0)  // window
        Wire.store16(tcp, 16, 0)  // checksum, computed below
        Wire.store16(tcp, 18, 0)  // urgent pointer
        // The frame keeps its length (the verdict carries none): what followed the new
        // header up to the old IP end is zeroed, so the reset echoes none of the segment's
        // options or payload back (to a sender that may be spoofed).
        let tail = frame.ipEnd - (frame.tcpOffset + 20)
        if tail > 0 { (tcp + 20).initializeMemory(as: UInt8.self, repeating: 0, count: tail) }
        pseudo &+= 6 &+ 20  // protocol, TCP length
        Wire.store16(tcp, 16, Checksum.finish(Checksum.sum(UnsafeRawBufferPointer(start: tcp, count: 20), initial: pseudo)))
        return true
    }
}
