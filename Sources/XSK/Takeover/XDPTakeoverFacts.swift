import Balancer

/// What a running AF_XDP convey tells one that wants to take its interface over, so the
/// newcomer can refuse before anything changes: the two must run the same mode on the same
/// queues, and in passthrough share the NAT addresses and ports (a carried flow keeps its
/// NAT port, and each worker owns a slice of the range).
public struct XDPTakeoverFacts: Sendable, Equatable {
    public var pid: Int32
    public var mode: XDPForwardingMode
    public var attachMode: NetworkInterface.AttachMode
    public var workers: Int
    public var natAddresses: [IPAddress]
    public var natPorts: ClosedRange<UInt16>?
    /// It hands its sockets and claim over before pausing (`sockets?`), so the newcomer can
    /// swap its program in while the running workers still forward (conveys before
    /// 2026-12-08 send them only once paused).
    public var handsSocketsFirst: Bool
    /// Asked (`pause counters`), it hands its frontends' and servers' counters over with the
    /// workers (`CarriedCounters`), so the newcomer's totals go on from them (conveys before
    /// 2026-12-08 hand none: the newcomer's counts start afresh).
    public var handsCounters: Bool

    /// The message: `facts key=value ...`.
    var message: String {
        var fields = ["pid=\(pid)", "mode=\(mode.rawValue)", "attach=\(attachMode.rawValue)", "workers=\(workers)"]
        if !natAddresses.isEmpty { fields.append("nat=" + natAddresses.map(\.description).joined(separator: ",")) }
        if let natPorts { fields.append("ports=\(natPorts.lowerBound)-\(natPorts.upperBound)") }
        if handsSocketsFirst { fields.append("sockets-first=1") }
        if handsCounters { fields.append("counters=1") }
        return "facts " + fields.joined(separator: " ")
    }

    init(pid: Int32, mode: XDPForwardingMode, attachMode: NetworkInterface.AttachMode, workers: Int,
         natAddresses: [IPAddress], natPorts: ClosedRange<UInt16>?, handsSocketsFirst: Bool = true, handsCounters: Bool = true) {
        self.pid = pid
        self.mode = mode
        self.attachMode = attachMode
        self.workers = workers
        self.natAddresses = natAddresses
        self.natPorts = natPorts
        self.handsSocketsFirst = handsSocketsFirst
        self.handsCounters = handsCounters
    }

    /// Reads `message`; nil when it is not one.
    init?(message: String) {
        guard message.hasPrefix("facts ") else { return nil }
        var fields: [String: String] = [:]
        for field in message.dropFirst(6).split(separator: " ") {
            let parts = field.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { return nil }
            fields[String(parts[0])] = String(parts[1])
        }
        guard let pid = fields["pid"].flatMap({ Int32($0) }), let mode = fields["mode"].flatMap(XDPForwardingMode.init),
              let attach = fields["attach"].flatMap(NetworkInterface.AttachMode.init),
              let workers = fields["workers"].flatMap({ Int($0) }) else { return nil }
        var addresses: [IPAddress] = []
        for text in fields["nat"]?.split(separator: ",") ?? [] {
            guard let address = IPAddress(String(text)) else { return nil }
            addresses.append(address)
        }
        var ports: ClosedRange<UInt16>?
        if let text = fields["ports"] {
            let bounds = text.split(separator: "-").compactMap { UInt16($0) }
            guard bounds.count == 2, bounds[0] <= bounds[1] else { return nil }
            ports = bounds[0]...bounds[1]
        }
        self.init(pid: pid, mode: mode, attachMode: attach, workers: workers, natAddresses: addresses, natPorts: ports,
                  handsSocketsFirst: fields["sockets-first"] == "1", handsCounters: fields["counters"] == "1")
    }

    /// Why a convey running `mode` with `workers` workers and (passthrough) `natAddresses`
    /// and `natPorts` cannot take this one's place; nil when it can.
    func mismatch(mode: XDPForwardingMode, workers: Int, natAddresses: [IPAddress],
                  natPorts: ClosedRange<UInt16>?) -> String? {
        if mode != self.mode {
            return "the running convey (pid \(pid)) runs the \(self.mode.rawValue) mode and this one \(mode.rawValue): "
                + "a takeover keeps the mode (stop it and start this one instead)"
        }
        if workers != self.workers {
            return "the running convey (pid \(pid)) has \(self.workers) worker(s) and this one would have \(workers): a "
                + "takeover keeps each queue's socket and flows, so [passthrough] workers must give the same count"
        }
        if mode == .passthrough && (Set(natAddresses) != Set(self.natAddresses) || natPorts != self.natPorts) {
            func describe(_ a: [IPAddress], _ p: ClosedRange<UInt16>?) -> String {
                a.map(\.description).joined(separator: ", ") + (p.map { " ports \($0.lowerBound)-\($0.upperBound)" } ?? "")
            }
            return "the running convey (pid \(pid)) translates to \(describe(self.natAddresses, self.natPorts)) and this "
                + "one would use \(describe(natAddresses, natPorts)): carried flows keep their NAT address and port, so "
                + "[xdp] nat_addr and nat_ports must resolve alike"
        }
        return nil
    }
}
