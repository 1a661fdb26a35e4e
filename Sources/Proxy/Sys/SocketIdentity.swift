/// What a socket is, whatever descriptor refers to it: the device and inode `fstat` reports
/// (see `SocketCalls.identity`). Two descriptors with one identity are copies of one socket,
/// which is how the loops' copies of a shared listening socket are told apart from distinct
/// sockets in a takeover's handover.
struct SocketIdentity: Hashable, Sendable {
    var device: UInt64
    var inode: UInt64
}
