import Balancer

/// The fixed settings of one worker's forwarder, from `ConveyConfig` plus what the control
/// plane resolves at start (worker index and count, NAT address and ports).
public struct ForwarderSettings: Sendable, Equatable {
    /// Flows tracked by this worker (`[passthrough] connection_tracker_capacity`).
    public var capacity: Int
    /// Idle timeouts by flow state, nanoseconds (`[xdp] syn/established/closing_timeout`).
    public var synTimeout: UInt64
    public var establishedTimeout: UInt64
    public var closingTimeout: UInt64
    /// Passthrough source address of IPv4 flows (or, set alone to an IPv6 address, of IPv6
    /// flows); unused in DSR.
    public var natAddress: IPAddress?
    /// Passthrough source address of IPv6 flows. With neither this nor an IPv6 `natAddress`,
    /// IPv6 SYNs are dropped as "no backend" (and IPv4 SYNs likewise without an IPv4 one).
    public var natAddressV6: IPAddress? = nil
    /// All NAT ports (`[xdp] nat_ports` or the default above the ephemeral range); this
    /// worker owns slice `workerIndex` of `workerCount`.
    public var natPorts: ClosedRange<UInt16>?
    public var workerIndex: Int
    public var workerCount: Int
    /// Which of its slice's ports this worker hands out first (an offset, modulo the slice),
    /// then on around the slice. The data plane starts each run at a random one: backends may
    /// still hold the ports the previous run used last (in TIME_WAIT, or connections a restart
    /// cut off), and a run that always began at the slice's first port met those first.
    public var natPortStart: Int = 0
    /// Slots a key may occupy from its home slot: bounds every lookup.
    public var probeWindow: Int = 32
    /// A flow seen more recently than this is never evicted to make room (nanoseconds).
    public var minIdleForEviction: UInt64 = 1_000_000_000
    /// The expiry sweep visits every table slot once per this interval (nanoseconds), spread
    /// over the batches in proportion to the time between them: cost follows the clock, not
    /// the packet rate (a 1M-flow table: about one slot per microsecond).
    public var fullSweepInterval: UInt64 = 2_000_000_000
    /// At most this many slots are swept in one call of `beginBatch`; the rest carries over.
    /// Unlimited by default: the pacing above already bounds the work (tests set it to 0 to
    /// switch the sweep off).
    public var sweepPerBatch: Int = .max

    public init(capacity: Int, synTimeout: Duration = .seconds(5), establishedTimeout: Duration = .seconds(300),
                closingTimeout: Duration = .seconds(10), natAddress: IPAddress? = nil,
                natPorts: ClosedRange<UInt16>? = nil, workerIndex: Int = 0, workerCount: Int = 1) {
        precondition(capacity > 0, "flow table capacity must be positive")
        precondition(workerCount > 0 && workerIndex >= 0 && workerIndex < workerCount,
                     "worker \(workerIndex) of \(workerCount)")
        self.capacity = capacity
        self.synTimeout = Self.nanoseconds(synTimeout)
        self.establishedTimeout = Self.nanoseconds(establishedTimeout)
        self.closingTimeout = Self.nanoseconds(closingTimeout)
        self.natAddress = natAddress
        self.natPorts = natPorts
        self.workerIndex = workerIndex
        self.workerCount = workerCount
    }

    /// Settings for worker `workerIndex` of `workerCount` from `config`. `natAddresses` (at
    /// most one per family) and `natPorts` override the config's when the control plane
    /// resolved defaults (the interface's addresses, the ports above `ip_local_port_range`).
    public init(config: ConveyConfig, workerIndex: Int, workerCount: Int, natAddresses: [IPAddress]? = nil,
                natPorts: ClosedRange<UInt16>? = nil) {
        let addresses = natAddresses ?? config.xdp.natAddresses
        self.init(capacity: max(1, config.passthrough.connectionTrackerCapacity),
                  synTimeout: config.xdp.synTimeout, establishedTimeout: config.xdp.establishedTimeout,
                  closingTimeout: config.xdp.closingTimeout,
                  natAddress: addresses.first(where: \.isIPv4), natPorts: natPorts ?? config.xdp.natPorts,
                  workerIndex: workerIndex, workerCount: workerCount)
        natAddressV6 = addresses.first { !$0.isIPv4 }
    }

    static func nanoseconds(_ d: Duration) -> UInt64 {
        let c = d.components
        guard c.seconds >= 0 else { return 0 }
        return UInt64(c.seconds) &* 1_000_000_000 &+ UInt64(c.attoseconds / 1_000_000_000)
    }

    /// This worker's NAT ports.
    public var workerNATPorts: ClosedRange<UInt16>? {
        natPorts.flatMap { NATPortPool.slice(of: $0, worker: workerIndex, of: workerCount) }
    }
}
