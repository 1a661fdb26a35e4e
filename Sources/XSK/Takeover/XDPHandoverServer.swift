#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Logging
import Synchronization
import SystemPackage

/// A takeover of an AF_XDP data plane, the running convey's side (see `XDPTakeover` for the
/// exchange): a thread that answers on the interface's claim.
final class XDPHandoverServer: Sendable {
    /// What the server needs of the data plane.
    struct Plane: Sendable {
        var facts: @Sendable () -> XDPTakeoverFacts
        /// Each worker's AF_XDP socket and its queue, the workers running (sent before the pause).
        var sockets: @Sendable () -> [(queue: UInt32, fd: Int32)]
        /// Stops the workers and returns what to send: each worker's hand-over and forwarder's.
        var pause: @Sendable () -> [(sent: XSKWorkerHandover.Sent, forwarder: ForwarderHandover)]
        /// Starts the workers again (the takeover did not complete).
        var resume: @Sendable () -> Void
        /// The servers the operator drained at runtime (they stay drained in the newcomer).
        var drained: @Sendable () -> [ServerID]
        /// The frontends' and servers' counters with every worker's counts in, read once the
        /// workers are paused (`CarriedCounters`); nil when this convey keeps none to hand.
        var counters: (@Sendable () -> CarriedCounters)?
        /// The takeover completed: the newcomer (pid) owns the interface now.
        var handedOver: @Sendable (Int32) -> Void
        var program: SteeringProgram
    }

