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
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), NETLINK_ROUTE)
        guard fd >= 0 else { throw ReadError(step: "socket", errno: Errno(rawValue: errno)) }
        defer { close(fd) }

        // nlmsghdr (16 bytes) + ndmsg (12 bytes), family unspecified: IPv4 and IPv6 both.
        var request = [UInt8](repeating: 0, count: 28)
        request.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(28), toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: UInt16(RTM_GETNEIGH), toByteOffset: 4, as: UInt16.self)
            raw.storeBytes(of: UInt16(NLM_F_REQUEST | NLM_F_DUMP), toByteOffset: 6, as: UInt16.self)
            raw.storeBytes(of: UInt32(1), toByteOffset: 8, as: UInt32.self)  // sequence
            raw.storeBytes(of: UInt8(AF_UNSPEC), toByteOffset: 16, as: UInt8.self)
        }
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == request.count else { throw ReadError(step: "send", errno: Errno(rawValue: errno)) }

        var entries: [Neighbour] = []
        var buffer = [UInt8](repeating: 0, count: 32 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ReadError(step: "recv", errno: Errno(rawValue: errno))
            }
            let done = buffer.withUnsafeBytes { raw in
                parse(UnsafeRawBufferPointer(rebasing: raw[0..<n]), into: &entries)
            }
            if done { break }
        }
        if let interfaceIndex { return entries.filter { $0.interfaceIndex == interfaceIndex } }
        return entries
    }

    /// Parses one datagram of a dump; returns true at `NLMSG_DONE` or an error message.
    static func parse(_ data: UnsafeRawBufferPointer, into entries: inout [Neighbour]) -> Bool {
        var offset = 0
        while offset + 16 <= data.count {
            let length = Int(data.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            let type = data.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self)
            guard length >= 16, offset + length <= data.count else { return true }
            if type == UInt16(NLMSG_DONE) || type == UInt16(NLMSG_ERROR) { return true }
            if type == UInt16(RTM_NEWNEIGH), length >= 28 {
                let body = UnsafeRawBufferPointer(rebasing: data[(offset + 16)..<(offset + length)])
                if let entry = parseNeighbour(body) { entries.append(entry) }
            }
            offset += align4(length)
        }
        return false
    }

    private static func parseNeighbour(_ body: UnsafeRawBufferPointer) -> Neighbour? {
        let family = body[0]
        let ifindex = body.loadUnaligned(fromByteOffset: 4, as: Int32.self)
        let state = body.loadUnaligned(fromByteOffset: 8, as: UInt16.self)
        var address: IPAddress?
        var mac: MACAddress?
        var offset = 12
        while offset + 4 <= body.count {
            let length = Int(body.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            let type = body.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self)
            guard length >= 4, offset + length <= body.count else { break }
            let payload = UnsafeRawBufferPointer(rebasing: body[(offset + 4)..<(offset + length)])
            if type == UInt16(NDA_DST) {
                if family == UInt8(AF_INET), payload.count == 4 {
                    address = .v4(payload.reduce(0) { $0 << 8 | UInt32($1) })
                } else if family == UInt8(AF_INET6), payload.count == 16 {
                    address = IPAddress(ipv6NetworkBytes: Array(payload))
                }
            } else if type == UInt16(NDA_LLADDR), payload.count == 6 {
                mac = MACAddress(bytes: payload)
            }
            offset += align4(length)
        }
        guard let address else { return nil }
        return Neighbour(address: address, mac: mac ?? MACAddress(rawValue: 0), interfaceIndex: ifindex, state: state)
    }

    private static func align4(_ n: Int) -> Int { (n + 3) & ~3 }
}
