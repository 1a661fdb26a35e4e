#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// Starts a body on a dedicated POSIX thread (not the Swift concurrency pool: an event loop
/// blocks in `epoll_wait` and must never hold a cooperative thread).
enum LoopThread {
    private final class Start {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Runs `body` on a new detached thread, pinned to `cpu` when given; false when the thread
    /// could not be created.
    static func start(cpu: Int?, _ body: @escaping @Sendable () -> Void) -> Bool {
        let start = Start {
            if let cpu { _ = cl_pin_thread_to_cpu(Int32(cpu)) }
            body()
        }
        let context = Unmanaged.passRetained(start).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let start = Unmanaged<Start>.fromOpaque(raw!).takeRetainedValue()
            start.body()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Start>.fromOpaque(context).release()
            return false
        }
        pthread_detach(thread)
        return true
    }
}
