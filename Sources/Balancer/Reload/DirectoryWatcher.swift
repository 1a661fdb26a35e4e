import CLinux
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Watches one directory with inotify and reports that something in it changed.
///
/// The config file's directory is watched, not the file: editors save by writing a new file and
/// renaming it over the old one, and Kubernetes ConfigMaps swap a symlinked directory; a watch
/// on the file itself would go stale after the first such save. The watcher runs on its own
/// thread (a blocking `poll(2)` loop with a short timeout so `stop()` is prompt) and never
/// interprets events: the reload logic re-reads the file and compares contents.
public final class DirectoryWatcher: Sendable {
    private let fd: FileDescriptor
    private let stopped = StopFlag()

    /// Starts watching `directory`; `onChange` runs on the watcher's thread for each batch of events.
    public init(directory: String, onChange: @escaping @Sendable () -> Void) throws(Errno) {
        let raw = cl_inotify_init_nonblock()
        guard raw >= 0 else { throw Errno(rawValue: errno) }
        fd = FileDescriptor(rawValue: raw)
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB)
        guard inotify_add_watch(raw, directory, mask) >= 0 else {
            let e = Errno(rawValue: errno)
            try? fd.close()
            throw e
        }
        let fd = self.fd
        let stopped = self.stopped
        let thread = WatcherThread {
            var buffer = [UInt8](repeating: 0, count: 8192)
            while !stopped.isSet {
                var pfd = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
                let ready = poll(&pfd, 1, 200)
                if ready <= 0 { continue }
                var sawEvent = false
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(fd.rawValue, $0.baseAddress, $0.count) }
                    if n <= 0 { break }
                    sawEvent = true
                }
                if sawEvent && !stopped.isSet { onChange() }
            }
            try? fd.close()
        }
        thread.start()
    }

    /// Stops the thread and closes the inotify descriptor (within ~200 ms).
    public func stop() { stopped.set() }

    deinit { stop() }
}

/// A detached POSIX thread running one closure: the watcher must not occupy a thread of the
/// Swift concurrency pool with a blocking poll.
final class WatcherThread: Sendable {
    private let body: @Sendable () -> Void

    init(_ body: @escaping @Sendable () -> Void) { self.body = body }

    func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let me = Unmanaged<WatcherThread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, box)
        if rc == 0 { pthread_detach(thread) } else { Unmanaged<WatcherThread>.fromOpaque(box).release() }
    }
}

/// A one-way flag shared between an owner and its thread.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}
