#if canImport(Glibc)
import Glibc
#endif
import CLinux
import SystemPackage

/// One epoll instance and the buffer its events are read into; owned by one event loop.
///
/// Every descriptor is registered once, edge-triggered, for everything the loop may want
/// (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`), so the data path never calls `epoll_ctl`
/// to change interest: backpressure is decided by what the loop attempts, not by masks.
final class Epoll {
    let fd: Int32
    private let events: UnsafeMutableRawPointer
    private let eventSize: Int
    let capacity: Int

    /// The full edge-triggered interest set of a proxied socket.
    static let socketInterest: UInt32 = CL_EPOLLIN | CL_EPOLLOUT | CL_EPOLLRDHUP | CL_EPOLLET
    /// Readability only, edge-triggered: the wake-up eventfd.
    static let readInterest: UInt32 = CL_EPOLLIN | CL_EPOLLET
    /// A listening socket shared by every loop: readability, edge-triggered, and
    /// `EPOLLEXCLUSIVE`, so a new client wakes one loop waiting in `epoll_wait` rather than all
    /// of them (loops busy at that moment see it at their next wait). See `Listener`.
    static let listenerInterest: UInt32 = CL_EPOLLIN | CL_EPOLLET | CL_EPOLLEXCLUSIVE

    /// `epoll_create1(EPOLL_CLOEXEC)` with room for `capacity` events per wait.
    init(capacity: Int = 256) throws(Errno) {
        let fd = cl_epoll_create()
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        self.fd = fd
        self.capacity = capacity
        eventSize = cl_epoll_event_size()
        events = UnsafeMutableRawPointer.allocate(byteCount: eventSize * capacity, alignment: 16)
    }

    deinit {
        events.deallocate()
        _ = Glibc.close(fd)
    }

    /// `epoll_ctl(EPOLL_CTL_ADD)`.
    func add(_ descriptor: Int32, events: UInt32, token: UInt64) throws(Errno) {
        guard cl_epoll_ctl(fd, EPOLL_CTL_ADD, descriptor, events, token) == 0 else { throw Errno(rawValue: errno) }
    }

    /// `epoll_ctl(EPOLL_CTL_DEL)`: for listeners, whose socket other descriptors share (closing
    /// one descriptor does not remove the registration), and which a loop takes out of its
    /// wake-ups while it cannot accept.
    func remove(_ descriptor: Int32) {
        _ = cl_epoll_ctl(fd, EPOLL_CTL_DEL, descriptor, 0, 0)
    }

    /// `epoll_wait(2)`: the number of ready events (0 on timeout or `EINTR`).
    @inline(__always)
    func wait(timeoutMilliseconds: Int32) -> Int {
        let n = cl_epoll_wait(fd, events.assumingMemoryBound(to: epoll_event.self), Int32(capacity), timeoutMilliseconds)
        return n > 0 ? Int(n) : 0
    }

    /// The ready-event bits and token of event `index` of the last wait.
    @inline(__always)
    func event(_ index: Int) -> (events: UInt32, token: UInt64) {
        let p = (events + index * eventSize).assumingMemoryBound(to: epoll_event.self)
        return (cl_epoll_event_events(p), cl_epoll_event_data(p))
    }
}
