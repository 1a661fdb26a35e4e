#if canImport(Glibc)
import Glibc
#endif
import CLinux
import SystemPackage

/// Typed wrappers over `pipe2(2)`, `F_SETPIPE_SZ` and `splice(2)`: the kernel-only copy path.
enum Splice {
    /// The flags every proxy splice uses: `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`. Not
    /// `SPLICE_F_MORE`, which sets `MSG_MORE` on the socket and would hold back small replies.
    static let flags: UInt32 = cl_splice_flags_move_nonblock()

    /// `splice(2)` between a socket and a pipe (either way round), non-blocking: bytes moved,
    /// 0 at end of stream, nil when it would block on either end.
    @inline(__always)
    static func move(from source: Int32, to destination: Int32, count: Int) throws(Errno) -> Int? {
        while true {
            let n = cl_splice(source, destination, count, flags)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw Errno(rawValue: e)
        }
    }

    /// `pipe2(O_NONBLOCK | O_CLOEXEC)`, then `F_SETPIPE_SZ` to `size` when it is not zero
    /// (best effort: an unprivileged process over `pipe-user-pages-soft` gets what it gets),
    /// and `F_GETPIPE_SZ` to learn the capacity the kernel really gave.
    static func makePipe(size: Int) throws(Errno) -> PipePair {
        var fds: (Int32, Int32) = (-1, -1)
        let rc = withUnsafeMutableBytes(of: &fds) { cl_pipe2_nonblock($0.baseAddress!.assumingMemoryBound(to: Int32.self)) }
        guard rc == 0 else { throw Errno(rawValue: errno) }
        if size > 0 { _ = cl_set_pipe_size(fds.1, Int32(size)) }
        let capacity = Int(cl_get_pipe_size(fds.1))
        return PipePair(readEnd: fds.0, writeEnd: fds.1, capacity: capacity > 0 ? capacity : 65536)
    }
}

/// The two ends of one pipe, as plain descriptors, plus the capacity the kernel granted.
struct PipePair {
    var readEnd: Int32
    var writeEnd: Int32
    var capacity: Int

    static let none = PipePair(readEnd: -1, writeEnd: -1, capacity: 0)

    var isOpen: Bool { readEnd >= 0 }

    /// Closes both ends.
    func close() {
        SocketCalls.close(readEnd)
        SocketCalls.close(writeEnd)
    }
}
