import XSK

/// A test handler: counts TCP SYNs (IPv4, with or without IP options, and IPv6) and other
/// frames, and drops everything (so a client's connect to the VIP times out, which is fine).
struct SYNCounter: PacketHandler {
    var synV4: UInt64 = 0
    var synV6: UInt64 = 0
    var synV4WithOptions: UInt64 = 0
    var other: UInt64 = 0
    var batches: UInt64 = 0

    mutating func beginBatch(now: UInt64) { batches &+= 1 }

    mutating func handle(_ packet: UnsafeMutableRawBufferPointer) -> PacketVerdict {
        let count = packet.count
        guard count >= 14 else { other &+= 1; return .drop }
        let etherType = UInt16(packet[12]) << 8 | UInt16(packet[13])
        if etherType == 0x0800, count >= 34 {
            let ihl = Int(packet[14] & 0x0F) * 4
            if packet[23] == 6, ihl >= 20, count >= 14 + ihl + 14, packet[14 + ihl + 13] & 0x12 == 0x02 {
                synV4 &+= 1
                if ihl > 20 { synV4WithOptions &+= 1 }
                return .drop
            }
        } else if etherType == 0x86DD, count >= 54 + 14 {
            if packet[20] == 6, packet[54 + 13] & 0x12 == 0x02 {
                synV6 &+= 1
                return .drop
            }
        }
        other &+= 1
        return .drop
    }
}
