import Balancer
import CXDP
import Glibc
import SystemPackage

/// One AF_XDP socket bound to one RX queue of an interface, with its own RX and TX rings, over
/// a UMEM that it alone uses.
///
/// Created with `XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD`: the steering program is Convey's own
/// (`SteeringProgram`), and the socket is registered in its XSKMAP with `register(in:)`.
/// need_wakeup is always on, so the worker makes a syscall only when the kernel asks for one.
public final class XSKSocket {
    /// The zero-copy mode the kernel actually chose for this socket.
    public enum CopyMode: String, Sendable, Equatable {
        case zeroCopy = "zero-copy"
        case copy
    }

    public let interface: String
    public let queue: UInt32
    public let umem: UMEM
    /// Whether the socket runs zero-copy or copy mode (read back with `XDP_OPTIONS`).
    public let mode: CopyMode
    /// The socket's descriptor (for poll/sendto; owned by this object).
    public let fd: Int32
    public let rxSize: UInt32
    public let txSize: UInt32
    /// In copy mode, the most TX descriptors one sendto() transmits: the TX ring's size when the
    /// kernel takes `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17+), else the kernel's fixed 32. (In
    /// zero-copy mode the driver sends and a sendto() only wakes it.)
    public let txBudget: UInt32

    @usableFromInline let rx: UnsafeMutablePointer<xsk_ring_cons>
    @usableFromInline let tx: UnsafeMutablePointer<xsk_ring_prod>
    /// libxdp's socket (nil for one adopted from another process).
    let handle: OpaquePointer?
    /// The ring mappings of an adopted socket (unmapped in `deinit`).
    private var adoptedRings = cxdp_adopted_rings()

    /// Creates the socket and binds it (`xsk_socket__create`).
    ///
    /// - `zeroCopy = .auto` binds without a mode flag: the kernel uses zero-copy when the driver
    ///   offers it and copy mode otherwise; `.on` insists on zero-copy (a clear error on a driver
    ///   without it), `.off` forces copy mode.
    public init(interface: String, queue: UInt32, umem: UMEM, zeroCopy: XDPConfig.ZeroCopyMode = .auto,
                rxSize: UInt32 = 2048, txSize: UInt32 = 2048) throws(XSKError) {
        let subject = "\(interface) queue \(queue)"
        self.interface = interface
        self.queue = queue
        self.umem = umem
        self.rxSize = rxSize
        self.txSize = txSize
        rx = .allocate(capacity: 1)
        rx.initialize(to: xsk_ring_cons())
        tx = .allocate(capacity: 1)
        tx.initialize(to: xsk_ring_prod())
        var bindFlags = UInt16(XDP_USE_NEED_WAKEUP)
        switch zeroCopy {
        case .auto: break
        case .on: bindFlags |= UInt16(XDP_ZEROCOPY)
        case .off: bindFlags |= UInt16(XDP_COPY)
        }
        var config = xsk_socket_config()
        config.rx_size = rxSize
        config.tx_size = txSize
        config.libxdp_flags = UInt32(XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD)
        config.xdp_flags = 0
        config.bind_flags = bindFlags
        var socket: OpaquePointer?
        let rc = xsk_socket__create(&socket, interface, queue, umem.handle, rx, tx, &config)
        guard rc == 0, let socket else {
            rx.deallocate()
            tx.deallocate()
            if zeroCopy == .on && (rc == -EOPNOTSUPP || rc == -EINVAL || rc == -EPROTONOSUPPORT) {
                throw .zeroCopyUnsupported(interface: interface, driver: NetworkInterface.driverName(interface) ?? "unknown")
            }
            if rc == -ENODEV || rc == -ENOENT || if_nametoindex(interface) == 0 {
                throw .noSuchInterface(interface)
            }
            throw XSKError.fromNegative(rc, "xsk_socket__create", subject)
        }
        handle = socket
        fd = xsk_socket__fd(socket)
        (mode, txBudget) = Self.modeAndBudget(fd, txSize: txSize)
    }

    /// The copy mode the kernel chose for bound socket `fd`, and its TX budget. Copy mode
    /// transmits inside sendto(), 32 frames per call by default: with a budget of the whole
    /// ring, one kick sends everything a batch put on TX (the worker kicks again on EAGAIN all
    /// the same, for kernels without the option).
    private static func modeAndBudget(_ fd: Int32, txSize: UInt32) -> (CopyMode, UInt32) {
        var options: UInt32 = 0
        let mode: CopyMode = cxdp_xsk_options(fd, &options) == 0 && options & UInt32(XDP_OPTIONS_ZEROCOPY) != 0
            ? .zeroCopy : .copy
        return (mode, mode == .copy && cxdp_xsk_set_tx_budget(fd, txSize) == 0 ? txSize : 32)
    }

    /// A socket another convey bound and hands over (`fd`, owned from now on, is bound to
    /// `queue` of `interface` and registered `umem`): its rings are mapped here, their
    /// positions taken as the sender left them (it stopped between two loop iterations).
    init(adopting fd: Int32, interface: String, queue: UInt32, umem: UMEM, rxSize: UInt32, txSize: UInt32) throws(XSKError) {
        self.interface = interface
        self.queue = queue
        self.umem = umem
        self.rxSize = rxSize
        self.txSize = txSize
        rx = .allocate(capacity: 1)
        rx.initialize(to: xsk_ring_cons())
        tx = .allocate(capacity: 1)
        tx.initialize(to: xsk_ring_prod())
        let rc = cxdp_xsk_adopt_rings(fd, rxSize, txSize, umem.fillSize, umem.completionSize, rx, tx, umem.fill,
                                      umem.completion, &adoptedRings)
        guard rc == 0 else {
            rx.deallocate()
            tx.deallocate()
            throw XSKError.fromNegative(rc, "mmap (handed-over rings)", "\(interface) queue \(queue)")
        }
        handle = nil
        self.fd = fd
        (mode, txBudget) = Self.modeAndBudget(fd, txSize: txSize)
    }

    deinit {
        if let handle {
            xsk_socket__delete(handle)
        } else {
            cxdp_xsk_release_rings(&adoptedRings)
            close(fd)
        }
        rx.deallocate()
        tx.deallocate()
    }

    /// Puts this socket into an XSKMAP at its queue index.
    public func register(inXSKMap mapFD: Int32) throws(XSKError) {
        try Self.register(fd, queue: queue, inXSKMap: mapFD, interface: interface)
    }

    /// Steers `queue` to the AF_XDP socket `fd` (one this process holds a descriptor of, such as
    /// a running convey's, sent to a takeover) in the XSKMAP `mapFD`.
    static func register(_ fd: Int32, queue: UInt32, inXSKMap mapFD: Int32, interface: String) throws(XSKError) {
        var key = queue
        var value = UInt32(bitPattern: fd)
        let rc = bpf_map_update_elem(mapFD, &key, &value, 0)
        guard rc == 0 else { throw XSKError.fromNegative(rc < 0 ? rc : -Int32(Glibc.errno), "bpf_map_update_elem (XSKMAP)", "\(interface) queue \(queue)") }
    }

    /// The kernel's ring counters for this socket (`XDP_STATISTICS`).
    public func statistics() throws(XSKError) -> XSKRingStatistics {
        var stats = xdp_statistics()
        let rc = cxdp_xsk_statistics(fd, &stats)
        guard rc == 0 else { throw XSKError.fromNegative(rc, "getsockopt(XDP_STATISTICS)", "\(interface) queue \(queue)") }
        return XSKRingStatistics(stats)
    }
}
