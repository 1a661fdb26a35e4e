import Balancer
import CXDP
import Glibc
import Synchronization
import SystemPackage

/// Convey's XDP steering program (`steer.bpf.c`, embedded in the binary) on one interface:
/// loading, attaching, detaching, and typed access to its maps.
///
/// Lifecycle: `attach(to:mode:)` opens the embedded object (`bpf_object__open_mem` →
/// `xdp_program__from_bpf_obj`) and attaches it with libxdp (`xdp_program__attach`). What is on
/// the interface first decides what happens:
/// - nothing: attach;
/// - a steering program left by a convey that was killed (recognised by its program name,
///   `convey_steer`): it is detached and replaced;
/// - anything else: `XSKError.foreignProgram`, whose message says how to remove it. A foreign
///   program is never replaced silently.
///
/// `detach()` removes exactly what `attach` put there and is idempotent (also called from
/// `deinit`), so the interface is left as it was found.
///
/// The control plane fills the maps: VIPs (`addVIP`/`removeVIP`), the passthrough NAT range
/// (`setNATRange`), sockets (`XSKSocket.register(inXSKMap:)` with `xsksMapFD`); it reads the
/// per-CPU verdict counters with `verdicts()`.
public final class SteeringProgram: @unchecked Sendable {
    /// Transport protocols a VIP can be steered for.
    public enum TransportProtocol: UInt8, Sendable {
        case tcp = 6
        case udp = 17
    }

    /// The program's name as the kernel reports it; how a stale program is recognised.
    public static let programName = STEER_PROGRAM_NAME

    /// How many VIPs the program can steer (its VIP map's size).
    public static let maxVIPs = Int(STEER_MAX_VIPS)

    public let interface: NetworkInterface
    /// The mode the program is attached in.
    public let attachMode: NetworkInterface.AttachMode
    /// True when a stale steering program from an earlier (killed) convey was replaced.
    public let replacedStaleProgram: Bool
    /// This process's claim on the interface (see `InterfaceClaim`), held while attached.
    let claim: InterfaceClaim
    /// File descriptor of the XSKMAP (queue index → socket).
    public let xsksMapFD: Int32
    let vipsMapFD: Int32
    let natMapFD: Int32
    let verdictsMapFD: Int32

    let object: OpaquePointer
    /// libxdp's program, when libxdp attached it; nil for one loaded by libbpf and attached in
    /// place of a running convey's (`init(replacingOn:...)`).
    let program: OpaquePointer?
    /// The loaded program's descriptor.
    let programFD: Int32
    /// The network namespace the program was attached in (`/proc/thread-self/ns/net`), so that
    /// `detach()` from a thread in another namespace still detaches from the right interface
    /// (interface indexes repeat across namespaces). -1 when it could not be opened.
    let namespaceFD: Int32
    /// Set once detached (detach is idempotent and may race with a signal-driven stop).
    private let detached = Mutex(false)
    /// Between `replaceAttached()` and `keepReplacement()`: the running convey's program this
    /// one replaced, put back (not detached) should this convey end before the takeover is
    /// committed (`putReplacedBack`).
    private let replaced = Mutex<Int32?>(nil)

