import Prometheus
import Synchronization

/// Renders a `StatsDocument` as Prometheus text exposition (`/metrics`), names prefixed `convey_`.
///
/// Convey's counters live in its own atomics (cheap for data paths); at scrape time they are
/// copied into swift-prometheus metrics, which own the exposition format. Scrapes are
/// serialised so a reset-then-set of a counter is never seen half done.
public final class PrometheusExporter: Sendable {
    private let registry = PrometheusCollectorRegistry()
    /// The series written by the previous scrape, so those that disappeared (a server removed
    /// by a reload, a worker gone) are unregistered instead of reported frozen forever.
    private let lastSeries = Mutex<[SeriesKey: Series]>([:])

    private struct SeriesKey: Hashable {
        var name: String
        var labels: [String]
    }

    private enum Series: @unchecked Sendable {
        case counter(Counter)
        case gauge(Gauge)
    }

    public init() {}

    /// The exposition text for `document`.
    public func render(_ document: StatsDocument) -> String {
        lastSeries.withLock { last in
            var current: [SeriesKey: Series] = [:]
            for sample in Self.samples(document) {
                let key = SeriesKey(name: sample.name, labels: sample.labels.map { $0.0 + "=" + $0.1 })
                current[key] = record(sample)
            }
            for (key, series) in last where current[key] == nil {
                switch series {
                case .counter(let c): registry.unregisterCounter(c)
                case .gauge(let g): registry.unregisterGauge(g)
                }
            }
            last = current
            return registry.emitToString()
        }
    }

    private func record(_ s: MetricSample) -> Series {
        // The sample carries its full name; the descriptor's unit part stays empty.
        let descriptor = MetricNameDescriptor(metricName: s.name, unitName: "", helpText: s.help)
        switch s.kind {
        case .counter:
            let counter = registry.makeCounter(descriptor: descriptor, labels: s.labels)
            counter.reset()
            counter.increment(by: s.value)
            return .counter(counter)
        case .gauge:
            let gauge = registry.makeGauge(descriptor: descriptor, labels: s.labels)
            gauge.set(s.value)
            return .gauge(gauge)
        }
    }

