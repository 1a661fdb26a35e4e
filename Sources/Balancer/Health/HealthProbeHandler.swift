import NIOCore
import SystemPackage

/// The channel handler that carries out one health check on an established connection:
/// write the `send` bytes (if any), read until `expect.count` bytes have arrived (if `expect` is
/// set), compare, and complete the probe's promise exactly once.
///
/// Lives on its channel's event loop only. The whole check shares one deadline with the connect
/// (set by `HealthProbe`), so a check never takes longer than the configured timeout. After the
/// result is known the handler closes the connection normally (FIN): backends see an ordinary
/// client hanging up rather than a reset in their logs.
final class HealthProbeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let send: [UInt8]
    private let expect: [UInt8]
    private let deadline: NIODeadline
    private let timeout: Duration
    private let promise: EventLoopPromise<HealthCheckResult>

    private var context: ChannelHandlerContext?
    private var received: [UInt8] = []
    private var active = false
    private var finished = false
    private var timer: Scheduled<Void>?

    init(send: [UInt8], expect: [UInt8], deadline: NIODeadline, timeout: Duration,
         promise: EventLoopPromise<HealthCheckResult>) {
        self.send = send
        self.expect = expect
        self.deadline = deadline
        self.timeout = timeout
        self.promise = promise
        received.reserveCapacity(expect.count)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        active = true
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            timedOut()
        }
        if !send.isEmpty {
            let write = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: send)), promise: write)
            write.futureResult.assumeIsolated().whenComplete { [self] result in
                switch result {
                case .success:
                    if expect.isEmpty { finish(.passed) }
                case .failure(let error):
                    finish(.failed(.sendFailed(Self.describe(error))))
                }
            }
        } else if expect.isEmpty {
            finish(.passed)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished, !expect.isEmpty else { return }
        let buffer = unwrapInboundIn(data)
        let wanted = expect.count - received.count
        received.append(contentsOf: buffer.readableBytesView.prefix(wanted))
        // Fail as soon as one byte differs instead of waiting for the rest of the reply.
        if !received.elementsEqual(expect.prefix(received.count)) || received.count == expect.count {
            finish(received == expect
                   ? .passed
                   : .failed(.unexpectedReply(received: received, expected: expect)))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if active && !finished {
            if expect.isEmpty {
                finish(.failed(.sendFailed("connection closed by the server")))
            } else {
                finish(.failed(.closedBeforeReply(received: received.count, expected: expect.count)))
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard active, !finished else { return }
        if expect.isEmpty {
            finish(.failed(.sendFailed(Self.describe(error))))
        } else {
            finish(.failed(.readFailed(Self.describe(error))))
        }
    }

    private func timedOut() {
        guard !finished else { return }
        if expect.isEmpty {
            finish(.failed(.sendFailed("not written within \(HealthCheckFailure.format(timeout))")))
        } else {
            finish(.failed(.replyTimeout(timeout, received: received.count)))
        }
    }

    private func finish(_ result: HealthCheckResult) {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        timer = nil
        promise.succeed(result)
        context?.close(promise: nil)
    }

    /// An I/O error as its errno text ("Connection reset by peer"), anything else as is.
    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return Errno(rawValue: io.errnoCode).description }
        return "\(error)"
    }
}
