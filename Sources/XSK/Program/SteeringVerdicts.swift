import CXDP

/// The steering program's verdict counters, summed over CPUs (`steer_verdicts` map).
public struct SteeringVerdicts: Sendable, Equatable {
    /// Not IPv4/IPv6 (ARP and the like): passed.
    public var passedNotIP: UInt64 = 0
    /// IP but not to a VIP or the NAT range, or neither TCP nor UDP: passed.
    public var passedNotSteered: UInt64 = 0
    /// VLAN-tagged: passed untouched.
    public var passedVLAN: UInt64 = 0
    /// IPv4 fragments: passed.
    public var passedFragment: UInt64 = 0
    /// IPv6 with an extension header: passed.
    public var passedExtensionHeader: UInt64 = 0
    /// Steered, but no socket on the queue: passed (the redirect's fallback).
    public var passedNoSocket: UInt64 = 0
    /// Redirected because the destination is a VIP.
    public var redirectedVIP: UInt64 = 0
    /// Redirected because it is a backend reply to the NAT range.
    public var redirectedNAT: UInt64 = 0
    /// Truncated or invalid headers: passed.
    public var malformed: UInt64 = 0
    /// DSR: redirected ICMP "fragmentation needed" / ICMPv6 "packet too big" about a segment
    /// a VIP sent, for the worker to pass to the backend that holds the connection.
    public var redirectedICMP: UInt64 = 0

    public init() {}

    /// Builds the value from the counters indexed by `enum steer_verdict`.
    init(counters: [UInt64]) {
        func at(_ verdict: steer_verdict) -> UInt64 {
            let i = Int(verdict.rawValue)
            return i < counters.count ? counters[i] : 0
        }
        passedNotIP = at(STEER_PASS_NOT_IP)
        passedNotSteered = at(STEER_PASS_NOT_STEERED)
        passedVLAN = at(STEER_PASS_VLAN)
        passedFragment = at(STEER_PASS_FRAGMENT)
        passedExtensionHeader = at(STEER_PASS_EXT_HEADER)
        passedNoSocket = at(STEER_PASS_NO_SOCKET)
        redirectedVIP = at(STEER_REDIRECT_VIP)
        redirectedNAT = at(STEER_REDIRECT_NAT)
        malformed = at(STEER_MALFORMED)
        redirectedICMP = at(STEER_REDIRECT_ICMP)
    }

    /// Frames the program has seen.
    public var total: UInt64 {
        passedNotIP + passedNotSteered + passedVLAN + passedFragment + passedExtensionHeader
            + passedNoSocket + redirectedVIP + redirectedNAT + malformed + redirectedICMP
    }

    /// Frames passed to the kernel for any reason.
    public var passed: UInt64 { total - redirectedVIP - redirectedNAT - redirectedICMP }
}
