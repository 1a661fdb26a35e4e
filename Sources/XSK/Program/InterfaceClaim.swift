#if canImport(Glibc)
import Glibc
#endif
import Balancer
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
///
/// The claim is also where a takeover begins: `convey --takeover` connects to it
/// (`XDPTakeover`), and the running convey hands the claim itself over with its sockets.
final class InterfaceClaim: Sendable {
    /// The listening socket (`SOCK_SEQPACKET`, non-blocking).
    let socket: UnixMessageSocket

    /// Claims `interface`, or throws `.interfaceInUse` naming the process that holds it.
    static func acquire(_ interface: NetworkInterface) throws(XSKError) -> InterfaceClaim {
        do throws(Errno) {
            return InterfaceClaim(try UnixMessageSocket.listening(on: name(interface), backlog: 4))
        } catch {
            guard error == .addressInUse else {
                throw .system(operation: "bind(@\(name(interface)))", subject: interface.name, errno: error)
            }
            throw .interfaceInUse(interface: interface.name, pid: holder(interface))
        }
    }

    /// The claim of `interface` as the convey that held it handed it over (`fd`, which must be
    /// that listening socket; owned from now on), or nil.
    static func adopting(_ fd: Int32, for interface: NetworkInterface) -> InterfaceClaim? {
        UnixMessageSocket.adopting(fd, listeningOn: name(interface)).map(InterfaceClaim.init)
    }

    private init(_ socket: UnixMessageSocket) { self.socket = socket }

    static func name(_ interface: NetworkInterface) -> String { "convey/xdp/\(interface.index)" }

    /// The pid of the process holding the claim of `interface`, if it answers: asked (after a
    /// takeover the socket's credentials name the convey that first listened, which may be
    /// gone), else the socket's peer credentials.
    static func holder(_ interface: NetworkInterface) -> Int32? {
        guard let socket = try? UnixMessageSocket.connected(to: name(interface), timeout: .seconds(1)) else { return nil }
        if (try? socket.send(Array(pidRequest.utf8))) != nil, let answer = try? socket.receive() {
            for fd in answer.descriptors { close(fd) }
            let text = String(decoding: answer.bytes, as: UTF8.self)
            if text.hasPrefix("pid "), let pid = Int32(text.dropFirst(4)), pid > 0 { return pid }
        }
        guard let peer = try? socket.peer(), peer.pid > 0 else { return nil }
        return peer.pid
    }

    /// What `holder` asks; a running convey answers `pid N`.
    static let pidRequest = "pid?"
}
