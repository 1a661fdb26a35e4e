import Balancer
import Glibc
import SystemPackage

/// Empty pipes kept for reuse by one event loop.
///
/// Creating a pipe costs two syscalls and two descriptors; a connection needs one per
/// direction, so a loop taking thousands of short connections per second reuses them. A pipe
/// goes back only when it is empty (a connection that ends in an error may leave bytes in it;
/// such a pipe is closed). The pool is bounded so an idle loop does not hoard descriptors.
struct PipePool: ~Copyable {
    private var free: UnsafeMutablePointer<PipePair>
    private(set) var count = 0
    let limit: Int
    /// The `F_SETPIPE_SZ` asked for new pipes.
    let pipeSize: Int

    /// A pool of at most `limit` pipes of `pipeSize` bytes, one of `sharedBy` loops that share
    /// the user's pipe budget.
    init(limit: Int, pipeSize: Int, sharedBy loops: Int = 1) {
        // A few pipes each, even on a tiny budget.
        let share = max(4, Self.limitForUserPipePages(pipeSize: pipeSize) / max(loops, 1))
        self.limit = min(limit, share)
        self.pipeSize = pipeSize
        free = .allocate(capacity: max(self.limit, 1))
    }

    /// Pooled pipes count against the user's `pipe-user-pages-soft` (64 MiB by default) like
    /// busy ones; past it every new pipe is small. An unprivileged process therefore pools at
    /// most an eighth of that budget (over all its loops), leaving the rest to connections.
    /// Unbounded for root, whose pipes the limit spares (strictly: CAP_SYS_RESOURCE or
    /// CAP_SYS_ADMIN; a non-root process that has one only pools less than it could).
    static func limitForUserPipePages(pipeSize: Int) -> Int {
        guard geteuid() != 0, pipeSize > 0 else { return Int.max }
        guard let text = try? ProcFile.read("/proc/sys/fs/pipe-user-pages-soft"),
              let pages = Int(text.filter(\.isNumber)), pages > 0 else { return Int.max }
        return limit(softPages: pages, pageSize: Int(sysconf(Int32(_SC_PAGESIZE))), pipeSize: pipeSize)
    }

    /// An eighth of `softPages` pages in pipes of `pipeSize` bytes.
    static func limit(softPages: Int, pageSize: Int, pipeSize: Int) -> Int {
        min(softPages, 1 << 32) * min(pageSize, 1 << 20) / 8 / max(pipeSize, 1)
    }

    deinit {
        for i in 0..<count { free[i].close() }
        free.deallocate()
    }

    /// False while the process is short of descriptors: no pipe is made or kept (a direction
    /// without one moves its bytes with read/write), so the descriptors go to sockets.
    var mayGrow = true

    /// A pooled pipe, or a new one.
    mutating func take() throws(Errno) -> PipePair {
        if count > 0 {
            count -= 1
            return free[count]
        }
        guard mayGrow else { throw .tooManyOpenFiles }
        return try Splice.makePipe(size: pipeSize)
    }

    /// Returns an empty pipe, or closes it when the pool is full or the pipe is smaller than
    /// asked (the kernel gives an unprivileged user's pipes one or two pages once its pipes
    /// hold `pipe-user-pages-soft`: such a pipe is not kept, so a later one can be full-size).
    mutating func give(_ pipe: PipePair) {
        if count < limit && mayGrow && pipe.capacity >= pipeSize {
            free[count] = pipe
            count += 1
        } else {
            pipe.close()
        }
    }

    /// Closes every pooled pipe.
    mutating func drain() {
        for i in 0..<count { free[i].close() }
        count = 0
    }
}
