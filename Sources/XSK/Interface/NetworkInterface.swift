import Balancer
import CXDP
import Glibc
import SystemPackage

/// Facts about one network interface in the calling thread's network namespace, read once
/// (`if_nametoindex`, `SIOCGIFHWADDR`, `SIOCGIFMTU`, `getifaddrs`, rtnetlink's address flags,
/// ethtool `ETHTOOL_GCHANNELS`, `ETHTOOL_GDRVINFO`, `ETHTOOL_GFLAGS` and `ETHTOOL_GRXFHINDIR`,
/// rtnetlink's links).
/// Errors name the interface.
public struct NetworkInterface: Sendable, Equatable {
    /// How an XDP program can be attached.
    public enum AttachMode: String, Sendable, Equatable {
        /// In the driver (`XDP_FLAGS_DRV_MODE`).
        case native
        /// Generic XDP in the stack (`XDP_FLAGS_SKB_MODE`), every driver.
        case skb

        /// The `XDP_FLAGS_*` mode flag of this mode.
        var kernelFlags: UInt32 { self == .native ? UInt32(XDP_FLAGS_DRV_MODE) : UInt32(XDP_FLAGS_SKB_MODE) }
    }

    public let name: String
    public let index: Int32
    public let mac: MACAddress
    public let mtu: Int
    public let ipv4: [IPAddress]
    public let ipv6: [IPAddress]
    /// Addresses of `ipv6` that are temporary (privacy), deprecated, tentative or failed
    /// duplicate address detection (rtnetlink's flags; empty if they could not be read):
    /// none of them is a good default source address.
    public let transientIPv6: Set<IPAddress>

    /// The first IPv6 address that suits a long-lived default source: global (not
    /// link-local or loopback, see `NATAddressFamilies.isDefaultCandidate`) and not transient.
    public var stableGlobalIPv6: IPAddress? {
        ipv6.first { NATAddressFamilies.isDefaultCandidate($0) && !transientIPv6.contains($0) }
    }

    /// True when `address` is one of this interface's own.
    public func has(_ address: IPAddress) -> Bool { ipv4.contains(address) || ipv6.contains(address) }
    /// RX queues: ethtool's rx + combined channels; 1 when the driver has no channel API.
    public let rxQueueCount: Int
    /// The driver's name as ethtool reports it ("veth", "mlx5_core", ...), if any.
    public let driver: String?
    /// Attach modes this interface supports. `skb` always; `native` for drivers known to
    /// implement XDP (the kernel has no query for it before a program is attached, so the
    /// final word is the attach itself: `SteeringProgram` falls back to skb under `auto`).
    public let attachModes: [AttachMode]

    // Read on demand, not with the facts above, which the control loop reads every second:
    // a link dump and the RSS table cost more, and are needed at start and on a queue change.

    /// How many RX queues the NIC's RSS indirection table spreads flows over (its largest queue
    /// + 1; `ethtool -X`), nil when the driver has none (veth): fewer than `rxQueueCount` when
    /// the operator narrowed it, so the queues past it receive no hashed flows.
    public func rssQueueSpan() -> Int? {
        let span = cxdp_if_rss_queue_span(name)
        return span > 0 ? Int(span) : nil
    }

    /// VLAN devices stacked on this interface (`eth0.100`): it carries tagged traffic. Empty
    /// when the links cannot be read.
    public func vlanDevices() -> [String] { (try? LinkTable.vlanDevices(on: index)) ?? [] }

    /// Whether the device moves received VLAN tags out of the frame before XDP runs (receive
    /// VLAN offload, `rxvlan`): the steering program and the workers then see a tagged frame
    /// as an untagged one. Nil when the driver does not say.
    public func stripsVLANTags() -> Bool? {
        let strips = cxdp_if_strips_vlan(name)
        return strips < 0 ? nil : strips == 1
    }

    /// Drivers with native XDP support (mainline, 6.x).
    static let nativeXDPDrivers: Set<String> = [
        "veth", "virtio_net", "mlx5_core", "mlx4_en", "i40e", "ice", "ixgbe", "ixgbevf", "igb", "igc",
        "bnxt_en", "nfp", "qede", "ena", "tun", "netdevsim", "stmmaceth", "sfc", "thunder-nicvf",
        "mvneta", "mvpp2", "fec", "enetc", "dpaa2-eth", "lan966x", "gve", "idpf", "bond", "hv_netvsc",
    ]

    /// Reads the facts of `name`.
    public init(named name: String) throws(XSKError) {
        guard !name.isEmpty, name.utf8.count < Int(IF_NAMESIZE) else {
            throw .invalidArgument("interface name '\(name)' is empty or longer than \(IF_NAMESIZE - 1) characters")
        }
        let index = if_nametoindex(name)
        guard index != 0 else { throw .noSuchInterface(name) }
        self.name = name
        self.index = Int32(index)

        var macBytes = [UInt8](repeating: 0, count: 6)
        var rc = cxdp_if_hwaddr(name, &macBytes)
        guard rc == 0 else { throw XSKError.fromNegative(rc, "ioctl(SIOCGIFHWADDR)", name) }
        mac = MACAddress(bytes: macBytes) ?? MACAddress(rawValue: 0)

        rc = cxdp_if_mtu(name)
        guard rc >= 0 else { throw XSKError.fromNegative(rc, "ioctl(SIOCGIFMTU)", name) }
        mtu = Int(rc)

        var rx: UInt32 = 0
        var combined: UInt32 = 0
        rc = cxdp_if_channels(name, &rx, &combined)
        if rc == 0 {
            rxQueueCount = max(1, Int(rx) + Int(combined))
        } else if rc == -EOPNOTSUPP {
            rxQueueCount = 1
        } else {
            throw XSKError.fromNegative(rc, "ioctl(ETHTOOL_GCHANNELS)", name)
        }

        driver = Self.driverName(name)
        if let driver, Self.nativeXDPDrivers.contains(driver) {
            attachModes = [.native, .skb]
        } else {
            attachModes = [.skb]
        }
        (ipv4, ipv6) = try Self.addresses(of: name)
        let flagged = (try? AddressTable.dump(interfaceIndex: Int32(index))) ?? []
        transientIPv6 = Set(flagged.filter { !$0.address.isIPv4 && $0.isTransient }.map(\.address))
    }

    /// The driver name via ethtool, or nil.
    static func driverName(_ name: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 64)
        guard cxdp_if_driver(name, &buffer, buffer.count) == 0 else { return nil }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.isEmpty ? nil : text
    }

    /// IPv4 and IPv6 addresses of `name` (`getifaddrs`).
    static func addresses(of name: String) throws(XSKError) -> ([IPAddress], [IPAddress]) {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0 else {
            throw .system(operation: "getifaddrs", subject: name, errno: .current)
        }
        defer { freeifaddrs(head) }
        var v4: [IPAddress] = []
        var v6: [IPAddress] = []
        var cursor = head
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let addr = entry.pointee.ifa_addr, String(cString: entry.pointee.ifa_name) == name else { continue }
            switch Int32(addr.pointee.sa_family) {
            case AF_INET:
                let value = addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
                v4.append(.v4(UInt32(bigEndian: value)))
            case AF_INET6:
                let bytes = addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    withUnsafeBytes(of: p.pointee.sin6_addr) { Array($0) }
                }
                v6.append(IPAddress(ipv6NetworkBytes: bytes))
            default:
                break
            }
        }
        return (v4, v6)
    }
}
