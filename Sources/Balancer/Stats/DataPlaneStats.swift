/// One Prometheus sample a data plane reports (per worker, per reason, per ring...).
public struct MetricSample: Sendable, Equatable {
    public enum Kind: Sendable { case counter, gauge }

    /// Full metric name, starting with `convey_`.
    public var name: String
    public var help: String
    public var kind: Kind
    public var labels: [(String, String)]
    public var value: Double

    public init(name: String, help: String, kind: Kind, labels: [(String, String)] = [], value: Double) {
        self.name = name
        self.help = help
        self.kind = kind
        self.labels = labels
        self.value = value
    }

    public static func == (a: MetricSample, b: MetricSample) -> Bool {
        a.name == b.name && a.value == b.value && a.labels.map { $0.0 + "=" + $0.1 } == b.labels.map { $0.0 + "=" + $0.1 }
    }
}

/// What a data plane (proxy loops, XSK workers) adds to `/stats`, `/metrics` and the page.
public struct DataPlaneStats: Sendable {
    /// Shown under `"dataplane"` in `/stats`.
    public var json: JSONValue
    /// Exported on `/metrics`.
    public var metrics: [MetricSample]
    /// Frontends the data plane serves from their backup servers for reasons of its own (the
    /// AF_XDP modes: no other server's MAC is known), shown as `on_backup`.
    public var frontendsOnBackup: Set<String>

    public init(json: JSONValue, metrics: [MetricSample], frontendsOnBackup: Set<String> = []) {
        self.json = json
        self.metrics = metrics
        self.frontendsOnBackup = frontendsOnBackup
    }
}

/// Something that can report data-plane statistics when asked (read side only; the data plane
/// keeps its own counters and this sums them).
public typealias DataPlaneStatsSource = @Sendable () -> DataPlaneStats
