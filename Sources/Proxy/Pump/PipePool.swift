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

    init(limit: Int, pipeSize: Int) {
        self.limit = limit
        self.pipeSize = pipeSize
        free = .allocate(capacity: max(limit, 1))
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

    /// Returns an empty pipe, or closes it when the pool is full.
    mutating func give(_ pipe: PipePair) {
        if count < limit && mayGrow {
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