    /// Loads the embedded program and attaches it to `interface`.
    /// - Parameter mode: `.auto` tries native XDP and falls back to skb; `.native`/`.skb` force.
    public init(attachingTo interface: NetworkInterface, mode: XDPConfig.AttachMode = .auto) throws(XSKError) {
        Self.installLogger()
        self.interface = interface
        let nsFD = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        var succeeded = false
        defer { if !succeeded && nsFD >= 0 { close(nsFD) } }
        // Only a program nobody claims is stale: a running convey's is never replaced.
        claim = try InterfaceClaim.acquire(interface)
        replacedStaleProgram = try Self.clearStaleProgram(on: interface)

        let opened = try Self.openEmbedded()
        guard let xdpProgram = xdp_program__from_bpf_obj(opened, "xdp"), libxdp_get_error(UnsafeRawPointer(xdpProgram)) == 0 else {
            bpf_object__close(opened)
            throw .program(step: "xdp_program__from_bpf_obj", errno: .current)
        }

        var attached: NetworkInterface.AttachMode?
        var lastError: Int32 = 0
        let tries: [NetworkInterface.AttachMode] = switch mode {
        case .auto: [.native, .skb]
        case .native: [.native]
        case .skb: [.skb]
        }
        for attempt in tries {
            let rc = xdp_program__attach(xdpProgram, interface.index, attempt == .native ? XDP_MODE_NATIVE : XDP_MODE_SKB, 0)
            if rc == 0 {
                attached = attempt
                break
            }
            lastError = rc
        }
        guard let attached else {
            xdp_program__close(xdpProgram)
            bpf_object__close(opened)
            if lastError == -EEXIST || lastError == -EBUSY {
                let attached = Self.attachedPrograms(interface.index)
                throw .foreignProgram(interface: interface.name, programs: attached.names, detach: attached.detach)
            }
            throw XSKError.fromNegative(lastError, "xdp_program__attach (\(mode.rawValue))", interface.name)
        }
        object = opened
        program = xdpProgram
        programFD = xdp_program__fd(xdpProgram)
        attachMode = attached

        guard let (xsks, vips, nat, verdicts) = Self.maps(of: opened) else {
            _ = xdp_program__detach(xdpProgram, interface.index, attached == .native ? XDP_MODE_NATIVE : XDP_MODE_SKB, 0)
            xdp_program__close(xdpProgram)
            bpf_object__close(opened)
            throw .missingMap("steer_*")
        }
        xsksMapFD = xsks
        vipsMapFD = vips
        natMapFD = nat
        verdictsMapFD = verdicts
        namespaceFD = nsFD
        succeeded = true
    }

    /// Loads the embedded program for a takeover of `interface` from the running convey, whose
    /// `claim` arrived with its sockets: loaded with libbpf and not attached yet, so its maps
    /// can be filled (the handed-over sockets, VIPs, NAT range) before `replaceAttached()` puts
    /// it in place of the running one's in `mode` without a moment between the two.
    init(replacingOn interface: NetworkInterface, mode: NetworkInterface.AttachMode,
         claim: InterfaceClaim) throws(XSKError) {
        Self.installLogger()
        self.interface = interface
        self.claim = claim
        replacedStaleProgram = false
        attachMode = mode
        let opened = try Self.openEmbedded()
        let loaded = bpf_object__load(opened)
        guard loaded == 0, let prog = bpf_object__find_program_by_name(opened, Self.programName),
              bpf_program__fd(prog) >= 0 else {
            bpf_object__close(opened)
            throw loaded != 0 ? XSKError.fromNegative(loaded, "bpf_object__load", interface.name) : .missingMap(Self.programName)
        }
        guard let (xsks, vips, nat, verdicts) = Self.maps(of: opened) else {
            bpf_object__close(opened)
            throw .missingMap("steer_*")
        }
        object = opened
        program = nil
        programFD = bpf_program__fd(prog)
        xsksMapFD = xsks
        vipsMapFD = vips
        natMapFD = nat
        verdictsMapFD = verdicts
        namespaceFD = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        // Not attached yet: nothing to detach until `replaceAttached()` succeeds.
        detached.withLock { $0 = true }
    }

    /// The embedded steering object, opened (not loaded).
    private static func openEmbedded() throws(XSKError) -> OpaquePointer {
        let opened: OpaquePointer? = EmbeddedBPFObject.steer.withUnsafeBytes { raw in
            bpf_object__open_mem(raw.baseAddress, raw.count, nil)
        }
        guard let opened else { throw .program(step: "bpf_object__open_mem", errno: .current) }
        return opened
    }

    /// The descriptors of the loaded object's maps (XSKs, VIPs, NAT, verdicts), or nil when
    /// one is missing.
    private static func maps(of object: OpaquePointer) -> (Int32, Int32, Int32, Int32)? {
        func fd(_ name: String) -> Int32? {
            guard let map = bpf_object__find_map_by_name(object, name) else { return nil }
            let fd = bpf_map__fd(map)
            return fd >= 0 ? fd : nil
        }
        guard let xsks = fd(STEER_MAP_XSKS), let vips = fd(STEER_MAP_VIPS), let nat = fd(STEER_MAP_NAT),
              let verdicts = fd(STEER_MAP_VERDICTS) else { return nil }
        return (xsks, vips, nat, verdicts)
    }

