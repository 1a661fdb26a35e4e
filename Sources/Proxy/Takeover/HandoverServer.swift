#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Logging
import Synchronization
import SystemPackage

/// The running convey's side of a listener handover (see `ListenerHandover`): a thread that
/// answers on the abstract socket named for the configuration file, with copies of the
/// listening sockets its loops hold.
///
/// A convey started by a takeover finds the name still held by the one it replaces: it binds
/// it as soon as that one exits (looking every 200 ms), so that it can be replaced in turn.
final class HandoverServer: Sendable {
    /// One frontend address's listening sockets: copies (`dup`) the server closes once sent.
    typealias Offer = (address: Endpoint, fds: [Int32])

    let name: String
    private let logger: Logger
    private let offers: @Sendable () -> [Offer]
    private let state = Mutex<(socket: UnixMessageSocket?, stopped: Bool)>((nil, false))
    private let finished = Atomic<Bool>(false)

    /// `offers` is called for each request, off the loops, and returns the copies to send.
    init(name: String, logger: Logger, offers: @escaping @Sendable () -> [Offer]) {
        self.name = name
        self.logger = logger
        self.offers = offers
    }

    /// Starts the thread; false when it could not be started (takeovers then bind beside).
    @discardableResult
    func start() -> Bool {
        let started = LoopThread.start(cpu: nil) { [self] in
            run()
            finished.store(true, ordering: .releasing)
        }
        if !started {
            finished.store(true, ordering: .releasing)
            logger.warning("takeover: could not start the handover thread: a later --takeover binds beside this convey")
        }
        return started
    }

    /// Stops answering: the thread lets go of the name within 200 ms (not waited for here).
    func signalStop() {
        state.withLock { s in
            s.stopped = true
            s.socket = nil
        }
    }

    /// Stops answering and waits for the thread (the name is free once this returns).
    func stop() {
        signalStop()
        while !finished.load(ordering: .acquiring) { usleep(1000) }
    }

    private var stopped: Bool { state.withLock { $0.stopped } }

    private func run() {
        guard let socket = bind() else { return }
        while !stopped {
            // A blocking accept would not wake for a stop: look every 200 ms.
            guard socket.waitForConnection(timeout: .milliseconds(200)), !stopped else { continue }
            let connection: UnixMessageSocket
            do { connection = try socket.accept(timeout: .seconds(2)) } catch {
                if stopped { return }
                if error == .tooManyOpenFiles || error == .noBufferSpace || error == .noMemory { usleep(100_000) }
                continue
            }
            answer(connection)
        }
    }

    /// Binds the name, waiting while the convey this one replaced still holds it.
    private func bind() -> UnixMessageSocket? {
        var waited = false
        while true {
            do {
                let socket = try UnixMessageSocket.listening(on: name)
                let kept = state.withLock { s -> Bool in
                    guard !s.stopped else { return false }
                    s.socket = socket
                    return true
                }
                if waited { logger.info("takeover: answering takeovers at @\(name) (the replaced convey has exited)") }
                return kept ? socket : nil
            } catch .addressInUse {
                if !waited {
                    logger.info("takeover: @\(name) is still the replaced convey's: this one answers takeovers once it exits")
                    waited = true
                }
                for _ in 0..<20 {
                    if stopped { return nil }
                    usleep(10_000)
                }
            } catch {
                logger.warning("takeover: cannot listen on @\(name): \(error); a later --takeover binds beside this convey instead of taking its listeners")
                return nil
            }
        }
    }

    private func answer(_ connection: UnixMessageSocket) {
        guard let peer = try? connection.peer() else { return }
        // The request is read first in every case: closing with it unread would reset the
        // peer before it reads the answer.
        let request = try? connection.receive()
        for fd in request?.descriptors ?? [] { _ = Glibc.close(fd) }
        let uid = geteuid()
        guard peer.uid == uid || peer.uid == 0 else {
            logger.warning("takeover: refused to hand the listeners to pid \(peer.pid): it runs as user \(peer.uid), this convey as \(uid)")
            try? connection.send(Array("refused it runs as user \(peer.uid), the running convey as \(uid) (run the takeover as the same user or root)".utf8))
            return
        }
        guard let request, request.descriptors.isEmpty,
              String(decoding: request.bytes, as: UTF8.self) == ListenerHandover.greeting else {
            try? connection.send(Array("refused unknown request (a newer or older convey?)".utf8))
            return
        }
        let offered = offers()
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
            try connection.send(Array("done".utf8))
        } catch {
            logger.warning("takeover: handing the listeners to pid \(peer.pid) failed: \(error)")
            return
        }
        let sockets = offered.reduce(0) { $0 + $1.fds.count }
        let addresses = offered.map { "\($0.address)" }.joined(separator: ", ")
        logger.notice("takeover: handed \(sockets) listening socket(s) (\(addresses.isEmpty ? "none" : addresses)) to the convey replacing this one (pid \(peer.pid)); this one goes on accepting until it is stopped")
    }
}
