import SystemPackage

/// The passthrough NAT port range and its safety against the host's own ephemeral ports.
///
/// When the NAT address is the host's own, a NAT port inside the kernel's
/// `ip_local_port_range` that is not in `ip_local_reserved_ports` could be chosen by the host
/// for its own connections (health checks first of all), and the balancer would steal their
/// replies. So such an overlap is refused, with the two ways out spelled in the message.
public enum NATPortRange {
    /// Parses `"61000-65535"`.
    public static func parse(_ text: String) -> ClosedRange<UInt16>? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { $0.trimmingSpaces() }
        guard parts.count == 2, let low = UInt16(parts[0]), let high = UInt16(parts[1]),
              low >= 1, low <= high else { return nil }
        return low...high
    }

    /// The kernel's view of local ports, read from `/proc/sys/net/ipv4`.
    public struct LocalPortFacts: Sendable, Equatable {
        /// `ip_local_port_range`.
        public var ephemeral: ClosedRange<UInt16>
        /// `ip_local_reserved_ports`, expanded.
        public var reserved: [ClosedRange<UInt16>]

        public init(ephemeral: ClosedRange<UInt16>, reserved: [ClosedRange<UInt16>] = []) {
            self.ephemeral = ephemeral
            self.reserved = reserved
        }

        /// Reads the current namespace's settings.
        public static func current() throws -> LocalPortFacts {
            let range = try ProcFile.read("/proc/sys/net/ipv4/ip_local_port_range")
            let numbers = range.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { UInt16($0) }
            guard numbers.count == 2, numbers[0] <= numbers[1] else { throw Errno.invalidArgument }
            let reservedText = (try? ProcFile.read("/proc/sys/net/ipv4/ip_local_reserved_ports")) ?? ""
            let reserved = reservedText.split(separator: ",").compactMap { item -> ClosedRange<UInt16>? in
                let t = item.trimmingSpaces()
                if let single = UInt16(t) { return single...single }
                return NATPortRange.parse(t)
            }
            return LocalPortFacts(ephemeral: numbers[0]...numbers[1], reserved: reserved)
        }

        /// The ports of `range` the kernel may hand to its own connections.
        public func unreservedOverlap(with range: ClosedRange<UInt16>) -> [ClosedRange<UInt16>] {
            guard range.overlaps(ephemeral) else { return [] }
            let low = max(range.lowerBound, ephemeral.lowerBound), high = min(range.upperBound, ephemeral.upperBound)
            var out: [ClosedRange<UInt16>] = []
            var start: UInt16? = nil
            var port = low
            while true {
                let reservedHere = reserved.contains { $0.contains(port) }
                if !reservedHere, start == nil { start = port }
                if reservedHere, let s = start { out.append(s...(port - 1)); start = nil }
                if port == high { break }
                port += 1
            }
            if let s = start { out.append(s...high) }
            return out
        }
    }

    /// The default range: the ports above the kernel's ephemeral range (nil when it ends at 65535).
    public static func defaultRange(_ facts: LocalPortFacts) -> ClosedRange<UInt16>? {
        guard facts.ephemeral.upperBound < 65_535 else { return nil }
        return (facts.ephemeral.upperBound + 1)...65_535
    }

    /// Why there is no default range (`defaultRange` returned nil), for `xdp.nat_ports` errors.
    public static let noDefaultRange = "the kernel's ephemeral ports reach 65535, so there is no free default NAT "
        + "range: set nat_ports and reserve it with sysctl net.ipv4.ip_local_reserved_ports"

    /// Why `range` cannot be used for NAT, or nil when it can.
    public static func conflict(of range: ClosedRange<UInt16>, with facts: LocalPortFacts) -> String? {
        let overlap = unreservedText(facts.unreservedOverlap(with: range))
        guard !overlap.isEmpty else { return nil }
        let lo = facts.ephemeral.lowerBound, hi = facts.ephemeral.upperBound
        return "NAT ports \(range.lowerBound)-\(range.upperBound) overlap the kernel's ephemeral ports " +
            "(net.ipv4.ip_local_port_range = \(lo) \(hi)) at \(overlap): the host's own connections could " +
            "take them and their replies would be stolen. Choose ports outside \(lo)-\(hi), or reserve them: " +
            "sysctl -w net.ipv4.ip_local_reserved_ports=\(range.lowerBound)-\(range.upperBound)"
    }

    private static func unreservedText(_ ranges: [ClosedRange<UInt16>]) -> String {
        ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
            .joined(separator: ",")
    }
}
