import CXDP

/// The kernel's per-socket counters (`getsockopt(SOL_XDP, XDP_STATISTICS)`).
public struct XSKRingStatistics: Sendable, Equatable {
    /// Frames dropped for reasons other than invalid descriptors (e.g. RX ring full).
    public var rxDropped: UInt64 = 0
    /// Invalid descriptors on the FILL/RX side.
    public var rxInvalidDescriptors: UInt64 = 0
    /// Invalid descriptors on the TX ring.
    public var txInvalidDescriptors: UInt64 = 0
    /// Frames dropped because the RX ring was full.
    public var rxRingFull: UInt64 = 0
    /// Times the FILL ring was empty when the kernel needed a frame.
    public var rxFillRingEmptyDescriptors: UInt64 = 0
    /// Times the kernel found the TX ring empty when woken.
    public var txRingEmptyDescriptors: UInt64 = 0

    public init() {}

    init(_ s: xdp_statistics) {
        rxDropped = s.rx_dropped
        rxInvalidDescriptors = s.rx_invalid_descs
        txInvalidDescriptors = s.tx_invalid_descs
        rxRingFull = s.rx_ring_full
        rxFillRingEmptyDescriptors = s.rx_fill_ring_empty_descs
        txRingEmptyDescriptors = s.tx_ring_empty_descs
    }

    /// Field-wise sum (for totals over workers).
    public static func + (a: Self, b: Self) -> Self {
        var r = Self()
        r.rxDropped = a.rxDropped + b.rxDropped
        r.rxInvalidDescriptors = a.rxInvalidDescriptors + b.rxInvalidDescriptors
        r.txInvalidDescriptors = a.txInvalidDescriptors + b.txInvalidDescriptors
        r.rxRingFull = a.rxRingFull + b.rxRingFull
        r.rxFillRingEmptyDescriptors = a.rxFillRingEmptyDescriptors + b.rxFillRingEmptyDescriptors
        r.txRingEmptyDescriptors = a.txRingEmptyDescriptors + b.txRingEmptyDescriptors
        return r
    }
}
