/// One tracked connection: 64 bytes (one cache line), stored inline in the flow table's
/// buffer, which is 64-byte aligned, so a lookup that hits touches one line.
///
/// Key: client address (IPv4 in its IPv4-mapped IPv6 form), client port and frontend (VIP)
/// index — together unique, since a VIP index names one address and port. Value: the backend
/// slot (a `PacketRoutes` slot id, stable across routes swaps, and naming one address and
/// port), the TCP state and its idle timeout, when a packet was last seen, the anchor of the
/// client's sequence window, and for passthrough the NAT port and the flow's rewrite,
/// computed once when the flow starts: a flow changes the same fields to the same values in
/// every packet, so its checksum differences are constants too.
public struct FlowEntry: Sendable {
    public var clientHi: UInt64
    public var clientLo: UInt64
    /// Monotonic nanoseconds of the last packet (the batch's clock).
    public var lastSeen: UInt64
    /// The idle timeout of the current state, nanoseconds (set with `state`, so the expiry
    /// check reads the entry's own cache line instead of branching on the state).
    public var idleTimeout: UInt64 = 0
    /// Passthrough, IPv4: the IPv4 header's bytes 12–19 (NAT address, backend address) as
    /// they leave, in memory order.
    var natAddresses: UInt64 = 0
    public var backendSlot: UInt32
    /// The client port in network byte order, shifted 16, `| vipIndex`: compared as one
    /// word (network order, so the packet path builds it from the frame without swapping).
    public var portAndVIP: UInt32
    /// Passthrough: the TCP header's bytes 0–3 (NAT port, backend port) in memory order.
    var natPorts: UInt32 = 0
    public var natPort: UInt16
    /// Passthrough: `Checksum.storedDelta`s of the rewrite for the IPv4 header checksum and
    /// the TCP checksum (pseudo-header included).
    var ipChecksumDelta: UInt16 = 0
    var tcpChecksumDelta: UInt16 = 0
    public var state: FlowState
    /// The client has sent FIN (passthrough closes the flow once the backend has too).
    var clientFinished = false
    /// The anchor of the client's sequence window (host order; see `ClientSequenceWindow.swift`):
    /// the SYN's sequence number (a DSR flow taken up mid-connection: its first segment's),
    /// moved on by the client's segments, at most half a window behind the latest. What a RST
    /// or FIN must be near to close the flow. It fills the entry's last 4 bytes: a new field
    /// needs room made elsewhere.
    var clientSequence: UInt32 = 0

    init(clientHi: UInt64, clientLo: UInt64, lastSeen: UInt64, backendSlot: UInt32, portAndVIP: UInt32,
         natPort: UInt16, state: FlowState) {
        self.clientHi = clientHi
        self.clientLo = clientLo
        self.lastSeen = lastSeen
        self.backendSlot = backendSlot
        self.portAndVIP = portAndVIP
        self.natPort = natPort
        self.state = state
    }

    public var clientPort: UInt16 { Self.port(ofKey: portAndVIP) }
    public var vipIndex: Int { Int(portAndVIP & 0xffff) }

    /// The key of an empty slot: VIP index 0xffff, which no frontend has
    /// (`PacketRoutes.maxFrontends` is 65535), so a lookup never matches an empty slot.
    static let noKey: UInt32 = 0xffff_ffff

    /// The key of client port `port` (host order) and frontend `vip`.
    @inline(__always)
    static func key(port: UInt16, vip: Int) -> UInt32 {
        UInt32(port.bigEndian) << 16 | UInt32(truncatingIfNeeded: vip) & 0xffff
    }

    /// The client port (host order) of a key.
    @inline(__always)
    static func port(ofKey key: UInt32) -> UInt16 { UInt16(bigEndian: UInt16(truncatingIfNeeded: key >> 16)) }
}
