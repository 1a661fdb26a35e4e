#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Logging
import Synchronization
import SystemPackage

/// Why a running convey does not hand its listeners over (sent to the asker, who binds beside).
struct HandoverRefusal: Error {
    var reason: String
}

/// The running convey's side of a listener handover (see `ListenerHandover`): a thread that
/// answers on the abstract socket named for the configuration file, with copies of the
/// listening sockets its loops hold.
///
/// A convey started by a takeover gets the channel's socket with the listeners and answers on
/// it: the name is never free between two conveys, so no other process can take it then. One
/// that got none binds the name, waiting while another process holds it (looking every
/// 200 ms).
final class HandoverServer: Sendable {
    /// One frontend address's listening sockets: copies (`dup`) the server closes once sent.
    typealias Offer = (address: Endpoint, fds: [Int32])

    let name: String
    private let logger: Logger
    private let offers: @Sendable () throws(HandoverRefusal) -> [Offer]
    private let drained: @Sendable () -> [ServerID]
    private let handedOver: @Sendable (Int32) -> Void
    /// The channel's socket a takeover received with the listeners, or the one `start` bound.
    private let inherited: Mutex<UnixMessageSocket?>
    /// Started by a takeover: a name in use is the replaced convey's (no warning).
    private let replacing: Bool
    private let stopped = Atomic<Bool>(false)
    /// `start` bound the name itself (the socket waiting in `inherited` is not a takeover's).
    private let boundAtStart = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)
    /// The connection of the last convey this one handed its listeners to that asked for the
    /// counters at exit (`ListenerHandover.countersRequest`).
    private let successor = Mutex<UnixMessageSocket?>(nil)

    /// `offers` is called for each request, off the loops, and returns the copies to send.
    init(name: String, logger: Logger, inherited: UnixMessageSocket? = nil, replacing: Bool = false,
         drained: @escaping @Sendable () -> [ServerID] = { [] },
         handedOver: @escaping @Sendable (Int32) -> Void = { _ in },
         offers: @escaping @Sendable () throws(HandoverRefusal) -> [Offer]) {
        self.drained = drained
        self.handedOver = handedOver
        self.name = name
        self.logger = logger
        self.inherited = Mutex(inherited)
        self.replacing = replacing
        self.offers = offers
    }

    /// Binds the name at once where it is free (so that a convey that listens also answers
    /// takeovers), then starts the thread that answers (and binds it later where it was held).
    func start() {
        if inherited.withLock({ $0 == nil }), let socket = try? UnixMessageSocket.listening(on: name) {
            inherited.withLock { $0 = socket }
            boundAtStart.store(true, ordering: .relaxed)
        }
        let started = LoopThread.start(cpu: nil) { [self] in
            run()
            finished.store(true, ordering: .releasing)
        }
        if !started {
            finished.store(true, ordering: .releasing)
            inherited.withLock { $0 = nil }
            logger.warning("takeover: could not start the handover thread: a later --takeover binds beside this convey")
        }
    }

    /// Hands `counters` (this convey's final counts, read once its loops stopped) to the convey
    /// that took its listeners, if that one asked; quietly nothing otherwise. Call it after
    /// `stop()`, so that no takeover being answered asks for them afterwards.
    func handCountersOver(_ counters: CarriedCounters) {
        guard let connection = successor.withLock({ s -> UnixMessageSocket? in defer { s = nil }; return s }) else { return }
        do throws(Errno) {
            let file = try MemoryFile.holding(counters.encoded(), name: "convey-counters")
            defer { try? file.close() }
            try connection.send(Array("counters".utf8), descriptors: [file.rawValue])
            logger.info("takeover: handed this convey's counters to the convey that took its listeners")
        } catch {
            logger.warning("takeover: cannot hand this convey's counters to the convey that took its listeners (\(error): it has stopped, or was replaced in turn): they are not carried on")
        }
    }

    /// Stops answering: the thread lets go of the name within 200 ms, or once it has answered
    /// a request in progress (not waited for here).
    func signalStop() { stopped.store(true, ordering: .relaxed) }

    /// Stops answering and waits for the thread (the name is free once this returns, unless a
    /// takeover holds the channel's socket too).
    func stop() {
        signalStop()
        while !finished.load(ordering: .acquiring) { usleep(1000) }
    }

    private var isStopped: Bool { stopped.load(ordering: .relaxed) }

    private func run() {
        let socket: UnixMessageSocket
        if let received = inherited.withLock({ s -> UnixMessageSocket? in defer { s = nil }; return s }) {
            socket = received
            if !boundAtStart.load(ordering: .relaxed) {
                logger.info("takeover: answering takeovers at @\(name) (the channel came with the listeners)")
            }
        } else {
            guard let bound = bind() else { return }
            socket = bound
        }
        var lastRefusalLogged: ContinuousClock.Instant?
        while !isStopped {
            // A blocking accept would not wake for a stop: look every 200 ms.
            guard socket.waitForConnection(timeout: .milliseconds(200)), !isStopped else { continue }
            let connection: UnixMessageSocket
            do { connection = try socket.accept(timeout: .seconds(1)) } catch {
                if error == .tooManyOpenFiles || error == .noBufferSpace || error == .noMemory { usleep(100_000) }
                continue
            }
            answer(connection, channel: socket, lastRefusalLogged: &lastRefusalLogged)
        }
    }

    /// Binds the name, waiting while another process (the replaced convey) holds it.
    private func bind() -> UnixMessageSocket? {
        var waited = false
        while true {
            do {
                let socket = try UnixMessageSocket.listening(on: name)
                if waited { logger.info("takeover: answering takeovers at @\(name) (the process holding it let go)") }
                return socket
            } catch .addressInUse {
                if !waited {
                    if replacing {
                        logger.info("takeover: @\(name) is still the replaced convey's: this one answers takeovers once it lets go")
                    } else {
                        logger.warning("takeover: @\(name) is held by another process: until it lets go, a --takeover of this convey binds beside it instead of taking its listeners")
                    }
                    waited = true
                }
                for _ in 0..<20 {
                    if isStopped { return nil }
                    usleep(10_000)
                }
            } catch {
                logger.warning("takeover: cannot listen on @\(name): \(error); a later --takeover binds beside this convey instead of taking its listeners")
                return nil
            }
        }
    }

    private func answer(_ connection: UnixMessageSocket, channel: UnixMessageSocket, lastRefusalLogged: inout ContinuousClock.Instant?) {
        guard let peer = try? connection.peer() else { return }
        // The request is read first in every case: closing with it unread would reset the
        // peer before it reads the answer.
        let request = try? connection.receive()
        for fd in request?.descriptors ?? [] { _ = Glibc.close(fd) }
        func refuse(_ reason: String) {
            try? connection.send(Array("refused \(reason)".utf8))
            // Anyone may knock: at most one warning per 10 s.
            let now = ContinuousClock.now
            if let last = lastRefusalLogged, now - last < .seconds(10) { return }
            lastRefusalLogged = now
            logger.warning("takeover: refused to hand the listeners to pid \(peer.pid): \(reason)")
        }
        // The same user only: the kernel lets only the same user share a port anyway.
        let uid = geteuid()
        guard peer.uid == uid else {
            refuse("it runs as user \(peer.uid), the running convey as \(uid) (run the takeover as the same user)")
            return
        }
        guard let request, !(request.bytes.isEmpty && request.descriptors.isEmpty) else {
            logger.info("takeover: pid \(peer.pid) connected to @\(name) and closed without asking")
            return
        }
        guard request.descriptors.isEmpty,
              String(decoding: request.bytes, as: UTF8.self) == ListenerHandover.greeting else {
            refuse("unknown request (a newer or older convey?)")
            return
        }
        let offered: [Offer]
        do throws(HandoverRefusal) { offered = try offers() } catch {
            refuse(error.reason)
            return
        }
        defer { for offer in offered { for fd in offer.fds { _ = Glibc.close(fd) } } }
        do {
            for offer in offered {
                var rest = offer.fds[...]
                while !rest.isEmpty {
                    let chunk = rest.prefix(UnixMessageSocket.maxDescriptors)
                    try connection.send(Array("listeners \(offer.address)".utf8), descriptors: Array(chunk))
                    rest = rest.dropFirst(chunk.count)
                }
            }
            for id in drained() { try connection.send(Array("drained\n\(id.pool)\n\(id.name)".utf8)) }
            try connection.send(Array("handover-socket".utf8), descriptors: [channel.fd])
            try connection.send(Array("done \(getpid())".utf8))
        } catch {
            logger.warning("takeover: handing the listeners to pid \(peer.pid) failed: \(error)")
            return
        }
        // A convey that asks for the counters asks at once; an older one closes (an empty read).
        if let follow = try? connection.receive() {
            for fd in follow.descriptors { _ = Glibc.close(fd) }
            if String(decoding: follow.bytes, as: UTF8.self) == ListenerHandover.countersRequest,
               (try? connection.send(Array(ListenerHandover.countersPromise.utf8))) != nil {
                // One successor's: a later takeover's replaces it (only one may add them up).
                successor.withLock { $0 = connection }
            }
        }
        let sockets = offered.reduce(0) { $0 + $1.fds.count }
        let addresses = offered.map { "\($0.address)" }.joined(separator: ", ")
        logger.notice("takeover: handed \(sockets) listening socket(s) (\(addresses.isEmpty ? "none" : addresses)) to the convey replacing this one (pid \(peer.pid)); this one goes on accepting until it is stopped")
        handedOver(peer.pid)
    }
}
