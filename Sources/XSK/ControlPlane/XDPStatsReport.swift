import Balancer

/// The AF_XDP data plane's part of `/stats` (under `dataplane`) and `/metrics`: per-worker
/// packets and drops by reason, flows, XSK ring statistics, the steering program's verdicts,
/// the attach and copy modes in use, and the servers the data plane cannot select.
struct XDPStatsReport {
    var mode: XDPForwardingMode
    var facts: XDPDataPlaneFacts
    var path: XSKDataPathStats
    /// One per worker, in worker order.
    var forwarders: [ForwarderStats]
    var unresolved: [PacketRoutes.Unresolved]
    var neighbourError: String?
    /// Frontends served by backups while no other server's MAC is known.
    var onBackupForMAC: Set<String> = []

    var dataPlaneStats: DataPlaneStats { DataPlaneStats(json: json, metrics: metrics, frontendsOnBackup: onBackupForMAC) }

    private var totals: ForwarderStats { forwarders.reduce(ForwarderStats(), +) }

    var json: JSONValue {
        var fields: [(String, JSONValue)] = [
            ("kind", .string("af_xdp")),
            ("interface", .string(facts.interface)),
            ("attach_mode", .string(path.attachMode.rawValue)),
            ("zero_copy", .bool(path.zeroCopy)),
            ("vips", .array(facts.vips.map { .string($0.description) })),
        ]
        if !facts.natAddresses.isEmpty, let ports = facts.natPorts {
            fields.append(("nat", .object([("addresses", .array(facts.natAddresses.map { .string($0.description) })),
                                           ("ports", .string("\(ports.lowerBound)-\(ports.upperBound)"))])))
        }
        fields.append(("totals", Self.forwarderJSON(totals)))
        fields.append(("unresolved_servers", .array(unresolved.map {
            .object([("server", .string($0.server.description)), ("addr", .string($0.address.description)),
                     ("reason", .string($0.reason))])
        })))
        if let neighbourError { fields.append(("neighbour_table_error", .string(neighbourError))) }
        fields.append(("workers", .array(path.workers.enumerated().map { i, w in
            var worker: [(String, JSONValue)] = [
                ("index", .int(Int64(w.index))), ("queue", .int(Int64(w.queue))),
                ("cpu", w.cpu.map { .int(Int64($0)) } ?? .null),
                ("copy_mode", .string(w.mode.rawValue)),
                ("rx_packets", .int(Int64(clamping: w.counters.rxPackets))),
                ("rx_bytes", .int(Int64(clamping: w.counters.rxBytes))),
                ("tx_packets", .int(Int64(clamping: w.counters.txPackets))),
                ("dropped", .int(Int64(clamping: w.counters.drops))),
                ("tx_ring_full", .int(Int64(clamping: w.counters.txRingFullDrops))),
                ("batches", .int(Int64(clamping: w.counters.batches))),
                ("wakeups", .int(Int64(clamping: w.counters.wakeups))),
            ]
            if i < forwarders.count { worker.append(("forwarder", Self.forwarderJSON(forwarders[i]))) }
            worker.append(("ring", w.ring.map(Self.ringJSON) ?? .null))
            return .object(worker)
        })))
        if let v = path.verdicts {
            fields.append(("steering", .object([
                ("redirected_vip", .int(Int64(clamping: v.redirectedVIP))),
                ("redirected_nat", .int(Int64(clamping: v.redirectedNAT))),
                ("redirected_icmp", .int(Int64(clamping: v.redirectedICMP))),
                ("passed_not_ip", .int(Int64(clamping: v.passedNotIP))),
                ("passed_not_steered", .int(Int64(clamping: v.passedNotSteered))),
                ("passed_vlan", .int(Int64(clamping: v.passedVLAN))),
                ("passed_fragment", .int(Int64(clamping: v.passedFragment))),
                ("passed_extension_header", .int(Int64(clamping: v.passedExtensionHeader))),
                ("passed_no_socket", .int(Int64(clamping: v.passedNoSocket))),
                ("malformed", .int(Int64(clamping: v.malformed))),
            ])))
        }
        return .object(fields)
    }

    static func forwarderJSON(_ f: ForwarderStats) -> JSONValue {
        .object([
            ("rx_packets", .int(Int64(clamping: f.rxPackets))), ("rx_bytes", .int(Int64(clamping: f.rxBytes))),
            ("tx_packets", .int(Int64(clamping: f.txPackets))), ("tx_bytes", .int(Int64(clamping: f.txBytes))),
            ("flows_active", .int(Int64(clamping: f.flowsActive))),
            ("flows_created", .int(Int64(clamping: f.flowsCreated))),
            ("flows_ended", .int(Int64(clamping: f.flowsEnded))),
            ("flows_closing", .int(Int64(clamping: f.flowsClosing))),
            ("flows_adopted", .int(Int64(clamping: f.flowsAdopted))),
            ("resets_sent", .int(Int64(clamping: f.resetsSent))),
            ("icmp_forwarded", .int(Int64(clamping: f.icmpForwarded))),
            ("closes_out_of_window", .int(Int64(clamping: f.closesOutOfWindow))),
            ("flows_expired", .int(Int64(clamping: f.flowsExpired))),
            ("flows_evicted", .int(Int64(clamping: f.flowsEvicted))),
            ("drops", .object(DropReason.allCases.map { ($0.description, .int(Int64(clamping: f.drops($0)))) })),
        ])
    }

