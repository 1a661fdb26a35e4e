#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// The process's open-file limit (`RLIMIT_NOFILE`), which bounds how many connections proxy
/// mode can hold: each takes up to six descriptors (client and backend sockets, and a pipe
/// per direction while it moves bulk data). Shells and systemd start programs with a soft
/// limit of 1024 (about 170 proxied connections) under a far higher hard limit, expecting
/// programs that need more to raise it themselves, as HAProxy and nginx do.
enum OpenFileLimit {
    /// The soft limit before and after `raiseToHardLimit`.
    struct Limits: Equatable {
        var before: UInt64
        var now: UInt64
    }

    /// Descriptors one proxied connection holds: two sockets, and up to two pipes (two
    /// descriptors each) while it moves bulk data.
    static let descriptorsPerConnection: ClosedRange<UInt64> = 2...6
    /// Descriptors kept for everything else (listeners, epoll, eventfds, stats server, health
    /// checks, logs).
    static let reserved: UInt64 = 32

    /// Raises the soft limit to the hard one (to `fs.nr_open` when the hard limit is
    /// unlimited, which the kernel refuses as a soft limit).
    static func raiseToHardLimit() throws(Errno) -> Limits {
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { throw Errno(rawValue: errno) }
        let before = UInt64(limit.rlim_cur)
        var target = limit.rlim_max
        if target == rlim_t.max { target = rlim_t(systemMaximum() ?? 1 << 20) }  // RLIM_INFINITY
        guard target > limit.rlim_cur else { return Limits(before: before, now: before) }
        var raised = limit
        raised.rlim_cur = target
        guard setrlimit(resource, &raised) == 0 else { throw Errno(rawValue: errno) }
        return Limits(before: before, now: UInt64(target))
    }

    /// How many proxied connections `limit` descriptors hold at once: all moving bulk data,
    /// to none of them.
    static func connectionCapacity(_ limit: UInt64) -> ClosedRange<UInt64> {
        let usable = limit > reserved ? limit - reserved : 0
        return (usable / descriptorsPerConnection.upperBound)...(usable / descriptorsPerConnection.lowerBound)
    }

    private static var resource: __rlimit_resource_t { __rlimit_resource_t(RLIMIT_NOFILE.rawValue) }

    /// `/proc/sys/fs/nr_open`: the most descriptors a process may have.
    private static func systemMaximum() -> UInt64? {
        var buffer = [CChar](repeating: 0, count: 32)
        guard let file = fopen("/proc/sys/fs/nr_open", "r") else { return nil }
        defer { fclose(file) }
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return UInt64(text.filter(\.isNumber))
    }
}