    /// Attaches this program in place of the one on the interface now (`XDP_FLAGS_REPLACE`:
    /// the kernel swaps them at once, or fails if the interface's program changed meanwhile).
    func replaceAttached() throws(XSKError) {
        guard let current = Self.attachedProgramFD(interface, attachMode) else {
            throw .invalidArgument("\(interface.name) has no XDP program in \(attachMode.rawValue) mode to take over")
        }
        let rc = cxdp_xdp_replace(interface.index, programFD, attachMode.kernelFlags, current)
        guard rc == 0 else {
            close(current)
            throw XSKError.fromNegative(rc, "bpf_xdp_attach (replace)", interface.name)
        }
        replaced.withLock { $0 = current }
        detached.withLock { $0 = false }
    }

    /// The takeover is committed: the replaced program is not needed any more.
    func keepReplacement() {
        if let fd = replaced.withLock({ r -> Int32? in defer { r = nil }; return r }) { close(fd) }
    }

    /// Before the takeover is committed: puts the program this one replaced back in its
    /// place, if this one is still attached (the running convey may have done so already).
    /// Afterwards this program counts as detached. True when there was one to put back.
    @discardableResult
    func putReplacedBack() -> Bool {
        guard let fd = replaced.withLock({ r -> Int32? in defer { r = nil }; return r }) else { return false }
        defer { close(fd) }
        detached.withLock { $0 = true }
        _ = cxdp_xdp_replace(interface.index, fd, attachMode.kernelFlags, programFD)
        return true
    }

    /// A descriptor of the program attached to `interface` in `mode` now (the caller closes
    /// it), or nil.
    static func attachedProgramFD(_ interface: NetworkInterface, _ mode: NetworkInterface.AttachMode) -> Int32? {
        var id: UInt32 = 0
        guard bpf_xdp_query_id(interface.index, Int32(mode.kernelFlags), &id) == 0, id != 0 else { return nil }
        let fd = bpf_prog_get_fd_by_id(id)
        return fd >= 0 ? fd : nil
    }

    /// Puts `program` (a descriptor of the program this convey ran with) back in place of
    /// whatever is attached now: a takeover that failed after the next convey swapped its
    /// program in. True when done.
    func restore(_ saved: Int32) -> Bool {
        guard let current = Self.attachedProgramFD(interface, attachMode) else {
            // The newcomer detached its own on the way out: attach ours as at start.
            return cxdp_xdp_replace(interface.index, saved, attachMode.kernelFlags, -1) == 0
        }
        defer { close(current) }
        // Still (or again) ours: the newcomer never swapped, or put ours back itself.
        if cxdp_prog_id(current) == cxdp_prog_id(saved) { return true }
        if cxdp_xdp_replace(interface.index, saved, attachMode.kernelFlags, current) == 0 { return true }
        // The newcomer may have put ours back itself in between (its replace and ours race).
        guard let now = Self.attachedProgramFD(interface, attachMode) else { return false }
        defer { close(now) }
        return cxdp_prog_id(now) == cxdp_prog_id(saved)
    }

    deinit {
        detach()
        if let program { xdp_program__close(program) }
        bpf_object__close(object)
        if namespaceFD >= 0 { close(namespaceFD) }
    }

    /// Removes the program from the interface (once; later calls do nothing). Safe to call
    /// from any thread. Errors are not thrown: a vanished interface has no program anyway.
    public func detach() {
        // A takeover not committed yet: the running convey's program goes back, never none.
        if putReplacedBack() { return }
        let first = detached.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        let mode = attachMode == .native ? XDP_MODE_NATIVE : XDP_MODE_SKB
        let current = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        defer { if current >= 0 { close(current) } }
        let inOtherNamespace = namespaceFD >= 0 && current >= 0 && !Self.sameFile(namespaceFD, current)
        if inOtherNamespace && cxdp_setns_net(namespaceFD) != 0 { return }
        if let program {
            _ = xdp_program__detach(program, interface.index, mode, 0)
        } else {
            // Attached with libbpf in place of another program: detach it only if it is still
            // this one (the next convey of a takeover may have replaced it).
            _ = cxdp_xdp_detach_expected(interface.index, attachMode.kernelFlags, programFD)
        }
        if inOtherNamespace { _ = cxdp_setns_net(current) }
    }

