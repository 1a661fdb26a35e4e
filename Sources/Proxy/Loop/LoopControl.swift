#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization

/// What the service shares with one event loop thread: requests in (drain, stop), a wake-up
/// eventfd, and the loop's live figures out (for `ProxyService.status()`).
final class LoopControl: Sendable {
    let index: Int
    /// eventfd the loop polls; written to wake it for a drain or stop request.
    let wakeFD: Int32
    let drainRequested = Atomic<Bool>(false)
    let stopRequested = Atomic<Bool>(false)

    let openConnections = Atomic<Int>(0)
    let acceptedTotal = Atomic<Int>(0)
    let pipesPooled = Atomic<Int>(0)
    let pipesInUse = Atomic<Int>(0)
    let copyFallbacks = Atomic<Int>(0)
    let draining = Atomic<Bool>(false)

    init(index: Int, wakeFD: Int32) {
        self.index = index
        self.wakeFD = wakeFD
    }

    deinit { _ = Glibc.close(wakeFD) }

    /// Stop accepting; let connections end, up to their pool's drain timeout.
    func requestDrain() {
        drainRequested.store(true, ordering: .releasing)
        wake()
    }

    /// Close everything now and return.
    func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        wake()
    }

    private func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }
}
