#if canImport(Glibc)
import Glibc
#endif

/// Descriptors an event loop keeps in hand (`/dev/null`) for the moment the process runs out
/// of them (`EMFILE`).
///
/// A client accepted just then still needs a backend socket: giving the reserve back lets that
/// connection go ahead, and leaves the rest to the process's other users — the stats server,
/// health checks, a reload reading the file — which would otherwise fail (NIO's accept loop
/// spins on `EMFILE`). The loop stops accepting until it can take the reserve again with as
/// many descriptors to spare (connections closed), so clients beyond the limit wait in the
/// kernel's accept queue instead of being accepted and dropped.
struct DescriptorReserve: ~Copyable {
    /// Room for twice the reserve: `retake` opens its spare half there too.
    private let descriptors: UnsafeMutablePointer<Int32>
    /// Descriptors held when the reserve is whole.
    let size: Int
    private var held = 0

    /// A reserve of `size` descriptors, taken now (as many as the process has).
    init(size: Int) {
        self.size = max(1, size)
        descriptors = .allocate(capacity: 2 * self.size)
        for _ in 0..<self.size {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { break }
            descriptors[held] = fd
            held += 1
        }
    }

    /// The process's open-files limit now (`RLIMIT_NOFILE`, soft; 1024 when it cannot be read).
    static func openFilesLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return UInt64(limit.rlim_cur)
    }

    /// The reserve for a process whose open-files limit is `limit`: 1/64 of it, 4 to 32.
    static func size(forLimit limit: UInt64) -> Int { Int(min(32, max(4, limit / 64))) }

    deinit {
        for i in 0..<held { _ = Glibc.close(descriptors[i]) }
        descriptors.deallocate()
    }

    /// Gives the whole reserve back to the process; false when none was held.
    mutating func release() -> Bool {
        guard held > 0 else { return false }
        for i in 0..<held { _ = Glibc.close(descriptors[i]) }
        held = 0
        return true
    }

    /// Takes the whole reserve again, but only when as many descriptors again stay free for
    /// the process's other users; otherwise takes none. Returns whether it is whole.
    mutating func retake() -> Bool {
        if held == size { return true }
        _ = release()
        var opened = 0
        while opened < 2 * size {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { break }
            descriptors[opened] = fd
            opened += 1
        }
        let keep = opened == 2 * size ? size : 0
        for i in keep..<opened { _ = Glibc.close(descriptors[i]) }
        held = keep
        return keep == size
    }
}
