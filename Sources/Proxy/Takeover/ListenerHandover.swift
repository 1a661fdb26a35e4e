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
/// `socketName(forConfig:)`). Each side trusts only a peer of its own user (the kernel lets
/// only the same user share a port anyway); the taker also checks that each socket it gets
/// was made by that user in its own network namespace (an abstract name can be bound by
/// anyone: a squatter must not be able to hand over sockets of its own). One exchange:
/// - the new convey sends `greeting`;
/// - the old one answers with one `listeners <address>` message per frontend address (port
///   0 excluded), carrying up to `UnixMessageSocket.maxDescriptors` of its sockets (one per
///   address today, shared by its loops; an older release sent one per loop, in more
///   messages for the same address past that maximum); then one `drained` message per
///   server the operator drained at runtime (`drained\nPOOL\nNAME`); then `handover-socket` carrying
///   the listening socket of this very channel, so that the name passes to the new convey
///   without ever being free; then `done <pid of the convey answering>`. Or, instead,
///   `refused <reason>`: another user, an unknown request, a convey already stopping, or not
///   every loop could copy its listeners (a partial set would leave sockets that close with
///   the old convey).
/// - the new convey then sends `countersRequest`; the old one answers `countersPromise` and
///   keeps the connection, and when its last connection has ended and it stops, sends
///   `counters` with a memory file holding its final counts (`CarriedCounters`), which the
///   new one adds to its own. Then, not at the handover, because both serve clients until the
///   old one stops, and only the old one answers on the stats port until then. (A convey from
///   before 2026-12-08 closes the connection after `done` instead of answering, and the new
///   one's counts start afresh.)
enum ListenerHandover {
    static let greeting = "convey-handover 1"
    /// The new convey asks for the old one's counters at its exit (see above).
    static let countersRequest = "counters at exit?"
    /// The old convey's answer: it will send them.
    static let countersPromise = "counters at exit"

    /// The most descriptors a takeover accepts in one exchange (1024 loops of a few frontends).
    static let maxDescriptors = 16_384

    /// The abstract socket name for the convey running `configPath`, made absolute (symbolic
    /// links are not resolved: a link swapped to a new release's file keeps the name): a
    /// takeover finds the convey to replace by the file both are started with.
    static func socketName(forConfig configPath: String) -> String {
        var absolute = configPath
        if !configPath.hasPrefix("/") {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            if getcwd(&buffer, buffer.count) != nil {
                absolute = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/" + configPath
            }
        }
        let parts = absolute.split(separator: "/").filter { $0 != "." }
        let normalized = "/" + parts.joined(separator: "/")
        let name = "convey-handover:" + normalized
        // An abstract name holds 107 bytes after its leading NUL: a longer path (with some
        // margin) is named by its hash.
        guard name.utf8.count > 100 else { return name }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in normalized.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return "convey-handover:#" + String(hash, radix: 16)
    }

