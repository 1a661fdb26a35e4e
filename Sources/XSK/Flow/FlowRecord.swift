import Balancer

/// One tracked flow as a takeover hands it from a running convey to its replacement: what the
/// replacement needs to go on forwarding the connection, in terms neither process's memory
/// layout decides (addresses, the server's name, the NAT port), not table slots, backend slot
/// numbers or frontend indices, which differ between the two. A takeover itself carries the
/// same fields encoded (`FlowPart`, `CarriedFlow`) and never builds these; they are the
/// readable form, for tests and inspection.
///
/// Times are `CLOCK_MONOTONIC` nanoseconds, which both processes on one machine share.
public struct FlowRecord: Sendable, Equatable {
    /// The client (IPv4 in its IPv4-mapped IPv6 form) and its port.
    public var clientHi: UInt64
    public var clientLo: UInt64
    public var clientPort: UInt16
    /// The VIP (widened as the client) and port the client connected to.
    public var vipHi: UInt64
    public var vipLo: UInt64
    public var vipPort: UInt16
    /// The server the flow is placed on, and the address and port it had: a flow goes on only
    /// to the same server at the same address.
    public var server: ServerID
    public var backendHi: UInt64
    public var backendLo: UInt64
    public var backendPort: UInt16
    public var state: FlowState
    /// When the flow's last packet was seen.
    public var lastSeen: UInt64
    /// The client has sent FIN.
    public var clientFinished: Bool
    /// The anchor of the client's sequence window (see `ClientSequenceWindow.swift`).
    public var clientSequence: UInt32
    /// Passthrough: the NAT port (0 in DSR), the client's MAC (replies go to it), and how the
    /// backend has closed its side so far.
    public var natPort: UInt16
    public var clientMAC: UInt64
    public var serverClosed: ServerClosed

    /// What the backend has sent to close a passthrough flow (`ServerClose`, as carried).
    public enum ServerClosed: UInt8, Sendable {
        case open = 0
        case finished = 1
        case reset = 2
    }

    public init(clientHi: UInt64, clientLo: UInt64, clientPort: UInt16, vipHi: UInt64, vipLo: UInt64, vipPort: UInt16,
                server: ServerID, backendHi: UInt64, backendLo: UInt64, backendPort: UInt16, state: FlowState,
                lastSeen: UInt64, clientFinished: Bool = false, clientSequence: UInt32 = 0, natPort: UInt16 = 0,
                clientMAC: UInt64 = 0, serverClosed: ServerClosed = .open) {
        self.clientHi = clientHi
        self.clientLo = clientLo
        self.clientPort = clientPort
        self.vipHi = vipHi
        self.vipLo = vipLo
        self.vipPort = vipPort
        self.server = server
        self.backendHi = backendHi
        self.backendLo = backendLo
        self.backendPort = backendPort
        self.state = state
        self.lastSeen = lastSeen
        self.clientFinished = clientFinished
        self.clientSequence = clientSequence
        self.natPort = natPort
        self.clientMAC = clientMAC
        self.serverClosed = serverClosed
    }
}

/// How many of the records a worker was given it now tracks, and why the others were left
/// out (each is a connection the takeover could not carry; its next segment is answered as
/// any segment of an unknown flow).
public struct FlowImportResult: Sendable, Equatable {
    public var imported = 0
    /// The VIP is not a frontend of the new configuration.
    public var noFrontend = 0
    /// The server is not in the new configuration at the same address, or cannot take flows.
    public var noServer = 0
    /// No room in the table (its capacity, or the key's probe window).
    public var tableFull = 0
    /// Passthrough: the NAT port is not this worker's, or is held twice.
    public var natPortUnavailable = 0

    public init() {}

    /// Records left out, for whatever reason.
    public var leftOut: Int { noFrontend + noServer + tableFull + natPortUnavailable }

    public static func + (a: FlowImportResult, b: FlowImportResult) -> FlowImportResult {
        var r = a
        r.imported += b.imported
        r.noFrontend += b.noFrontend
        r.noServer += b.noServer
        r.tableFull += b.tableFull
        r.natPortUnavailable += b.natPortUnavailable
        return r
    }
}
