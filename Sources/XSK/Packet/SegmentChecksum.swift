/// Whether a TCP segment's checksum is complete, checked on SYNs only.
///
/// A sender that hands checksumming to its device (TX checksum offload, on by default on veth)
/// leaves in the field only the sum of the pseudo-header, for the device to finish. Between
/// two hosts on veth nobody ever finishes it: the kernel trusts such a segment, but one
/// redirected to an AF_XDP socket loses that mark, and the backend it is forwarded to drops it
/// as corrupt. Forwarders check the SYN of every new flow (off the established path), so
/// that this shows up as a counter and a log line naming the fix
/// instead of connections that silently never open; a wrong checksum is likewise not given a
/// flow (or a NAT port) its backend would never answer.
enum SegmentChecksum: Equatable {
    case valid
    /// The field holds the pseudo-header's sum: left for checksum offload to finish.
    case unfinished
    case wrong

    /// Segments longer than this are summed only when their field looks unfinished (a SYN
    /// padded with data must not cost a flood's target a full pass over every byte): a
    /// wrong checksum on a longer SYN passes as valid.
    static let fullCheckLimit = 256

    /// Classifies the TCP checksum of the segment `frame` locates in the frame at `p`.
    static func classify(_ p: UnsafeRawPointer, _ frame: TCPFrame) -> SegmentChecksum {
        let tcpLength = frame.ipEnd &- frame.tcpOffset
        guard tcpLength >= 20 else { return .wrong }
        var pseudo: UInt64
        if frame.isIPv6 {
            pseudo = Checksum.sum(UnsafeRawBufferPointer(start: p + (frame.ipOffset &+ 8), count: 32))
        } else {
            pseudo = Checksum.sum(UnsafeRawBufferPointer(start: p + (frame.ipOffset &+ 12), count: 8))
        }
        pseudo &+= UInt64(tcpLength >> 16) &+ UInt64(tcpLength & 0xffff) &+ 6  // length, protocol (TCP)
        let segment = UnsafeRawBufferPointer(start: p + frame.tcpOffset, count: tcpLength)
        let looksUnfinished = UInt16(segment[16]) << 8 | UInt16(segment[17]) == Checksum.fold(pseudo)
        if tcpLength > fullCheckLimit && !looksUnfinished { return .valid }
        // Summed even when it looks unfinished: a valid checksum can hold that value too.
        if Checksum.fold(Checksum.sum(segment, initial: pseudo)) == 0xffff { return .valid }
        return looksUnfinished ? .unfinished : .wrong
    }
}