    /// Every sample of the document, data plane included.
    static func samples(_ d: StatsDocument) -> [MetricSample] {
        var out: [MetricSample] = [
            MetricSample(name: "convey_uptime_seconds", help: "Seconds since convey started.", kind: .gauge,
                         labels: [("mode", d.mode.rawValue), ("version", d.version)], value: d.uptimeSeconds),
        ]
        for f in d.frontends {
            let l = [("frontend", f.name)]
            out += [
                MetricSample(name: "convey_frontend_connections_total", help: "Client connections accepted.",
                             kind: .counter, labels: l, value: Double(f.totals.totalConnections)),
                MetricSample(name: "convey_frontend_open_connections", help: "Client connections open now.",
                             kind: .gauge, labels: l, value: Double(f.totals.currentConnections)),
                MetricSample(name: "convey_frontend_bytes_tx_total", help: "Bytes forwarded client to server.",
                             kind: .counter, labels: l, value: Double(f.totals.bytesTx)),
                MetricSample(name: "convey_frontend_bytes_rx_total", help: "Bytes forwarded server to client.",
                             kind: .counter, labels: l, value: Double(f.totals.bytesRx)),
                MetricSample(name: "convey_frontend_no_backend_total",
                             help: "Clients closed because no server could take them.",
                             kind: .counter, labels: l, value: Double(f.noBackend)),
                MetricSample(name: "convey_frontend_denied_total",
                             help: "Connection attempts refused by the frontend's allow/deny lists (the AF_XDP modes count each SYN, retransmissions too).",
                             kind: .counter, labels: l, value: Double(f.denied)),
                MetricSample(name: "convey_frontend_on_backup",
                             help: "1 while no non-backup server can take new connections and backup servers take them.",
                             kind: .gauge, labels: l, value: f.onBackup ? 1 : 0),
                MetricSample(name: "convey_frontend_over_limit_total",
                             help: "Times clients found the frontend at max_connections and waited: in the listen queue, once per episode until it emptied (proxy mode); each SYN dropped (AF_XDP modes).",
                             kind: .counter, labels: l, value: Double(f.overLimit)),
                MetricSample(name: "convey_frontend_queued",
                             help: "Clients waiting now for a place at a server with max_connections, or being tried from the queue (proxy mode).",
                             kind: .gauge, labels: l, value: Double(f.queued)),
                MetricSample(name: "convey_frontend_queue_timeouts_total",
                             help: "Clients closed after waiting queue_timeout for a place at a server with max_connections.",
                             kind: .counter, labels: l, value: Double(f.queueTimeouts)),
                MetricSample(name: "convey_frontend_queue_full_total",
                             help: "Clients closed at once because max_queue clients were waiting for a place already (proxy mode).",
                             kind: .counter, labels: l, value: Double(f.queueFull)),
                MetricSample(name: "convey_frontend_bad_proxy_header_total",
                             help: "Clients closed because the PROXY header accept_proxy_protocol asks for did not read or did not come in time (proxy mode).",
                             kind: .counter, labels: l, value: Double(f.badProxyHeader)),
                MetricSample(name: "convey_frontend_servers_full_total",
                             help: "New connections (SYNs) dropped because every server that could take them was at max_connections (AF_XDP modes; the client retries its SYN).",
                             kind: .counter, labels: l, value: Double(f.serversFull)),
            ]
        }
        for pool in d.pools {
            for s in pool.servers {
                let l = [("pool", pool.name), ("server", s.name), ("addr", s.address.description)]
                out += [
                    MetricSample(name: "convey_server_up", help: "1 when the server takes new connections.",
                                 kind: .gauge, labels: l, value: s.state == .up ? 1 : 0),
                    MetricSample(name: "convey_server_healthy", help: "1 when the server passes its health checks.",
                                 kind: .gauge, labels: l, value: s.healthy ? 1 : 0),
                    MetricSample(name: "convey_server_weight", help: "Configured weight.",
                                 kind: .gauge, labels: l, value: Double(s.weight)),
                    MetricSample(name: "convey_server_slow_start_percent",
                                 help: "How far a slow_start ramp has brought the server toward its weight's share (100: no ramp runs).",
                                 kind: .gauge, labels: l, value: Double(s.slowStartPercent)),
                    MetricSample(name: "convey_server_operator_drain",
                                 help: "1 while the operator has drained the server at runtime (POST /servers/POOL/NAME/drain).",
                                 kind: .gauge, labels: l, value: s.operatorDrain ? 1 : 0),
                    MetricSample(name: "convey_server_backup", help: "1 for a backup server (used only while no other can take connections).",
                                 kind: .gauge, labels: l, value: s.backup ? 1 : 0),
                    MetricSample(name: "convey_server_max_connections",
                                 help: "The server's max_connections (0: no limit).",
                                 kind: .gauge, labels: l, value: Double(s.maxConnections)),
                    MetricSample(name: "convey_server_connections_total", help: "Connections to the server.",
                                 kind: .counter, labels: l, value: Double(s.totals.totalConnections)),
                    MetricSample(name: "convey_server_open_connections", help: "Connections to the server open now.",
                                 kind: .gauge, labels: l, value: Double(s.totals.currentConnections)),
                    MetricSample(name: "convey_server_bytes_tx_total", help: "Bytes forwarded client to server.",
                                 kind: .counter, labels: l, value: Double(s.totals.bytesTx)),
                    MetricSample(name: "convey_server_bytes_rx_total", help: "Bytes forwarded server to client.",
                                 kind: .counter, labels: l, value: Double(s.totals.bytesRx)),
                    MetricSample(name: "convey_server_connect_failures_total", help: "Failed connection attempts.",
                                 kind: .counter, labels: l, value: Double(s.totals.connectFailures)),
                ]
            }
        }
        out += d.dataPlane?.metrics ?? []
        return out
    }
}
