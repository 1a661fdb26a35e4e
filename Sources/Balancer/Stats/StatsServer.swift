#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import SystemPackage

/// The stats HTTP server: `/stats` (JSON), `/metrics` (Prometheus text) and `/` (a page for
/// people), on `[stats] addr:port` (127.0.0.1:7000 by default). Built on Hummingbird; it reads
/// counters only, so a slow scraper can never stall a data path.
public struct StatsServer: Service {
    /// Produces the document to render, fresh for every request.
    public typealias DocumentProvider = @Sendable () -> StatsDocument
    /// Lists tracked flows (the AF_XDP modes) or proxied connections (proxy mode) for `/flows`;
    /// nil where there is no such list (`/flows` then answers 404).
    public typealias FlowsProvider = @Sendable (FlowQuery) async throws(FlowQueryError) -> JSONValue
    /// Applies an operator's command to a server (`POST /servers/POOL/NAME/ACTION`) and says
    /// what it did (`ServerCommandResult`); nil where the server takes no commands (`[stats] admin`).
    /// `sender`: the peer that sent it (`address:port`), for the log.
    public typealias ServerCommands = @Sendable (ServerID, ServerCommand, _ sender: String) throws(ServerCommandError) -> ServerCommandResult

    private let address: Endpoint
    private let provider: DocumentProvider
    private let flows: FlowsProvider?
    private let commands: ServerCommands?
    private let logger: Logger
    private let onListening: @Sendable (Int) async -> Void
    private let idleTimeout: Duration
    private let waitsForAddress: Bool

