#if canImport(Glibc)
import Glibc
#endif
import Balancer
import CLinux
import SystemPackage

/// One convey per interface: a listening unix socket in the abstract namespace,
/// `@convey/xdp/<ifindex>`, held for as long as the steering program is attached.
///
/// Why: a steering program on the interface is either a running convey's or one left behind by
/// a killed one, and only the second may be replaced. The kernel frees the name when its holder
/// ends, however it ends, so "nobody holds the name" is exactly "the program is stale". The
/// abstract namespace belongs to the network namespace (interface indexes repeat across
/// namespaces), needs no file, no directory and no privilege, so no convey can fail to claim
/// and then replace a running one's program; a second one learns the holder's pid from the
/// socket's peer credentials.
final class InterfaceClaim {
    private let descriptor: Int32

    /// Claims `interface`, or throws `.interfaceInUse` naming the process that holds it.
    static func acquire(_ interface: NetworkInterface) throws(XSKError) -> InterfaceClaim {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(operation: "socket(AF_UNIX)", subject: interface.name, errno: .current) }
        let address: UnixSocketAddress
        do throws(Errno) {
            address = try UnixSocketAddress(abstract: name(interface))
        } catch {
            close(fd)
            throw .system(operation: "bind(@\(name(interface)))", subject: interface.name, errno: error)
        }
        let bound = address.withSockaddr { bind(fd, $0, $1) }
        guard bound == 0, listen(fd, 4) == 0 else {
            let error = Errno.current
            close(fd)
            guard error == .addressInUse else {
                throw .system(operation: "bind(@\(name(interface)))", subject: interface.name, errno: error)
            }
            throw .interfaceInUse(interface: interface.name, pid: holder(address))
        }
        return InterfaceClaim(fd)
    }

    private init(_ descriptor: Int32) { self.descriptor = descriptor }

    deinit { close(descriptor) }

    static func name(_ interface: NetworkInterface) -> String { "convey/xdp/\(interface.index)" }

    /// The pid of the process holding the claim at `address` (its socket's peer credentials),
    /// if it answers.
    private static func holder(_ address: UnixSocketAddress) -> Int32? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard address.withSockaddr({ connect(fd, $0, $1) }) == 0 else { return nil }
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (Glibc's module hides it behind _GNU_SOURCE).
        var credentials: (pid: Int32, uid: UInt32, gid: UInt32) = (0, 0, 0)
        var size = socklen_t(MemoryLayout.size(ofValue: credentials))
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) == 0, credentials.pid > 0 else { return nil }
        return credentials.pid
    }
}