    static func ringJSON(_ r: XSKRingStatistics) -> JSONValue {
        .object([
            ("rx_dropped", .int(Int64(clamping: r.rxDropped))),
            ("rx_invalid_descs", .int(Int64(clamping: r.rxInvalidDescriptors))),
            ("tx_invalid_descs", .int(Int64(clamping: r.txInvalidDescriptors))),
            ("rx_ring_full", .int(Int64(clamping: r.rxRingFull))),
            ("rx_fill_ring_empty_descs", .int(Int64(clamping: r.rxFillRingEmptyDescriptors))),
            ("tx_ring_empty_descs", .int(Int64(clamping: r.txRingEmptyDescriptors))),
        ])
    }

    var metrics: [MetricSample] {
        var out: [MetricSample] = [
            MetricSample(name: "convey_xdp_zero_copy", help: "1 when every AF_XDP socket runs zero-copy.",
                         kind: .gauge, labels: [("iface", facts.interface)], value: path.zeroCopy ? 1 : 0),
            MetricSample(name: "convey_xdp_unresolved_servers", help: "Servers left out of selection (no known MAC).",
                         kind: .gauge, value: Double(unresolved.count)),
        ]
        for (i, f) in forwarders.enumerated() {
            let l = [("worker", String(i))]
            out += [
                MetricSample(name: "convey_xdp_rx_packets_total", help: "Frames the worker received.",
                             kind: .counter, labels: l, value: Double(f.rxPackets)),
                MetricSample(name: "convey_xdp_rx_bytes_total", help: "Bytes the worker received.",
                             kind: .counter, labels: l, value: Double(f.rxBytes)),
                MetricSample(name: "convey_xdp_tx_packets_total", help: "Frames the worker forwarded.",
                             kind: .counter, labels: l, value: Double(f.txPackets)),
                MetricSample(name: "convey_xdp_tx_bytes_total", help: "Bytes the worker forwarded.",
                             kind: .counter, labels: l, value: Double(f.txBytes)),
                MetricSample(name: "convey_xdp_flows", help: "Flows in the worker's table.",
                             kind: .gauge, labels: l, value: Double(f.flowsActive)),
                MetricSample(name: "convey_xdp_flows_closing", help: "Flows in the worker's table that are closing (FIN or RST seen).",
                             kind: .gauge, labels: l, value: Double(f.flowsClosing)),
                MetricSample(name: "convey_xdp_flows_created_total", help: "Flows the worker started tracking (SYNs placed).",
                             kind: .counter, labels: l, value: Double(f.flowsCreated)),
                MetricSample(name: "convey_xdp_flows_ended_total",
                             help: "Flows ended: closed, or their server or frontend went away.",
                             kind: .counter, labels: l, value: Double(f.flowsEnded)),
                MetricSample(name: "convey_xdp_flows_expired_total", help: "Flows that stayed idle past their state's timeout.",
                             kind: .counter, labels: l, value: Double(f.flowsExpired)),
                MetricSample(name: "convey_xdp_flows_evicted_total", help: "Flows evicted because the table was full.",
                             kind: .counter, labels: l, value: Double(f.flowsEvicted)),
                MetricSample(name: "convey_xdp_flows_adopted_total",
                             help: "DSR flows taken up mid-connection by hashing (after a restart, an ECMP change, an eviction).",
                             kind: .counter, labels: l, value: Double(f.flowsAdopted)),
                MetricSample(name: "convey_xdp_resets_sent_total",
                             help: "Segments of a connection no longer carried (drain over, restart) answered with a reset.",
                             kind: .counter, labels: l, value: Double(f.resetsSent)),
                MetricSample(name: "convey_xdp_icmp_forwarded_total",
                             help: "DSR: ICMP too-big messages about a VIP's segment passed to the connection's backend.",
                             kind: .counter, labels: l, value: Double(f.icmpForwarded)),
                MetricSample(name: "convey_xdp_closes_out_of_window_total",
                             help: "RST or FIN segments outside their client's sequence window: forwarded, the flow left open.",
                             kind: .counter, labels: l, value: Double(f.closesOutOfWindow)),
            ]
            for reason in DropReason.allCases {
                out.append(MetricSample(name: "convey_xdp_drops_total", help: "Frames dropped, by reason.",
                                        kind: .counter, labels: l + [("reason", reason.description)],
                                        value: Double(f.drops(reason))))
            }
        }
        for w in path.workers {
            guard let r = w.ring else { continue }
            let l = [("worker", String(w.index)), ("queue", String(w.queue))]
            out += [
                MetricSample(name: "convey_xsk_rx_dropped_total", help: "Frames the kernel dropped for the socket.",
                             kind: .counter, labels: l, value: Double(r.rxDropped)),
                MetricSample(name: "convey_xsk_rx_ring_full_total", help: "Frames dropped because the RX ring was full.",
                             kind: .counter, labels: l, value: Double(r.rxRingFull)),
                MetricSample(name: "convey_xsk_fill_ring_empty_total", help: "Times the FILL ring was empty.",
                             kind: .counter, labels: l, value: Double(r.rxFillRingEmptyDescriptors)),
                MetricSample(name: "convey_xsk_tx_invalid_descs_total", help: "Invalid TX descriptors.",
                             kind: .counter, labels: l, value: Double(r.txInvalidDescriptors)),
            ]
        }
        return out
    }
}