    private let plane: Plane
    private let logger: Logger
    private let stopped = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)
    /// Set once a takeover completed: the server answers nothing more.
    private let done = Atomic<Bool>(false)

    init(plane: Plane, logger: Logger) {
        self.plane = plane
        self.logger = logger
    }

    /// Starts the thread; false when it could not start (then no takeover is answered).
    func start() -> Bool {
        let body = ThreadBody { [self] in
            run()
            finished.store(true, ordering: .releasing)
        }
        let context = Unmanaged.passRetained(body).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<ThreadBody>.fromOpaque(context).release()
            finished.store(true, ordering: .releasing)
            logger.warning("takeover: cannot start the thread that answers takeovers (\(Errno(rawValue: rc))): convey --takeover cannot replace this one")
            return false
        }
        pthread_detach(thread)
        return true
    }

    /// Stops answering and waits for the thread (at most one answer in progress).
    func stop() {
        stopped.store(true, ordering: .relaxed)
        while !finished.load(ordering: .acquiring) { usleep(1000) }
    }

    private func run() {
        let socket = plane.program.claim.socket
        while !stopped.load(ordering: .relaxed) && !done.load(ordering: .relaxed) {
            guard socket.waitForConnection(timeout: .milliseconds(200)) else { continue }
            guard let connection = try? socket.accept(timeout: XDPTakeover.timeout) else { continue }
            answer(connection)
        }
    }

    private func answer(_ connection: UnixMessageSocket) {
        guard let peer = try? connection.peer() else { return }
        guard let request = try? connection.receive() else { return }
        XDPTakeover.close(request.descriptors)
        // A convey looking for the holder's pid asks (or, if older, closes without a word).
        guard !request.bytes.isEmpty else { return }
        if String(decoding: request.bytes, as: UTF8.self) == InterfaceClaim.pidRequest {
            try? connection.send(Array("pid \(getpid())".utf8))
            return
        }
        guard peer.uid == geteuid() else {
            try? connection.send(Array("refused it runs as user \(peer.uid), this convey as \(geteuid())".utf8))
            logger.warning("takeover: refused pid \(peer.pid): another user")
            return
        }
        guard String(decoding: request.bytes, as: UTF8.self) == XDPTakeover.greeting else {
            try? connection.send(Array("refused unknown request (a newer or older convey?)".utf8))
            logger.warning("takeover: refused pid \(peer.pid): unknown request")
            return
        }
        // Kept to put it back should the newcomer swap its own in and then fail. Without it (the
        // program could not be read back) the sockets are not offered before the pause: the
        // newcomer swaps while this convey waits paused for its answer, as with older conveys.
        let saved = SteeringProgram.attachedProgramFD(plane.program.interface, plane.program.attachMode)
        defer { if let saved { close(saved) } }
        var facts = plane.facts()
        facts.handsSocketsFirst = saved != nil
        facts.handsCounters = plane.counters != nil
        guard (try? connection.send(Array(facts.message.utf8))) != nil,
              var next = try? connection.receive() else { return }
        XDPTakeover.close(next.descriptors)
        if facts.handsSocketsFirst, String(decoding: next.bytes, as: UTF8.self) == XDPTakeover.socketsRequest {
            // The sockets and the claim while the workers forward on: the newcomer loads its
            // program with these sockets in its map and swaps it in before asking to pause,
            // which keeps the program load and the kernel's swap out of the pause.
            let sockets = plane.sockets()
            let text = "sockets " + sockets.map { "\($0.queue)" }.joined(separator: ",")
            do throws(Errno) {
                try connection.send(Array(text.utf8), descriptors: sockets.map(\.fd) + [plane.program.claim.socket.fd])
                next = try connection.receive()
                XDPTakeover.close(next.descriptors)
            } catch {
                goOn(after: "\(error)", peer: peer.pid, saved: saved)
                return
            }
        }
        let asked = String(decoding: next.bytes, as: UTF8.self)
        // `pause counters` only comes when the facts offered them.
        guard asked == "pause" || (asked == XDPTakeover.pauseWithCounters && facts.handsCounters) else {
            if asked.hasPrefix("abort ") {
                logger.notice("takeover: pid \(peer.pid) will not take this convey's place: \(asked.dropFirst(6))")
                // It may have swapped its program in first: ours goes back (nothing when it did so).
                if let saved, !plane.program.restore(saved) {
                    logger.warning("takeover: this convey's steering program could not be put back: restart it")
                }
            } else {
                goOn(after: asked.isEmpty ? "\(Errno.connectionReset)" : "it asked '\(asked.prefix(40))'", peer: peer.pid, saved: saved)
            }
            return
        }
        let started = ContinuousClock.now
        let workers = plane.pause()
        var documents: [Int32] = []
        defer { XDPTakeover.close(documents) }
        var flows = 0
        var declined: String?  // the newcomer's `abort REASON` instead of `start?`
        do throws(Errno) {
            for (i, worker) in workers.enumerated() {
                let document = try WorkerDocument.write(worker.sent.worker, worker.forwarder)
                documents.append(document)
                flows += worker.forwarder.flows.count
                try connection.send(Array("worker \(i)".utf8),
                                    descriptors: [worker.sent.socketFD, worker.sent.memoryFD, document])
            }
            try connection.send(Array("claim".utf8), descriptors: [plane.program.claim.socket.fd])
            for id in plane.drained() { try connection.send(Array("drained\n\(id.pool)\n\(id.name)".utf8)) }
            if asked == XDPTakeover.pauseWithCounters, let counters = plane.counters {
                // Without them the takeover still goes on: the newcomer's counts start afresh.
                // Only a failed send (the connection) fails it.
                let file: FileDescriptor?
                do throws(Errno) { file = try MemoryFile.holding(counters().encoded(), name: "convey-counters") } catch {
                    logger.warning("takeover: cannot hand the counters over (\(error)): pid \(peer.pid) counts afresh")
                    file = nil
                }
                if let file {
                    defer { try? file.close() }
                    try connection.send(Array("counters".utf8), descriptors: [file.rawValue])
                }
            }
            try connection.send(Array("paused".utf8))
            let answer = try connection.receive()
            XDPTakeover.close(answer.descriptors)
            guard String(decoding: answer.bytes, as: UTF8.self) == "start?" else {
                let text = String(decoding: answer.bytes, as: UTF8.self)
                if text.hasPrefix("abort ") { declined = String(text.dropFirst(6)) }
                throw text.isEmpty ? Errno.connectionReset : Errno.protocolError
            }
            try connection.send(Array("go".utf8))
        } catch {
            plane.resume()
            goOn(after: declined ?? "\(error)", peer: peer.pid, saved: saved)
            return
        }
        done.store(true, ordering: .relaxed)
        plane.program.handedOver()
        // The newcomer forwards now; it says when a service manager knows it as the main
        // process, so that this one's exit is no main process's exit (or it went away: either way).
        if let last = try? connection.receive() { XDPTakeover.close(last.descriptors) }
        logger.notice("takeover: handed \(workers.count) worker(s) and \(flows) flow(s) over to pid \(peer.pid) after \(ContinuousClock.now - started) paused; stopping")
        plane.handedOver(peer.pid)
    }

    /// Not taken over: as before, with this convey's own program (the newcomer may have
    /// swapped its own in).
    private func goOn(after reason: String, peer: Int32, saved: Int32?) {
        let restored = saved.map { plane.program.restore($0) } ?? false
        let text = "takeover: pid \(peer) did not take over (\(reason)); this convey goes on forwarding"
            + (restored ? "" : ", but its steering program could not be put back: restart it")
        logger.warning("\(text)")
    }
}
