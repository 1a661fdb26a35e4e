import Balancer
import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One address of an interface as rtnetlink reports it, with the flags `getifaddrs` leaves out.
public struct InterfaceAddress: Sendable, Equatable {
    public var address: IPAddress
    public var interfaceIndex: Int32
    /// `IFA_F_*` bits (the extended `IFA_FLAGS` attribute when present).
    public var flags: UInt32

    /// A privacy (temporary), deprecated, still tentative (duplicate address detection
    /// running) or DAD-failed address: one a long-lived source address should not be.
    public var isTransient: Bool {
        flags & UInt32(IFA_F_TEMPORARY | IFA_F_DEPRECATED | IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0
    }
}

/// Reads the host's addresses over rtnetlink (`RTM_GETADDR` dump), in the calling thread's
/// network namespace.
public enum AddressTable {
    /// Every address, optionally only those of `interfaceIndex`.
    public static func dump(interfaceIndex: Int32? = nil) throws(XSKError) -> [InterfaceAddress] {
        var entries: [InterfaceAddress] = []
        do {
            // ifaddrmsg: family, prefix length, flags, scope (1 byte each), index (4).
            try RouteNetlink.dump(RTM_GETADDR, family: UInt8(AF_UNSPEC), headerSize: 8, replyType: RTM_NEWADDR) { body in
                if let entry = parse(body) { entries.append(entry) }
            }
        } catch {
            throw .system(operation: "rtnetlink RTM_GETADDR \(error.step)", subject: "addresses", errno: error.errno)
        }
        if let interfaceIndex { return entries.filter { $0.interfaceIndex == interfaceIndex } }
        return entries
    }

    static func parse(_ body: UnsafeRawBufferPointer) -> InterfaceAddress? {
        let family = body[0]
        var flags = UInt32(body[2])
        let index = body.loadUnaligned(fromByteOffset: 4, as: Int32.self)
        var address: IPAddress?
        var local: IPAddress?
        RouteNetlink.attributes(body, from: 8) { type, payload in
            func ip() -> IPAddress? {
                if family == UInt8(AF_INET), payload.count == 4 { return .v4(payload.reduce(0) { $0 << 8 | UInt32($1) }) }
                if family == UInt8(AF_INET6), payload.count == 16 { return IPAddress(ipv6NetworkBytes: Array(payload)) }
                return nil
            }
            switch Int32(type) {
            case Int32(IFA_ADDRESS): address = ip()
            case Int32(IFA_LOCAL): local = ip()
            case Int32(IFA_FLAGS) where payload.count == 4: flags = payload.loadUnaligned(as: UInt32.self)
            default: break
            }
        }
        // On point-to-point links IFA_ADDRESS is the peer's; IFA_LOCAL is this host's.
        guard let own = local ?? address else { return nil }
        return InterfaceAddress(address: own, interfaceIndex: index, flags: flags)
    }
}
