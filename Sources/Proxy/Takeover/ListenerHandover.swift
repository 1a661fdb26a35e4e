#if canImport(Glibc)
import Glibc
#endif
import Balancer
import SystemPackage

/// A takeover's listener handover: the running convey passes its listening sockets to the one
/// replacing it (`--takeover`), so that no listening socket closes during the change.
///
/// Without it, the new convey binds beside the old (`SO_REUSEPORT`) and the old one closes its
/// listeners when stopped: a client whose handshake completes at that moment is reset unless
/// the kernel migrates it (`net.ipv4.tcp_migrate_req`, root only, and racy when two of the old
/// process's listeners close at once). With the sockets themselves handed over, both processes
/// accept from the same queues until the old one stops; its close then only drops its own
/// reference, and the kernel never sees a listener go. HAProxy does the same with
/// `expose-fd listeners` and `-x`; here every proxy-mode convey offers it, with no setting.
///
/// The channel is an abstract Unix socket named after the configuration file (see
/// `socketName(forConfig:)`), answered only for the same user or root. One exchange:
/// - the new convey sends `greeting`;
/// - the old one answers with one `listeners <address>` message per frontend address (port
///   0 excluded), carrying up to `UnixMessageSocket.maxDescriptors` of its sockets (more
///   messages for the same address when it has more loops), then `done`; or with
///   `refused <reason>`.
enum ListenerHandover {
    static let greeting = "convey-handover 1"

    /// The abstract socket name for the convey running `configPath` (made absolute and
    /// resolved): a takeover finds the convey to replace by the file both run.
    static func socketName(forConfig configPath: String) -> String {
        let resolved = configPath.withCString { path -> String in
            guard let real = realpath(path, nil) else { return configPath }
            defer { free(real) }
            return String(cString: real)
        }
        let name = "convey-handover:" + resolved
        // An abstract name holds 107 bytes: a longer path is named by its hash.
        guard name.utf8.count > 100 else { return name }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in resolved.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return "convey-handover:#" + String(hash, radix: 16)
    }

    /// Asks the convey answering at `name` for its listening sockets.
    static func receive(from name: String, timeout: Duration = .seconds(5)) throws(HandoverError) -> HandedListeners {
        let socket: UnixMessageSocket
        do { socket = try UnixMessageSocket.connected(to: name, timeout: timeout) } catch {
            if error == .connectionRefused || error == .noSuchFileOrDirectory { throw .nobodyThere(name: name) }
            throw .failed(name: name, "connect: \(error)")
        }
        let pid = (try? socket.peer().pid) ?? 0
        var handed = HandedListeners(pid: pid)
        do {
            try socket.send(Array(greeting.utf8))
            while true {
                let message = try socket.receive()
                let text = String(decoding: message.bytes, as: UTF8.self)
                if text == "done", message.descriptors.isEmpty { return handed }
                if text.hasPrefix("listeners "), let address = try? Endpoint(parsing: String(text.dropFirst(10))) {
                    handed.byAddress[address, default: []] += message.descriptors
                    continue
                }
                for fd in message.descriptors { _ = Glibc.close(fd) }
                handed.closeAll()
                if text.hasPrefix("refused ") { throw HandoverError.refused(pid: pid, String(text.dropFirst(8))) }
                if message.bytes.isEmpty { throw HandoverError.failed(name: name, "the convey (pid \(pid)) closed the exchange unfinished") }
                throw HandoverError.failed(name: name, "unexpected message '\(text.prefix(80))' from pid \(pid)")
            }
        } catch let error as HandoverError {
            throw error
        } catch {
            handed.closeAll()
            throw .failed(name: name, "\(error) (pid \(pid))")
        }
    }
}

/// The listening sockets a takeover received, by the frontend address they were configured
/// for; whatever is not taken must be closed (`closeAll`).
struct HandedListeners {
    /// The convey that handed them.
    var pid: Int32
    var byAddress: [Endpoint: [Int32]] = [:]

    var count: Int { byAddress.values.reduce(0) { $0 + $1.count } }

    /// The sockets for `address`, now the caller's.
    mutating func take(_ address: Endpoint) -> [Int32] {
        byAddress.removeValue(forKey: address) ?? []
    }

    mutating func closeAll() {
        for fds in byAddress.values { for fd in fds { _ = Glibc.close(fd) } }
        byAddress = [:]
    }
}

/// Why a takeover got no listeners from the running convey (it then binds beside it).
enum HandoverError: Error, CustomStringConvertible {
    /// No convey runs this configuration file in this network namespace (or one older than
    /// the handover).
    case nobodyThere(name: String)
    /// The running convey would not hand them (another user).
    case refused(pid: Int32, String)
    case failed(name: String, String)

    var description: String {
        switch self {
        case .nobodyThere(let name): return "no convey answers at @\(name)"
        case .refused(let pid, let reason): return "the running convey (pid \(pid)) refused: \(reason)"
        case .failed(let name, let reason): return "the handover at @\(name) failed: \(reason)"
        }
    }
}
