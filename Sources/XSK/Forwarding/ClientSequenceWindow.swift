/// The client's sequence window of a flow: a RST or FIN closes the flow only when its
/// sequence number lies near the client's own, so one forged by someone who knows the
/// addresses and ports but not the sequence numbers (an off-path attacker) closes nothing
/// here. It is still forwarded: the backend, which knows the connection's exact window,
/// judges it (RFC 5961).
///
/// The window is anchored on `FlowEntry.clientSequence`: the SYN's sequence number (or the
/// first segment's, for a DSR flow taken up mid-connection), moved on by the client's
/// segments. The steady path only tests a segment against it (`isNearWindow`); a segment
/// more than half a window ahead takes the full path, which moves the anchor on (`follow`),
/// so the anchor lags the client's latest segment by at most half a window.
extension ForwarderCore {
    /// How far past the anchor a segment's sequence number may lie and still be taken as the
    /// connection's: half a window the anchor may lag, and what the client can have sent
    /// that the balancer has not seen yet (its last segment, a burst lost on the way).
    static let clientSequenceWindow: UInt32 = 1 << 20
    /// How far before the anchor: a keepalive probe or a retransmitted FIN, one byte back, or
    /// a retransmission of what the client sent earlier.
    static let clientSequenceBehind: UInt32 = 1 << 16

    /// Whether `sequence` (host order) lies within flow `e`'s window: from
    /// `clientSequenceBehind` before its anchor to `clientSequenceWindow` after it.
    @inline(__always)
    static func isInWindow(_ e: UnsafeMutablePointer<FlowEntry>, sequence: UInt32) -> Bool {
        sequence &- e.pointee.clientSequence &+ clientSequenceBehind <= clientSequenceWindow &+ clientSequenceBehind
    }

    /// Moves flow `e`'s anchor on to `sequence` (host order) when it lies ahead within the
    /// window: a forged segment far from it cannot move it, nor does a retransmission move it back.
    @inline(__always)
    static func follow(_ e: UnsafeMutablePointer<FlowEntry>, sequence: UInt32) {
        if sequence &- e.pointee.clientSequence <= clientSequenceWindow { e.pointee.clientSequence = sequence }
    }

    /// Whether `sequence` lies at most half a window ahead of flow `e`'s anchor: the steady
    /// path's test, which moves nothing (storing on every packet cost 2 more instructions). A
    /// segment beyond it (once every 512 KiB the client sends, or a retransmission) takes the
    /// full path, which moves the anchor on.
    @inline(__always)
    static func isNearWindow(_ e: UnsafeMutablePointer<FlowEntry>, sequence: UInt32) -> Bool {
        sequence &- e.pointee.clientSequence <= clientSequenceWindow / 2
    }
}
