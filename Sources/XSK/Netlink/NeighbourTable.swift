import Balancer
import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One entry of the kernel's neighbour (ARP / NDP) table.
public struct Neighbour: Sendable, Equatable {
    public var address: IPAddress
    public var mac: MACAddress
    public var interfaceIndex: Int32
    /// `NUD_*` state bits as the kernel reports them.
    public var state: UInt16

    /// Whether the entry holds a usable hardware address (reachable, stale, delay, probe,
    /// permanent or noarp); incomplete and failed entries do not.
    public var isUsable: Bool {
        state & UInt16(NUD_INCOMPLETE | NUD_FAILED) == 0 && !mac.isZero
    }
}

/// Reads the kernel's neighbour table over rtnetlink (`RTM_GETNEIGH` dump).
///
/// DSR and passthrough send frames to backends by MAC without the kernel's help, so the control
/// plane looks the MACs up here and publishes them in the forwarding snapshot. Health checks,
/// made through the host stack, keep these entries resolved and fresh. Runs in the calling
/// thread's network namespace.
public enum NeighbourTable {
    /// Why the table could not be read.
    public struct ReadError: Error, CustomStringConvertible {
        public var step: String
        public var errno: Errno
        public var description: String { "reading the neighbour table (rtnetlink, \(step)): \(errno)" }
    }

    /// Every neighbour entry, optionally only those on `interfaceIndex`.
    public static func dump(interfaceIndex: Int32? = nil) throws(ReadError) -> [Neighbour] {
        var entries: [Neighbour] = []
        do {
            // ndmsg (12 bytes), family unspecified: IPv4 and IPv6 both.
            try RouteNetlink.dump(RTM_GETNEIGH, family: UInt8(AF_UNSPEC), headerSize: 12, replyType: RTM_NEWNEIGH) { body in
                if let entry = parseNeighbour(body) { entries.append(entry) }
            }
        } catch {
            throw ReadError(step: error.step, errno: error.errno)
        }
        if let interfaceIndex { return entries.filter { $0.interfaceIndex == interfaceIndex } }
        return entries
    }

    /// Parses one datagram of a dump; returns true at `NLMSG_DONE` or an error message.
    static func parse(_ data: UnsafeRawBufferPointer, into entries: inout [Neighbour]) -> Bool {
        RouteNetlink.messages(data, replyType: RTM_NEWNEIGH, minimumBody: 12) { body in
            if let entry = parseNeighbour(body) { entries.append(entry) }
        }
    }

    private static func parseNeighbour(_ body: UnsafeRawBufferPointer) -> Neighbour? {
        let family = body[0]
        let ifindex = body.loadUnaligned(fromByteOffset: 4, as: Int32.self)
        let state = body.loadUnaligned(fromByteOffset: 8, as: UInt16.self)
        var address: IPAddress?
        var mac: MACAddress?
        RouteNetlink.attributes(body, from: 12) { type, payload in
            if type == UInt16(NDA_DST) {
                if family == UInt8(AF_INET), payload.count == 4 {
                    address = .v4(payload.reduce(0) { $0 << 8 | UInt32($1) })
                } else if family == UInt8(AF_INET6), payload.count == 16 {
                    address = IPAddress(ipv6NetworkBytes: Array(payload))
                }
            } else if type == UInt16(NDA_LLADDR), payload.count == 6 {
                mac = MACAddress(bytes: payload)
            }
        }
        guard let address else { return nil }
        return Neighbour(address: address, mac: mac ?? MACAddress(rawValue: 0), interfaceIndex: ifindex, state: state)
    }
}