    /// A takeover handed the interface to the next convey: this process must leave the
    /// program (now the next one's) attached when it ends.
    func handedOver() {
        detached.withLock { $0 = true }
        // Where bpffs is mounted libxdp attached through its dispatcher and pinned it there;
        // the next convey's program replaced it: remove the pins, as a detach would have.
        if program != nil { _ = libxdp_clean_references(interface.index) }
    }

    static func sameFile(_ a: Int32, _ b: Int32) -> Bool {
        var sa = stat()
        var sb = stat()
        guard fstat(a, &sa) == 0, fstat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }

    // MARK: Maps

    /// Steers (address, port, protocol) to the XSK sockets.
    public func addVIP(_ endpoint: Endpoint, protocol proto: TransportProtocol = .tcp, index: UInt32 = 0) throws(XSKError) {
        var key = Self.key(endpoint, proto)
        var value = steer_vip_value(index: index)
        let rc = bpf_map_update_elem(vipsMapFD, &key, &value, UInt64(BPF_ANY))
        guard rc == 0 else { throw XSKError.fromNegative(rc, "bpf_map_update_elem(steer_vips)", "VIP \(endpoint)") }
    }

    /// Stops steering a VIP. Removing one that is not there is not an error.
    public func removeVIP(_ endpoint: Endpoint, protocol proto: TransportProtocol = .tcp) throws(XSKError) {
        var key = Self.key(endpoint, proto)
        let rc = bpf_map_delete_elem(vipsMapFD, &key)
        guard rc == 0 || rc == -ENOENT else { throw XSKError.fromNegative(rc, "bpf_map_delete_elem(steer_vips)", "VIP \(endpoint)") }
    }

    /// Steers backend replies (TCP) to any of `addresses` (at most one per family) with a
    /// destination port in `ports` (passthrough); a family not among them is not steered, and
    /// no addresses turn it off.
    public func setNATRange(addresses: [IPAddress], ports: ClosedRange<UInt16>) throws(XSKError) {
        for (entry, isIPv4) in [(UInt32(STEER_NAT_IPV4), true), (UInt32(STEER_NAT_IPV6), false)] {
            var config = steer_nat_config()
            if let address = addresses.first(where: { $0.isIPv4 == isIPv4 }) {
                config.enabled = 1
                config.port_min = ports.lowerBound
                config.port_max = ports.upperBound
                withUnsafeMutableBytes(of: &config.addr) { Self.store(address, into: $0) }
            }
            var key = entry
            let rc = bpf_map_update_elem(natMapFD, &key, &config, UInt64(BPF_ANY))
            guard rc == 0 else { throw XSKError.fromNegative(rc, "bpf_map_update_elem(steer_nat)", interface.name) }
        }
    }

    /// The verdict counters summed over all CPUs.
    public func verdicts() throws(XSKError) -> SteeringVerdicts {
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { throw .system(operation: "libbpf_num_possible_cpus", subject: interface.name, errno: Errno(rawValue: -Int32(cpus))) }
        var values = [UInt64](repeating: 0, count: cpus)
        var sums = [UInt64](repeating: 0, count: Int(STEER_VERDICT_COUNT.rawValue))
        for index in 0..<UInt32(STEER_VERDICT_COUNT.rawValue) {
            var key = index
            let rc = bpf_map_lookup_elem(verdictsMapFD, &key, &values)
            guard rc == 0 else { throw XSKError.fromNegative(rc, "bpf_map_lookup_elem(steer_verdicts)", interface.name) }
            sums[Int(index)] = values.reduce(0, &+)
        }
        return SteeringVerdicts(counters: sums)
    }

    // MARK: Helpers

    static func key(_ endpoint: Endpoint, _ proto: TransportProtocol) -> steer_vip_key {
        var key = steer_vip_key()
        withUnsafeMutableBytes(of: &key.addr) { store(endpoint.address, into: $0) }
        key.port = endpoint.port.bigEndian
        key.proto = proto.rawValue
        return key
    }