    /// - Parameters:
    ///   - address: where to listen; port 0 picks a free port (tests), reported to `onListening`.
    ///   - onListening: called with the bound port once the server accepts requests.
    ///   - idleTimeout: a connection with no request for this long is closed (a scraper's
    ///     kept-alive connection reconnects; a client that opens connections and sends nothing
    ///     cannot hold descriptors the proxy needs).
    ///   - waitsForAddress: an address in use is waited for (retried every 250 ms) instead of
    ///     failing: a takeover's stats come up once the convey it replaces has exited.
    public init(address: Endpoint, logger: Logger, idleTimeout: Duration = .seconds(60),
                onListening: @escaping @Sendable (Int) async -> Void = { _ in },
                flows: FlowsProvider? = nil, commands: ServerCommands? = nil, waitsForAddress: Bool = false,
                provider: @escaping DocumentProvider) {
        self.flows = flows
        self.commands = commands
        self.waitsForAddress = waitsForAddress
        self.idleTimeout = idleTimeout
        self.address = address
        self.provider = provider
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let exporter = PrometheusExporter()
        let provider = self.provider
        let router = Router(context: StatsRequestContext.self)
        let pages: [(path: String, type: String, body: @Sendable () -> String)] = [
            ("/stats", "application/json", { provider().json.serialized(pretty: true) + "\n" }),
            ("/metrics", "text/plain; version=0.0.4; charset=utf-8", { exporter.render(provider()) }),
            ("/", "text/html; charset=utf-8", { StatusPage.html }),
        ]
        var methods = Dictionary(uniqueKeysWithValues: pages.map { ($0.path, "GET, HEAD") })
        methods["/flows"] = "GET, HEAD"
        router.add(middleware: StatsFallbackMiddleware(pages: methods))
        for page in pages {
            router.get(RouterPath(page.path)) { _, _ -> Response in Self.response(page.body(), type: page.type) }
            // Monitoring probes often ask with HEAD: the GET's headers (its length too), no body.
            router.head(RouterPath(page.path)) { _, _ -> Response in Self.response(page.body(), type: page.type).createHeadResponse() }
        }
        let flows = self.flows
        @Sendable func listFlows(_ request: Request) async -> Response {
            do throws(FlowQueryError) {
                let parameters = request.uri.queryParameters.map { (key: String($0.key), value: String($0.value)) }
                let query = try FlowQuery(parameters: parameters)
                guard let flows else {
                    throw .unavailable("this data plane lists no connections")
                }
                return Self.response(try await flows(query).serialized(pretty: true) + "\n", type: "application/json")
            } catch {
                let status: HTTPResponse.Status
                switch error {
                case .bad: status = .badRequest
                case .unavailable: status = .notFound
                case .unanswered: status = .serviceUnavailable
                }
                let body = JSONValue.object([("error", .string(error.message))]).serialized(pretty: true) + "\n"
                return Self.response(body, type: "application/json", status: status)
            }
        }
        router.get("/flows") { request, _ -> Response in await listFlows(request) }
        // A monitoring probe's HEAD: the GET's status and headers, no body.
        router.head("/flows") { request, _ -> Response in await listFlows(request).createHeadResponse() }
        let commands = self.commands
        let address = self.address
        router.post("/servers/:pool/:server/:action") { request, context -> Response in
            // Names with spaces or other bytes come percent-encoded (curl's --data-urlencode
            // does not apply to paths: write %20).
            func name(_ key: String) -> String {
                let raw = context.parameters.get(key) ?? ""
                return raw.removingPercentEncoding ?? raw
            }
            let pool = name("pool"), name = name("server")
            let asked = context.parameters.get("action") ?? ""
            func answer(_ status: HTTPResponse.Status, _ fields: [(String, JSONValue)]) -> Response {
                Self.response(JSONValue.object(fields).serialized(pretty: true) + "\n", type: "application/json", status: status)
            }
            guard let commands else {
                return answer(.forbidden, [("error", .string("this stats server takes no commands: set admin = true in [stats] and restart (anyone who can reach \(address) may then drain servers)"))])
            }
            // A web page can make a browser send a POST here (the loopback address included,
            // or through a tunnel): browsers mark such requests, curl and scripts do not.
            let fetchSite = HTTPField.Name("Sec-Fetch-Site").flatMap { request.headers[$0] }
            if let origin = request.headers[.origin] ?? fetchSite.flatMap({ $0 == "none" ? nil : $0 }) {
                return answer(.forbidden, [("error", .string("commands are not taken from web pages (Origin or Sec-Fetch-Site: \(origin)): send them with curl or a script"))])
            }
            guard let command = ServerCommand(rawValue: asked) else {
                let known = ServerCommand.allCases.map(\.rawValue).joined(separator: ", ")
                return answer(.badRequest, [("error", .string("no command '\(asked)': use one of \(known)"))])
            }
            let id = ServerID(pool: pool, name: name)
            do throws(ServerCommandError) {
                let result = try commands(id, command, context.sender)
                var fields: [(String, JSONValue)] = [("server", .string("\(id)")), ("operator_drain", .bool(command == .drain)),
                                                     ("changed", .bool(result.changed))]
                if let warning = result.warning { fields.append(("warning", .string(warning))) }
                return answer(.ok, fields)
            } catch {
                return answer(.notFound, [("error", .string("\(error)"))])
            }
        }
        var waitingSince: ContinuousClock.Instant?
        var lastNotice = ContinuousClock.now
        while true {
            do {
                try await serve(router)
                return
            } catch let error as StatsServerError {
                guard waitsForAddress, case .cannotListen(_, _, let errno) = error, errno == Errno.addressInUse.rawValue else { throw error }
                if waitingSince == nil {
                    logger.notice("stats: \(address) is in use (the convey being replaced still holds it?): /stats comes up once it is free")
                    waitingSince = .now
                    lastNotice = .now
                } else if let since = waitingSince, ContinuousClock.now - lastNotice >= .seconds(30) {
                    let waited = (ContinuousClock.now - since).components.seconds
                    logger.warning("stats: \(address) is still in use after \(waited) s: no /stats or /metrics until it is free (stop the convey being replaced, or whatever holds the port)")
                    lastNotice = .now
                }
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(250)) }
                if Task.isCancelled || Task.isShuttingDownGracefully { return }
            }
        }
    }

    /// Runs the HTTP server on `address` until shutdown; `cannotListen` when it cannot bind.
    private func serve(_ router: Router<StatsRequestContext>) async throws {
        let onListening = self.onListening
        let logger = self.logger
        let host = address.address.description
        let app = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: TimeAmount(idleTimeout))),
            configuration: .init(address: .hostname(host, port: Int(address.port)), serverName: "convey"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                let urlHost = host.contains(":") ? "[\(host)]" : host
                logger.info("stats listening", metadata: ["url": "http://\(urlHost):\(port)/"])
                await onListening(port)
            },
            logger: logger
        )
        // Cancellation (SIGQUIT stops convey at once by cancelling its services) would reach
        // the server's accept loop, which logs it as an error; the server runs in a task of its
        // own instead, which a cancellation shuts down gracefully (a stats request is short).
        // Graceful shutdown still reaches it: the task inherits this one's task locals. A
        // client that never reads its responses would hold a graceful shutdown open forever:
        // after a second the server is cancelled after all.
        var serverConfiguration = ServiceGroupConfiguration(services: [app], logger: logger)
        serverConfiguration.maximumGracefulShutdownDuration = .seconds(1)
        let server = ServiceGroup(configuration: serverConfiguration)
        let running = Task { try await server.run() }
        do {
            try await withTaskCancellationHandler {
                try await running.value
            } onCancel: {
                Task { await server.triggerGracefulShutdown() }
            }
        } catch {
            // NIO's IOError text is "call(args): reason) (errno: N)": give the errno's own words.
            let errno = (error as? IOError)?.errnoCode
            let reason = errno.map { "\(Errno(rawValue: $0))" } ?? "\(error)"
            throw StatsServerError.cannotListen(address: address.description, reason: reason, errno: errno)
        }
    }

    private static func response(_ body: String, type: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: type, .cacheControl: "no-store"],
                 body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// What an operator's command did: whether it changed anything, and what the operator should
/// know about it (the state file could not keep it).
public struct ServerCommandResult: Sendable, Equatable {
    public var changed: Bool
    public var warning: String?

    public init(changed: Bool, warning: String? = nil) {
        self.changed = changed
        self.warning = warning
    }
}

/// An operator's command on one server, as `POST /servers/POOL/NAME/COMMAND` names it.
public enum ServerCommand: String, Sendable, CaseIterable {
    /// No new connections or flows; open ones go on (see `BalancerRuntime.setDrained`).
    case drain
    /// Ends the operator's drain: the server takes new connections again (if healthy and weighted).
    case ready
}

/// Why the stats server could not run.
public enum StatsServerError: Error, CustomStringConvertible {
    /// `errno`: the bind's error number, when it was one.
    case cannotListen(address: String, reason: String, errno: Int32?)

    public var description: String {
        switch self {
        case .cannotListen(let address, let reason, _):
            return "stats server cannot listen on \(address): \(reason) (set [stats] addr/port, or port = 0 to disable)"
        }
    }
}
