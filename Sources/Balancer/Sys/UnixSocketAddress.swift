#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// A Unix-domain socket address (`sockaddr_un`) with its exact length: a file path, or a name
/// in the network namespace's abstract namespace (a leading NUL, no terminator). One builder
/// for the takeover's handover channel, the interface claim and systemd's notify socket.
public struct UnixSocketAddress: Sendable {
    private var storage = sockaddr_un()
    /// The length `bind`, `connect` and `sendto` take.
    public let length: socklen_t

    /// The abstract `name`; `ENAMETOOLONG` past the 107 bytes `sun_path` holds after the NUL.
    public init(abstract name: String) throws(Errno) {
        try self.init(bytes: [0] + Array(name.utf8), terminated: false)
    }

    /// `path` as systemd writes `$NOTIFY_SOCKET`: a file path, or with a leading `@` an
    /// abstract name; `ENAMETOOLONG` when it does not fit.
    public init(notifySocket path: String) throws(Errno) {
        if path.hasPrefix("@") {
            try self.init(abstract: String(path.dropFirst()))
        } else {
            try self.init(bytes: Array(path.utf8), terminated: true)
        }
    }

    private init(bytes: [UInt8], terminated: Bool) throws(Errno) {
        storage.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: storage.sun_path)
        guard bytes.count + (terminated ? 1 : 0) <= capacity else { throw Errno.fileNameTooLong }
        withUnsafeMutableBytes(of: &storage.sun_path) { $0.copyBytes(from: bytes) }
        length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count + (terminated ? 1 : 0))
    }

    /// Calls `body` with the address as the socket calls take it.
    public func withSockaddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        var address = storage
        return try withUnsafePointer(to: &address) { pointer throws(E) in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { p throws(E) in try body(p, length) }
        }
    }
}
