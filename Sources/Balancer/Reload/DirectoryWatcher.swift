import CLinux
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One entry of the watched directory that changed, and how.
public struct DirectoryChange: Sendable, Equatable {
    /// The entry's name within the directory.
    public var name: String
    /// A writer closed it (`IN_CLOSE_WRITE`): its bytes are complete.
    public var written: Bool
    /// It was created (`IN_CREATE`): a new file may still be being written; a new symlink is whole.
    public var created: Bool

    public init(name: String, written: Bool = false, created: Bool = false) {
        self.name = name
        self.written = written
        self.created = created
    }
}

/// Watches one directory with inotify and reports which of its entries changed.
///
/// The config file's directory is watched, not the file: editors save by writing a new file and
/// renaming it over the old one, and Kubernetes ConfigMaps swap a symlinked directory; a watch
/// on the file itself would go stale after the first such save. The watcher runs on its own
/// thread (a blocking `poll(2)` loop with a short timeout so `stop()` is prompt) and reports
/// each batch of events by entry name; the reload logic decides which ones matter.
public final class DirectoryWatcher: Sendable {
    private let fd: FileDescriptor
    private let stopped = StopFlag()

    /// Starts watching `directory`; `onChange` runs on the watcher's thread for each batch of events.
    public init(directory: String, onChange: @escaping @Sendable ([DirectoryChange]) -> Void) throws(Errno) {
        let raw = cl_inotify_init_nonblock()
        guard raw >= 0 else { throw Errno(rawValue: errno) }
        fd = FileDescriptor(rawValue: raw)
        // Not IN_MODIFY: a file being written in place is read once its writer closes it. Not
        // IN_ATTRIB: a touch or chmod changes no bytes, and one during a slow write in place
        // would read the file half-written. Not IN_DELETE or IN_MOVED_FROM: a file gone has
        // nothing to apply, and a read soon after could catch its successor half-written
        // (`rm f; scp host:f .`); the successor is read when closed or renamed in.
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)
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
                var changes: [DirectoryChange] = []
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(fd.rawValue, $0.baseAddress, $0.count) }
                    if n <= 0 { break }
                    changes += Self.parse(buffer[..<n])
                }
                if !changes.isEmpty && !stopped.isSet { onChange(changes) }
            }
            try? fd.close()
        }
        thread.start()
    }

    /// Stops the thread and closes the inotify descriptor (within ~200 ms).
    public func stop() { stopped.set() }

    deinit { stop() }

    /// The events in one `read(2)` of an inotify descriptor: `struct inotify_event` records
    /// (wd, mask, cookie, len, then `len` bytes of NUL-padded name). An overflowed queue
    /// (`IN_Q_OVERFLOW`, no name) reports an empty name: something changed, unknown what.
    static func parse(_ bytes: ArraySlice<UInt8>) -> [DirectoryChange] {
        var changes: [DirectoryChange] = []
        var i = bytes.startIndex
        let header = 16
        func word(_ at: Int) -> UInt32 {
            UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
        }
        while i + header <= bytes.endIndex {
            let mask = word(i + 4)
            let length = Int(word(i + 12))
            let nameStart = i + header
            let nameEnd = min(nameStart + length, bytes.endIndex)
            let nameBytes = bytes[nameStart..<nameEnd].prefix { $0 != 0 }
            changes.append(DirectoryChange(name: String(decoding: nameBytes, as: UTF8.self),
                                           written: mask & UInt32(IN_CLOSE_WRITE) != 0,
                                           created: mask & UInt32(IN_CREATE) != 0))
            i = nameStart + length
        }
        return changes
    }
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
