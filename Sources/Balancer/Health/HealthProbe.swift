import NIOCore
import NIOPosix
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Performs one health check of one server over SwiftNIO: a non-blocking TCP connect, then the
/// optional send/expect exchange or HTTP request carried out by `HealthProbeHandler`.
///
/// Every check runs on an event loop of the injected group, so thousands of checks in flight
/// cost sockets and timers, not threads, and a slow or silent server never delays another
/// server's check. Nothing here touches a data path.
struct HealthProbe: Sendable {
    /// The event loops checks run on.
    let group: any EventLoopGroup

    /// Checks `target` at `address` (its endpoint, converted once by the caller).
    ///
    /// The configured timeout bounds the whole check: connect, write and reply together.
    /// Returns nil when the calling task is cancelled before the check ends; the connection is
    /// then closed by its own deadline.
    func check(_ target: HealthTarget, at address: SocketAddress) async -> HealthCheckResult? {
        let loop = group.next()
        let promise = loop.makePromise(of: HealthCheckResult.self)
        let timeout = target.check.timeout
        let deadline = NIODeadline.now() + TimeAmount(timeout)
        let send: [UInt8]
        let expected: ExpectedReply
        if let http = target.check.http {
            send = target.proxyHeader.healthCheckHeader + http.request(checking: target.checkedAddress)
            expected = .httpStatus(http.statuses)
        } else {
            send = target.proxyHeader.healthCheckHeader + target.check.send
            expected = target.check.expect.isEmpty ? .nothing : .prefix(target.check.expect)
        }

        ClientBootstrap(group: loop)
            .connectTimeout(TimeAmount(timeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        HealthProbeHandler(send: send, expected: expected, deadline: deadline, timeout: timeout,
                                           promise: promise))
                }
            }
            .connect(to: address)
            .whenFailure { error in
                promise.succeed(.failed(Self.connectFailure(error, timeout: timeout)))
            }

        return await withTaskCancellationHandler {
            try? await promise.futureResult.get()
        } onCancel: {
            promise.fail(CancellationError())
        }
    }

    /// Classifies a failed connect for the operator.
    static func connectFailure(_ error: any Error, timeout: Duration) -> HealthCheckFailure {
        if case ChannelError.connectTimeout = error { return .connectTimeout(timeout) }
        guard let io = error as? IOError else { return .connectFailed("\(error)") }
        switch io.errnoCode {
        case ECONNREFUSED:
            return .connectRefused
        case EHOSTUNREACH, ENETUNREACH:
            return .unreachable(Errno(rawValue: io.errnoCode).description)
        case ETIMEDOUT:
            return .connectTimeout(timeout)
        case EMFILE, ENFILE, ENOBUFS, ENOMEM:
            // This host's shortage (e.g. proxy mode at its open-files limit), not the server's.
            return .notChecked(Errno(rawValue: io.errnoCode).description)
        default:
            return .connectFailed(Errno(rawValue: io.errnoCode).description)
        }
    }

    /// The NIO socket address of `endpoint`.
    static func socketAddress(of endpoint: Endpoint) throws(HealthCheckFailure) -> SocketAddress {
        do {
            return try SocketAddress(ipAddress: endpoint.address.description, port: Int(endpoint.port))
        } catch {
            throw .badAddress("\(endpoint): \(error)")
        }
    }
}

extension ProxyProtocolVersion {
    /// The header a health check opens with: no client is behind a check, so v1 says
    /// `PROXY UNKNOWN` and v2 uses its `LOCAL` command, which the specification reserves for
    /// a proxy's own connections such as health checks.
    var healthCheckHeader: [UInt8] {
        switch self {
        case .none: return []
        case .v1: return Array("PROXY UNKNOWN\r\n".utf8)
        case .v2:
            // Signature, version 2 + LOCAL, family UNSPEC, no address block.
            return [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00]
        }
    }
}
