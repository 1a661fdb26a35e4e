import Logging
import Synchronization

/// The lines a `Logger` made with `logger()` received, for tests that read what an operator
/// would see.
final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] { lines.withLock { $0 } }

    /// A logger at `info` whose lines end up here.
    func logger() -> Logger {
        Logger(label: "proxy-test") { _ in Handler(sink: self) }
    }

    private struct Handler: LogHandler {
        let sink: LogLines
        var logLevel: Logger.Level = .info
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let text = event.message.description
            sink.lines.withLock { $0.append(text) }
        }
    }
}
