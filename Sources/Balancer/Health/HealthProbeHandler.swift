import NIOCore
import SystemPackage

/// What a check wants to read back after its bytes are sent.
enum ExpectedReply: Sendable {
    /// Nothing: the check passes once its bytes (if any) are written.
    case nothing
    /// A reply starting with these bytes (`health_check_expect`).
    case prefix([UInt8])
    /// An HTTP status line with a code in this range (`health_check_http`).
    case httpStatus(ClosedRange<Int>)
}

/// The channel handler that carries out one health check on an established connection:
/// write the `send` bytes (if any), read the reply the check expects (if any), judge it, and
/// complete the probe's promise exactly once.
///
/// Lives on its channel's event loop only. The whole check shares one deadline with the connect
/// (set by `HealthProbe`), so a check never takes longer than the configured timeout. After the
/// result is known the handler closes the connection normally (FIN): backends see an ordinary
/// client hanging up rather than a reset in their logs.
final class HealthProbeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let send: [UInt8]
    private let expected: ExpectedReply
    private let deadline: NIODeadline
    private let timeout: Duration
    private let promise: EventLoopPromise<HealthCheckResult>

    private var context: ChannelHandlerContext?
    private var received: [UInt8] = []
    private var active = false
    private var finished = false
    private var timer: Scheduled<Void>?

    init(send: [UInt8], expected: ExpectedReply, deadline: NIODeadline, timeout: Duration,
         promise: EventLoopPromise<HealthCheckResult>) {
        self.send = send
        self.expected = expected
        self.deadline = deadline
        self.timeout = timeout
        self.promise = promise
    }

    private var expectsNothing: Bool {
        if case .nothing = expected { return true } else { return false }
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
                    if expectsNothing { finish(.passed) }
                case .failure(let error):
                    finish(.failed(.sendFailed(Self.describe(error))))
                }
            }
        } else if expectsNothing {
            finish(.passed)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return }
        let buffer = unwrapInboundIn(data)
        switch expected {
        case .nothing:
            return
        case .prefix(let expect):
            let wanted = expect.count - received.count
            received.append(contentsOf: buffer.readableBytesView.prefix(wanted))
            // Fail as soon as one byte differs instead of waiting for the rest of the reply.
            if !received.elementsEqual(expect.prefix(received.count)) || received.count == expect.count {
                finish(received == expect
                       ? .passed
                       : .failed(.unexpectedReply(received: received, expected: expect)))
            }
        case .httpStatus(let statuses):
            received.append(contentsOf: buffer.readableBytesView.prefix(HTTPHealthCheck.statusLineLimit - received.count))
            switch HTTPHealthCheck.verdict(received) {
            case .incomplete:
                return
            case .status(let code, let line):
                finish(statuses.contains(code) ? .passed : .failed(.httpStatus(code, line: line, wanted: statuses)))
            case .notHTTP:
                finish(.failed(.notHTTP(received: Array(received.prefix(40)))))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if active && !finished {
            switch expected {
            case .nothing:
                finish(.failed(.sendFailed("connection closed by the server")))
            case .prefix(let expect):
                finish(.failed(.closedBeforeReply(received: received.count, expected: expect.count)))
            case .httpStatus:
                finish(.failed(.closedBeforeStatus(received: received.count)))
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard active, !finished else { return }
        if expectsNothing {
            finish(.failed(.sendFailed(Self.describe(error))))
        } else {
            finish(.failed(.readFailed(Self.describe(error))))
        }
    }

    private func timedOut() {
        guard !finished else { return }
        if expectsNothing {
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
