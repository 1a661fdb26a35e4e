import Hummingbird
import NIOCore

/// The stats server's request context: Hummingbird's basic one plus the peer's address, so
/// an operator's command can be logged with who sent it.
public struct StatsRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The connection's peer (nil if the channel no longer knows it).
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    /// The peer as `address:port` (`[address]:port` for IPv6), for logs.
    public var sender: String {
        guard let remote = remoteAddress, let ip = remote.ipAddress else { return "an unknown peer" }
        let port = remote.port.map { ":\($0)" } ?? ""
        return ip.contains(":") ? "[\(ip)]\(port)" : "\(ip)\(port)"
    }
}
