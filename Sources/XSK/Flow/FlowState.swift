/// Where a tracked TCP connection is in its life, as far as one direction of packets shows.
/// Each state has its own idle timeout (`ForwarderSettings`).
public enum FlowState: UInt8, Sendable {
    /// The slot holds no flow.
    case empty = 0
    /// Created by the client's SYN; no plain ACK seen yet.
    case syn = 1
    /// The client has acknowledged: data flows.
    case established = 2
    /// A FIN or RST was seen: the flow lingers briefly for retransmissions, then ends.
    case closing = 3
}
