import NIOCore
import NIOPosix
import Synchronization

/// A real TCP server on 127.0.0.1 (or ::1) that plays a backend in health-check tests.
final class LoopbackServer: Sendable {
    /// How the backend treats each connection it accepts.
    enum Behaviour: Sendable {
        /// Accepts and keeps the connection open without ever answering.
        case silent
        /// Answers `reply` once the first bytes of a request have arrived.
        case reply([UInt8])
        /// Greets every connection with `banner` at once, without waiting for a request (SMTP-like).
        case banner([UInt8])
        /// Closes every connection as soon as it is accepted.
        case hangUp
    }

    let port: Int
    private let channel: any Channel
    private let stats: Stats

    private init(port: Int, channel: any Channel, stats: Stats) {
        self.port = port
        self.channel = channel
        self.stats = stats
    }

    /// Starts listening on `port` (0: any free port), reusing the address so a test can bring a
    /// listener back on a port it closed a moment ago.
    static func start(_ behaviour: Behaviour, host: String = "127.0.0.1", port: Int = 0) async throws -> LoopbackServer {
        let stats = Stats()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                stats.accepted.add(1, ordering: .relaxed)
                return child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(BackendHandler(behaviour: behaviour, stats: stats))
                }
            }
            .bind(host: host, port: port)
            .get()
        return LoopbackServer(port: channel.localAddress!.port!, channel: channel, stats: stats)
    }

    /// `count` distinct ports on 127.0.0.1 that nothing listens on.
    ///
    /// They come from below the kernel's ephemeral range (`ip_local_port_range` starts at 32768
    /// by default), so no listener bound to port 0 and no outgoing connection of a test running
    /// in parallel can take one of them between the moment it is handed out and the moment a
    /// test expects it closed, or brings a listener back on it. Each candidate is proven free by
    /// binding it once; ports are never handed out twice in one test run.
    static func closedPorts(_ count: Int) async throws -> [Int] {
        var ports: [Int] = []
        while ports.count < count {
            let candidate = nextLowPort.add(1, ordering: .relaxed).newValue
            precondition(candidate < 32_768, "ran out of test ports below the ephemeral range")
            guard let probe = try? await start(.silent, port: candidate) else { continue }
            try await probe.stop()
            ports.append(candidate)
        }
        return ports
    }

    /// Where the next closed port is looked for: a random start per run, so parallel runs from
    /// several worktrees rarely meet.
    private static let nextLowPort = Atomic<Int>(Int.random(in: 20_000..<28_000))

    /// Connections accepted so far: how many checks reached this backend.
    var acceptedConnections: Int { stats.accepted.load(ordering: .relaxed) }

    /// Every byte received, over all connections.
    var receivedBytes: [UInt8] { stats.received.withLock { $0 } }

    /// Stops listening and closes every open connection's listener.
    func stop() async throws {
        try await channel.close()
    }

    private final class Stats: Sendable {
        let accepted = Atomic<Int>(0)
        let received = Mutex<[UInt8]>([])
    }

    private final class BackendHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        let behaviour: Behaviour
        let stats: Stats
        var answered = false

        init(behaviour: Behaviour, stats: Stats) {
            self.behaviour = behaviour
            self.stats = stats
        }

        func channelActive(context: ChannelHandlerContext) {
            switch behaviour {
            case .hangUp:
                context.close(promise: nil)
            case .banner(let banner):
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: banner)), promise: nil)
            case .silent, .reply:
                break
            }
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(unwrapInboundIn(data).readableBytesView)
            stats.received.withLock { $0.append(contentsOf: bytes) }
            if case .reply(let reply) = behaviour, !answered {
                answered = true
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: reply)), promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
