import Balancer
import Logging
import Synchronization

/// Records every up/down transition the checker reports, in order.
final class TransitionRecorder: Sendable {
    private let events = Mutex<[(server: ServerID, status: HealthStatus)]>([])

    /// The `onChange` callback to hand to the checker.
    var handler: HealthChecker.ChangeHandler {
        { server, status in self.events.withLock { $0.append((server, status)) } }
    }

    /// Every transition so far.
    var all: [(server: ServerID, status: HealthStatus)] { events.withLock { $0 } }

    /// The transitions of `server`, in order.
    func of(_ server: ServerID) -> [HealthStatus] { all.filter { $0.server == server }.map(\.status) }
}

/// A log handler that keeps every line, so tests can read what an operator would see.
struct CapturingLogHandler: LogHandler {
    final class Lines: Sendable {
        private let lines = Mutex<[(level: Logger.Level, message: String)]>([])
        func append(_ level: Logger.Level, _ message: String) { lines.withLock { $0.append((level, message)) } }
        var all: [(level: Logger.Level, message: String)] { lines.withLock { $0 } }
    }

    let lines: Lines
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) { lines.append(event.level, event.message.description) }

    /// A logger writing into a fresh set of lines.
    static func logger() -> (Logger, Lines) {
        let lines = Lines()
        return (Logger(label: "convey.health.test") { _ in CapturingLogHandler(lines: lines) }, lines)
    }
}

/// Waits until `condition` holds, polling every 10 ms, for at most `limit`; returns whether it
/// held. The limit is a generous safety net, not a performance assertion.
func eventually(within limit: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + limit
    while clock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// Runs `checker` for the duration of `body`, then cancels it and waits for it to stop.
func whileRunning<T: Sendable>(_ checker: HealthChecker,
                               _ body: () async throws -> T) async throws -> T {
    let running = Task { try await checker.run() }
    do {
        let result = try await body()
        running.cancel()
        try await running.value
        return result
    } catch {
        running.cancel()
        _ = try? await running.value
        throw error
    }
}

extension Endpoint {
    /// 127.0.0.1:`port`.
    static func loopback(_ port: Int) -> Endpoint { Endpoint(address: .v4(0x7F00_0001), port: UInt16(port)) }
}