    /// IPv6 as is, IPv4 as ::ffff:a.b.c.d (the layout steer_maps.h documents).
    static func store(_ address: IPAddress, into bytes: UnsafeMutableRawBufferPointer) {
        for i in 0..<16 { bytes[i] = 0 }
        switch address {
        case .v4:
            bytes[10] = 0xff
            bytes[11] = 0xff
            for (i, b) in address.networkBytes.enumerated() { bytes[12 + i] = b }
        case .v6:
            for (i, b) in address.networkBytes.enumerated() { bytes[i] = b }
        }
    }

    /// Names of the programs on an interface (the dispatcher's components included), and the
    /// `ip link` keyword that detaches them.
    static func attachedPrograms(_ ifindex: Int32) -> (names: [String], detach: String) {
        guard let mp = xdp_multiprog__get_from_ifindex(ifindex), libxdp_get_error(UnsafeRawPointer(mp)) == 0 else {
            return ([], "xdp")
        }
        defer { xdp_multiprog__close(mp) }
        return (programNames(mp), detachKeyword(mp))
    }

    /// `ip link set dev IFACE <keyword> off` for the mode `mp` is attached in: plain `xdp off`
    /// detaches only a driver-mode program on a driver that has one.
    static func detachKeyword(_ mp: OpaquePointer) -> String {
        switch xdp_multiprog__attach_mode(mp) {
        case XDP_MODE_SKB: return "xdpgeneric"
        case XDP_MODE_HW: return "xdpoffload"
        default: return "xdp"
        }
    }

    static func programNames(_ mp: OpaquePointer) -> [String] {
        var names: [String] = []
        if xdp_multiprog__is_legacy(mp) {
            if let main = xdp_multiprog__main_prog(mp), let name = xdp_program__name(main) {
                names.append(String(cString: name))
            }
        } else {
            if let main = xdp_multiprog__main_prog(mp), let name = xdp_program__name(main) {
                names.append(String(cString: name))
            }
            var prog = xdp_multiprog__next_prog(nil, mp)
            while let p = prog {
                if let name = xdp_program__name(p) { names.append(String(cString: name)) }
                prog = xdp_multiprog__next_prog(p, mp)
            }
        }
        return names
    }

    /// Looks at what is attached to the interface: nothing → false; a stale convey steering
    /// program only → detaches it, true; anything else → `foreignProgram`.
    static func clearStaleProgram(on interface: NetworkInterface) throws(XSKError) -> Bool {
        guard let mp = xdp_multiprog__get_from_ifindex(interface.index) else { return false }
        let error = libxdp_get_error(UnsafeRawPointer(mp))
        if error == -Int(ENOENT) { return false }
        guard error == 0 else {
            throw XSKError.fromNegative(Int32(error), "xdp_multiprog__get_from_ifindex", interface.name)
        }
        defer { xdp_multiprog__close(mp) }
        let names = programNames(mp)
        if names.isEmpty { return false }
        let ours: Set<String> = [programName]
        let componentNames = xdp_multiprog__is_legacy(mp) ? names : Array(names.dropFirst())
        guard !componentNames.isEmpty, Set(componentNames).isSubset(of: ours) else {
            throw .foreignProgram(interface: interface.name, programs: names, detach: detachKeyword(mp))
        }
        let rc = xdp_multiprog__detach(mp)
        guard rc == 0 else { throw XSKError.fromNegative(rc, "xdp_multiprog__detach (stale \(programName))", interface.name) }
        return true
    }

    /// Routes libbpf/libxdp messages: warnings to stderr, the rest dropped. libxdp's notes that
    /// no bpffs is mounted (so it attaches without its multi-program dispatcher, as inside
    /// `ip netns exec`) are expected with one program per interface and dropped too.
    private static let loggerInstalled: Bool = {
        _ = libxdp_set_print { level, format, args in
            guard level == LIBXDP_WARN, let format, let args, strstr(format, "bpffs") == nil else { return 0 }
            return vdprintf(2, format, args)
        }
        _ = libbpf_set_print { level, format, args in
            guard level == LIBBPF_WARN, let format, let args else { return 0 }
            return vdprintf(2, format, args)
        }
        return true
    }()

    static func installLogger() { _ = loggerInstalled }
}
