import Balancer

extension ProxyService {
    /// Proxy mode's part of `/stats` (under `"dataplane"`) and `/metrics`: per-loop open
    /// connections, accepts and pipe use. Pass `{ proxy.dataPlaneStats() }` as the stats
    /// service's `DataPlaneStatsSource`.
    public func dataPlaneStats() -> DataPlaneStats {
        let status = self.status()
        let loops: [JSONValue] = status.loops.map { loop in
            .object([
                ("loop", .int(Int64(loop.index))),
                ("open_connections", .int(Int64(loop.openConnections))),
                ("accepted_total", .int(Int64(loop.acceptedTotal))),
                ("accept_pauses", .int(Int64(loop.acceptPauses))),
                ("pipes_in_use", .int(Int64(loop.pipesInUse))),
                ("pipes_pooled", .int(Int64(loop.pipesPooled))),
                ("copy_fallbacks", .int(Int64(loop.copyFallbacks))),
                ("draining", .bool(loop.draining)),
            ])
        }
        let json = JSONValue.object([
            ("loops", .array(loops)),
            ("listening", .object(status.listening.sorted { $0.key < $1.key }.map { ($0.key, .string("\($0.value)")) })),
        ])
        var metrics: [MetricSample] = []
        for loop in status.loops {
            let labels = [("loop", "\(loop.index)")]
            metrics.append(MetricSample(name: "convey_proxy_loop_open_connections", help: "Connections open on a proxy event loop.",
                                        kind: .gauge, labels: labels, value: Double(loop.openConnections)))
            metrics.append(MetricSample(name: "convey_proxy_loop_accepted_total", help: "Clients accepted by a proxy event loop.",
                                        kind: .counter, labels: labels, value: Double(loop.acceptedTotal)))
            metrics.append(MetricSample(name: "convey_proxy_loop_accept_pauses_total",
                                        help: "Times a proxy event loop paused accepting: descriptors or memory ran out.",
                                        kind: .counter, labels: labels, value: Double(loop.acceptPauses)))
            metrics.append(MetricSample(name: "convey_proxy_loop_pipes_in_use", help: "Splice pipes attached to open connections.",
                                        kind: .gauge, labels: labels, value: Double(loop.pipesInUse)))
            metrics.append(MetricSample(name: "convey_proxy_loop_pipes_pooled", help: "Empty splice pipes kept for reuse.",
                                        kind: .gauge, labels: labels, value: Double(loop.pipesPooled)))
            metrics.append(MetricSample(name: "convey_proxy_loop_copy_fallbacks_total",
                                        help: "Connection directions moved with read/write because splice was refused.",
                                        kind: .counter, labels: labels, value: Double(loop.copyFallbacks)))
        }
        return DataPlaneStats(json: json, metrics: metrics)
    }
}
