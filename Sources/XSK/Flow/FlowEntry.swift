/// One tracked connection: 64 bytes (one cache line, padding included), stored inline in the
/// flow table's buffer, which is 64-byte aligned, so a lookup that hits touches one line.
///
/// Key: client address (IPv4 in its IPv4-mapped IPv6 form), client port and frontend (VIP)
/// index — together unique, since a VIP index names one address and port. Value: the backend
/// slot (a `PacketRoutes` slot id, stable across routes swaps), the NAT port (passthrough; 0 in
/// DSR), the TCP state, the MAC the client's frames came from, and when a packet was last seen.
public struct FlowEntry: Sendable {
    public var clientHi: UInt64
    public var clientLo: UInt64
    /// Monotonic nanoseconds of the last packet (the batch's clock).
    public var lastSeen: UInt64
    public var clientMAC: UInt64
    public var backendSlot: UInt32
    /// `clientPort << 16 | vipIndex`: compared as one word.
    public var portAndVIP: UInt32
    public var natPort: UInt16
    public var state: FlowState
    /// The idle timeout of the current state, nanoseconds (set with `state`, so the expiry
    /// check reads the entry's own cache line instead of branching on the state).
    public var idleTimeout: UInt64 = 0
    /// Pads the entry to 64 bytes.
    var padding: UInt64 = 0

    init(clientHi: UInt64, clientLo: UInt64, lastSeen: UInt64, clientMAC: UInt64, backendSlot: UInt32,
         portAndVIP: UInt32, natPort: UInt16, state: FlowState) {
        self.clientHi = clientHi
        self.clientLo = clientLo
        self.lastSeen = lastSeen
        self.clientMAC = clientMAC
        self.backendSlot = backendSlot
        self.portAndVIP = portAndVIP
        self.natPort = natPort
        self.state = state
    }

    public var clientPort: UInt16 { UInt16(truncatingIfNeeded: portAndVIP >> 16) }
    public var vipIndex: Int { Int(portAndVIP & 0xffff) }

    @inline(__always)
    static func key(port: UInt16, vip: Int) -> UInt32 { UInt32(port) << 16 | UInt32(truncatingIfNeeded: vip) & 0xffff }
}
