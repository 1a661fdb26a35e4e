import CLinux
import CXDP
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Reads the host's links over rtnetlink (`RTM_GETLINK` dump), in the calling thread's network
/// namespace: which VLAN devices are stacked on an interface. (sysfs's `upper_*` links would
/// say it too, but sysfs follows the namespace it was mounted in, not the calling thread's.)
public enum LinkTable {
    /// One link: its index, name, the index of the link it is stacked on (`IFLA_LINK`, for
    /// VLAN devices their parent) and its kind (`IFLA_INFO_KIND`: "vlan", "veth", ...).
    public struct Link: Sendable, Equatable {
        public var index: Int32
        public var name: String
        public var parentIndex: Int32?
        public var kind: String?
    }

    /// Every link of the namespace.
    public static func dump() throws(XSKError) -> [Link] {
        var links: [Link] = []
        do {
            // ifinfomsg: family, pad (1 byte each), type (2), index (4), flags (4), change (4).
            try RouteNetlink.dump(RTM_GETLINK, family: UInt8(AF_UNSPEC), headerSize: 16, replyType: RTM_NEWLINK) { body in
                if let link = parse(body) { links.append(link) }
            }
        } catch {
            throw .system(operation: "rtnetlink RTM_GETLINK \(error.step)", subject: "links", errno: error.errno)
        }
        return links
    }

    /// The names of the VLAN devices (802.1Q or 802.1ad) whose parent is `interfaceIndex`.
    public static func vlanDevices(on interfaceIndex: Int32) throws(XSKError) -> [String] {
        try dump().filter { $0.kind == "vlan" && $0.parentIndex == interfaceIndex }.map(\.name).sorted()
    }

    static func parse(_ body: UnsafeRawBufferPointer) -> Link? {
        let index = body.loadUnaligned(fromByteOffset: 4, as: Int32.self)
        var name: String?
        var parent: Int32?
        var kind: String?
        func text(_ payload: UnsafeRawBufferPointer) -> String {
            String(decoding: payload.prefix { $0 != 0 }, as: UTF8.self)
        }
        RouteNetlink.attributes(body, from: 16) { type, payload in
            switch Int32(type) {
            case Int32(IFLA_IFNAME): name = text(payload)
            case Int32(IFLA_LINK) where payload.count == 4: parent = payload.loadUnaligned(as: Int32.self)
            case Int32(IFLA_LINKINFO):
                // Nested: IFLA_INFO_KIND among others. The nested flag bit is masked off.
                RouteNetlink.attributes(payload, from: 0) { nested, inner in
                    if nested & 0x3FFF == UInt16(IFLA_INFO_KIND) { kind = text(inner) }
                }
            default: break
            }
        }
        guard let name else { return nil }
        return Link(index: index, name: name, parentIndex: parent, kind: kind)
    }
}
