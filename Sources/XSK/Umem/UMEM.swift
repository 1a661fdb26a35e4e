import CXDP
import Glibc
import SystemPackage

/// An AF_XDP UMEM: the packet buffer area shared with the kernel, cut into equal frames, and
/// its FILL (frames the kernel may receive into) and COMPLETION (frames the kernel has sent)
/// rings.
///
/// Owns its memory and rings and releases them exactly once in `deinit` (after every socket
/// using it is closed: a socket keeps its UMEM alive). One UMEM per worker; frames never move
/// between UMEMs.
public final class UMEM {
    /// Number of frames in the area.
    public let frameCount: Int
    /// Bytes per frame (a power of two, 2048 or 4096).
    public let frameSize: Int
    /// FILL and COMPLETION ring sizes.
    public let fillSize: UInt32
    public let completionSize: UInt32

    @usableFromInline let area: UnsafeMutableRawPointer
    let areaSize: Int
    @usableFromInline let fill: UnsafeMutablePointer<xsk_ring_prod>
    @usableFromInline let completion: UnsafeMutablePointer<xsk_ring_cons>
    /// libxdp's UMEM (nil for one adopted from another process: its rings are mapped by the
    /// socket that registered it, see `XSKSocket.init(adopting:...)`).
    let handle: OpaquePointer?
    /// The memfd the area lives in, so a takeover can hand the frames to the next convey
    /// (`MAP_SHARED`: both processes see the same pages, which the kernel keeps pinned).
    public let memoryFD: Int32

    /// Bytes the kernel keeps before a received packet in its frame (`XDP_PACKET_HEADROOM`;
    /// convey asks for no headroom of its own).
    public static let receiveHeadroom = 256

    /// The largest IP packet (an interface's MTU) whose Ethernet frame fits one frame of
    /// `frameSize` bytes. AF_XDP puts one packet in one frame (no multi-buffer here): a bigger
    /// one is dropped by the kernel and counted only in the ring's `rx_dropped`.
    public static func largestMTU(frameSize: Int) -> Int { frameSize - receiveHeadroom - 14 }

    /// The frame size (2048 or, for a larger MTU, 4096) for an interface with `mtu`; and
    /// whether frames of it hold every packet that MTU allows.
    public static func frameSize(forMTU mtu: Int) -> (size: Int, holdsMTU: Bool) {
        let size = mtu <= largestMTU(frameSize: 2048) ? 2048 : 4096
        return (size, mtu <= largestMTU(frameSize: size))
    }

    /// Maps the area (`mmap`, page-aligned) and registers it (`xsk_umem__create`).
    /// - Parameters:
    ///   - frameCount: frames in the area; the ring sizes must be powers of two below it.
    ///   - frameSize: bytes per frame (power of two, 2048 or 4096).
    public init(frameCount: Int = 4096, frameSize: Int = 2048,
                fillSize: UInt32 = 2048, completionSize: UInt32 = 2048) throws(XSKError) {
        guard frameSize == 2048 || frameSize == 4096 else {
            throw .invalidArgument("UMEM frame size must be 2048 or 4096, got \(frameSize)")
        }
        guard frameCount > 0, fillSize.nonzeroBitCount == 1, completionSize.nonzeroBitCount == 1,
              Int(fillSize) <= frameCount else {
            throw .invalidArgument("UMEM rings must be powers of two not above the frame count (\(frameCount))")
        }
        self.frameCount = frameCount
        self.frameSize = frameSize
        self.fillSize = fillSize
        self.completionSize = completionSize
        areaSize = frameCount * frameSize
        let memory = cxdp_memfd_sealed("convey-umem", off_t(areaSize))
        guard memory >= 0 else {
            throw .system(operation: "memfd_create", subject: "UMEM area of \(areaSize) bytes", errno: Errno(rawValue: -memory))
        }
        let mapped = mmap(nil, areaSize, PROT_READ | PROT_WRITE, MAP_SHARED, memory, 0)
        guard let mapped, mapped != MAP_FAILED else {
            let error = Errno.current
            close(memory)
            throw .system(operation: "mmap", subject: "UMEM area of \(areaSize) bytes", errno: error)
        }
        memoryFD = memory
        area = mapped
        fill = .allocate(capacity: 1)
        fill.initialize(to: xsk_ring_prod())
        completion = .allocate(capacity: 1)
        completion.initialize(to: xsk_ring_cons())
        var config = xsk_umem_config(fill_size: fillSize, comp_size: completionSize,
                                     frame_size: UInt32(frameSize), frame_headroom: 0, flags: 0)
        var umem: OpaquePointer?
        let rc = xsk_umem__create(&umem, area, UInt64(areaSize), fill, completion, &config)
        guard rc == 0, let umem else {
            munmap(area, areaSize)
            close(memory)
            fill.deallocate()
            completion.deallocate()
            throw XSKError.fromNegative(rc, "xsk_umem__create", "UMEM of \(frameCount) frames")
        }
        handle = umem
    }

    /// A UMEM another convey set up and hands over: the area is its memfd `memoryFD` (owned
    /// from now on), mapped here; the rings are mapped by the adopting socket.
    init(adoptingMemory memoryFD: Int32, frameCount: Int, frameSize: Int, fillSize: UInt32,
         completionSize: UInt32) throws(XSKError) {
        guard frameSize == 2048 || frameSize == 4096, frameCount > 0 else {
            throw .invalidArgument("a handed-over UMEM of \(frameCount) frames of \(frameSize) bytes")
        }
        var info = stat()
        let (size, overflow) = frameCount.multipliedReportingOverflow(by: frameSize)
        guard !overflow, fstat(memoryFD, &info) == 0, Int(info.st_size) >= size else {
            throw .invalidArgument("the handed-over UMEM memory is not \(size) bytes")
        }
        guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, memoryFD, 0), mapped != MAP_FAILED else {
            throw .system(operation: "mmap", subject: "handed-over UMEM area of \(size) bytes", errno: .current)
        }
        self.frameCount = frameCount
        self.frameSize = frameSize
        self.fillSize = fillSize
        self.completionSize = completionSize
        self.memoryFD = memoryFD
        areaSize = size
        area = mapped
        fill = .allocate(capacity: 1)
        fill.initialize(to: xsk_ring_prod())
        completion = .allocate(capacity: 1)
        completion.initialize(to: xsk_ring_cons())
        handle = nil
    }

    deinit {
        if let handle { _ = xsk_umem__delete(handle) }
        munmap(area, areaSize)
        close(memoryFD)
        fill.deallocate()
        completion.deallocate()
    }
}

extension Errno {
    /// The calling thread's errno as a typed value.
    static var current: Errno { Errno(rawValue: Glibc.errno) }
}
