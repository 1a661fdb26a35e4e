/// What the first pass over an RX batch learned about one frame: for a plain IPv4 TCP segment
/// to a VIP that neither opens nor closes its flow, where that flow lives (so the second pass neither parses nor hashes again); for
/// anything else, only that it takes the full path.
///
/// The batch runs in two passes so that the flow-table slots of all its frames are being
/// loaded at once (`FlowTable.prefetch`) before the first one is needed: with a million flows
/// each slot is a cache miss, and one miss at a time would cost more than the rest of the path.
struct FrameLookup {
    /// The flow key's home slot; `FrameLookup.full` (-1) or `FrameLookup.reply` (-2) otherwise.
    var home: Int
    /// The client address (IPv4-mapped); for a reply, the NAT port (host order).
    var clientLo: UInt64
    var key: UInt32

    /// The frame takes the full path (`handle`).
    static let full = -1
    /// Passthrough: a plain IPv4 segment to the IPv4 NAT address (a backend's reply).
    static let reply = -2

    @inline(__always)
    init(home: Int, clientLo: UInt64 = 0, key: UInt32 = 0) {
        self.home = home
        self.clientLo = clientLo
        self.key = key
    }
}

/// Room for one batch's `FrameLookup`s, allocated once per forwarder and freed with it.
final class FrameLookupBuffer {
    /// The most frames one pass covers (`XSKWorker.batchSize`); longer batches go in parts.
    static let capacity = 64
    let lookups: UnsafeMutablePointer<FrameLookup>

    init() {
        lookups = .allocate(capacity: Self.capacity)
        lookups.initialize(repeating: FrameLookup(home: FrameLookup.full), count: Self.capacity)
    }

    deinit {
        lookups.deinitialize(count: Self.capacity)
        lookups.deallocate()
    }
}

/// A handler that runs a batch through a `FrameLookupBuffer`: at most its capacity of frames
/// at a time.
///
/// The two passes themselves stay in each forwarder: a shared loop here reaches the forwarder's
/// `ForwarderCore` through the protocol, which copies it (retaining its references) per batch;
/// tried, it cost 20–26 more instructions per packet.
protocol FrameLookupBatching {
    /// Handles at most `FrameLookupBuffer.capacity` frames.
    mutating func handle(part frames: UnsafeBufferPointer<PacketFrame>, verdicts: UnsafeMutablePointer<PacketVerdict>)
}

extension FrameLookupBatching {
    /// Handles a batch of any length, a buffer's capacity of frames at a time.
    @inline(__always)
    mutating func handle(parts frames: UnsafeBufferPointer<PacketFrame>, verdicts: UnsafeMutablePointer<PacketVerdict>) {
        var start = 0
        while start < frames.count {
            let n = min(frames.count &- start, FrameLookupBuffer.capacity)
            handle(part: UnsafeBufferPointer(rebasing: frames[start..<(start &+ n)]), verdicts: verdicts + start)
            start &+= n
        }
    }
}