    /// Asks the convey answering at `name` for its listening sockets, and with `counters` for
    /// its counters at exit (the connection is then kept in `HandedListeners.counterChannel`).
    static func receive(from name: String, counters: Bool = false, timeout: Duration = .seconds(5)) throws(HandoverError) -> HandedListeners {
        let socket: UnixMessageSocket
        do { socket = try UnixMessageSocket.connected(to: name, timeout: timeout) } catch {
            if error == .connectionRefused || error == .noSuchFileOrDirectory { throw .nobodyThere(name: name) }
            throw .failed(name: name, "connect: \(error)")
        }
        guard let peer = try? socket.peer() else { throw .failed(name: name, "cannot tell who answers there") }
        let pid = peer.pid
        let uid = geteuid()
        guard peer.uid == uid else { throw .untrusted(name: name, pid: pid, uid: peer.uid) }
        var handed = HandedListeners(pid: pid, owner: peer.uid, networkNamespace: socket.networkNamespaceCookie)
        let deadline = ContinuousClock.now + timeout
        do {
            try socket.send(Array(greeting.utf8))
            while true {
                let message = try socket.receive()
                let text = String(decoding: message.bytes, as: UTF8.self)
                if text.hasPrefix("done"), message.descriptors.isEmpty {
                    // The pid of the convey that answered (the channel's creator may be an earlier one).
                    if let answering = Int32(text.dropFirst(5)) { handed.pid = answering }
                    if counters { handed.counterChannel = askForCounters(on: socket) }
                    return handed
                }
                if ContinuousClock.now > deadline || handed.count + message.descriptors.count > maxDescriptors {
                    for fd in message.descriptors { _ = Glibc.close(fd) }
                    handed.closeAll()
                    throw HandoverError.failed(name: name, "the exchange with pid \(pid) passed \(timeout) or \(maxDescriptors) descriptors")
                }
                if text.hasPrefix("listeners "), let address = try? Endpoint(parsing: String(text.dropFirst(10))) {
                    handed.byAddress[address, default: []] += message.descriptors
                    continue
                }
                if text.hasPrefix("drained\n"), message.descriptors.isEmpty {
                    let parts = text.split(separator: "\n", omittingEmptySubsequences: false)
                    if parts.count == 3 { handed.drained.append(ServerID(pool: String(parts[1]), name: String(parts[2]))) }
                    continue
                }
                if text == "handover-socket", message.descriptors.count == 1, handed.channel == nil {
                    handed.channel = message.descriptors[0]
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

extension ListenerHandover {
    /// Asks the convey that handed its listeners for its counters at exit: the connection
    /// when it promised them, nil when it did not answer so within a second (an older convey,
    /// which closes after `done`).
    static func askForCounters(on socket: UnixMessageSocket) -> UnixMessageSocket? {
        guard (try? socket.send(Array(countersRequest.utf8))) != nil,
              socket.waitForMessage(timeout: .seconds(1)), let answer = try? socket.receive() else { return nil }
        for fd in answer.descriptors { _ = Glibc.close(fd) }
        return String(decoding: answer.bytes, as: UTF8.self) == countersPromise ? socket : nil
    }
}

/// The listening sockets a takeover received, by the frontend address they were configured
/// for, and the handover channel's own socket; whatever is not taken must be closed
/// (`closeAll`).
struct HandedListeners {
    /// The convey that answered (from its `done`; before that, the channel's creator, which
    /// may be an earlier convey), and the user the sockets must belong to.
    var pid: Int32
    var owner: UInt32
    /// The network namespace the exchange ran in: each socket must be in it (0: unknown).
    var networkNamespace: UInt64
    var byAddress: [Endpoint: [Int32]] = [:]
    /// The listening socket of the handover channel (see `ListenerHandover`).
    var channel: Int32?
    /// The servers the operator had drained in the convey that handed them.
    var drained: [ServerID] = []
    /// The exchange's connection, kept open for the old convey's counters at its exit (nil:
    /// they were not asked for, or not promised).
    var counterChannel: UnixMessageSocket?

    init(pid: Int32 = 0, owner: UInt32 = 0, networkNamespace: UInt64 = 0) {
        self.pid = pid
        self.owner = owner
        self.networkNamespace = networkNamespace
    }

    var count: Int { byAddress.values.reduce(0) { $0 + $1.count } }

    /// The sockets for `address`, now the caller's.
    mutating func take(_ address: Endpoint) -> [Int32] {
        byAddress.removeValue(forKey: address) ?? []
    }

    /// The channel's socket, now the caller's.
    mutating func takeChannel() -> Int32? {
        defer { channel = nil }
        return channel
    }

    mutating func closeAll() {
        for fds in byAddress.values { for fd in fds { _ = Glibc.close(fd) } }
        byAddress = [:]
        if let channel { _ = Glibc.close(channel) }
        channel = nil
    }
}

/// Why a takeover got no listeners from the running convey (it then binds beside it).
enum HandoverError: Error, CustomStringConvertible {
    /// No convey runs this configuration file in this network namespace (or one older than
    /// the handover).
    case nobodyThere(name: String)
    /// The running convey would not hand them (another user, an unknown request, stopping,
    /// or not every loop answered).
    case refused(pid: Int32, String)
    /// A process of another user holds the name: nothing is taken from it.
    case untrusted(name: String, pid: Int32, uid: UInt32)
    case failed(name: String, String)

    var description: String {
        switch self {
        case .nobodyThere(let name): return "no convey answers at @\(name)"
        case .refused(_, let reason): return "the running convey refused: \(reason)"
        case .untrusted(let name, let pid, let uid):
            return "@\(name) is answered by pid \(pid) of user \(uid), not this convey's user: nothing taken from it (a takeover runs as the user of the convey it replaces)"
        case .failed(let name, let reason): return "the handover at @\(name) failed: \(reason)"
        }
    }
}
