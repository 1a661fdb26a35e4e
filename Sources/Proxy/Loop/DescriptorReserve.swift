#if canImport(Glibc)
import Glibc
#endif

/// One descriptor an event loop keeps in hand (`/dev/null`) for the moment the process runs
/// out of them (`EMFILE`). A client accepted just then still needs a backend socket: giving
/// the reserve back lets that connection go ahead, and the loop stops accepting until it can
/// take the reserve again (some connection closed). Clients beyond the limit thus wait in the
/// kernel's accept queue instead of being accepted and dropped.
struct DescriptorReserve: ~Copyable {
    private var fd: Int32

    init() { fd = open("/dev/null", O_RDONLY | O_CLOEXEC) }

    deinit { if fd >= 0 { _ = Glibc.close(fd) } }

    /// True while the reserve is held.
    var isHeld: Bool { fd >= 0 }

    /// Gives the reserve back to the process; false when it was not held.
    mutating func release() -> Bool {
        guard fd >= 0 else { return false }
        _ = Glibc.close(fd)
        fd = -1
        return true
    }

    /// Takes the reserve again if a descriptor is free; returns whether it is held.
    mutating func retake() -> Bool {
        if fd < 0 { fd = open("/dev/null", O_RDONLY | O_CLOEXEC) }
        return fd >= 0
    }
}
