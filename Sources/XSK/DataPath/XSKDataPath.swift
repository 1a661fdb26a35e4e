import Balancer
import Glibc
import Synchronization

/// The AF_XDP data path on one interface: the steering program plus one `XSKWorker` per RX
/// queue, each with its own socket, UMEM and handler.
///
/// `init` sets everything up (attach, sockets, XSKMAP registration) or, on any error, undoes
/// what it did and throws: nothing is left half-configured. `start()` starts the threads;
/// `stop()` stops and joins them and detaches the program. `stop()` is idempotent, callable
/// from any thread (e.g. a service's shutdown path after SIGTERM), and also runs on `deinit`.
public final class XSKDataPath<Handler: PacketHandler>: @unchecked Sendable {
    public let interface: NetworkInterface
    public let program: SteeringProgram
    /// Bytes per UMEM frame: 2048, or 4096 for an interface whose MTU needs it.
    public let frameSize: Int
    @usableFromInline let workers: [XSKWorker<Handler>]
    private let stopped = Mutex(false)

    /// Sets up the data path.
    /// - Parameters:
    ///   - interfaceName: the interface (in the calling thread's network namespace).
    ///   - config: attach mode and zero-copy policy (`[xdp]`).
    ///   - workerLimit: at most this many workers (`[passthrough] workers`); nil = one per RX queue.
    ///   - queues: explicit queue ids (overrides the queue count and `workerLimit`).
    ///   - pinThreads: pin worker i to CPU i modulo the online CPUs.
    ///   - vips: VIPs steered from the start (more with `program.addVIP`).
    ///   - frameCount: UMEM frames per worker. The FILL and RX rings take half of them each
    ///     (`receiveDepth`), the other half covers TX, COMPLETION and the frames being handled.
    ///   - idleTimeout: how long an idle worker sleeps before it adopts new routes and expires
    ///     flows without a frame to wake it.
    ///   - makeHandler: builds worker i's handler.
    public init(interface interfaceName: String, config: XDPConfig, workerLimit: Int? = nil, queues: [UInt32]? = nil,
                pinThreads: Bool = true, vips: [(Endpoint, SteeringProgram.TransportProtocol)] = [],
                frameCount: Int = XSKDataPath.defaultFrameCount, idleTimeout: Duration = .milliseconds(100),
                makeHandler: (Int) throws -> Handler) throws {
        let interface = try NetworkInterface(named: interfaceName)
        let queueIDs: [UInt32]
        if let queues {
            guard !queues.isEmpty else { throw XSKError.invalidArgument("no queues given for \(interfaceName)") }
            for q in queues where Int(q) >= interface.rxQueueCount {
                throw XSKError.invalidArgument("\(interfaceName) has \(interface.rxQueueCount) RX queue(s); queue \(q) does not exist")
            }
            queueIDs = queues
        } else {
            let count = min(interface.rxQueueCount, max(1, workerLimit ?? interface.rxQueueCount))
            queueIDs = (0..<UInt32(count)).map { $0 }
        }
        let frameSize = UMEM.frameSize(forMTU: interface.mtu).size
        let program = try SteeringProgram(attachingTo: interface, mode: config.attach)
        do {
            let cpus = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
            var workers: [XSKWorker<Handler>] = []
            for (i, queue) in queueIDs.enumerated() {
                let depth = Self.receiveDepth(frameCount: frameCount)
                let umem = try UMEM(frameCount: frameCount, frameSize: frameSize, fillSize: depth)
                let socket = try XSKSocket(interface: interfaceName, queue: queue, umem: umem, zeroCopy: config.zeroCopy,
                                           rxSize: depth)
                try socket.register(inXSKMap: program.xsksMapFD)
                let handler = try makeHandler(i)
                workers.append(XSKWorker(index: i, socket: socket, handler: handler,
                                         cpu: pinThreads ? Int32(i % cpus) : nil, idleTimeout: idleTimeout))
            }
            for (endpoint, proto) in vips {
                try program.addVIP(endpoint, protocol: proto)
            }
            self.workers = workers
        } catch {
            program.detach()
            throw error
        }
        self.interface = interface
        self.program = program
        self.frameSize = frameSize
    }

    /// Takes over the workers of the convey being replaced (see `XDPTakeover`): each one's
    /// socket, bound to its queue, and UMEM, with the frames as that worker left them, under
    /// `program` (loaded, not attached yet), whose XSKMAP gets the sockets. Owns every
    /// descriptor in `handed` from the call on (closes them on failure).
    public init(adopting handed: [XSKWorkerHandover.Received], interface: NetworkInterface, program: SteeringProgram,
                pinThreads: Bool = true, makeHandler: (Int) throws -> Handler) throws {
        var owned = handed.flatMap { [$0.socketFD, $0.memoryFD] }
        defer { for fd in owned { close(fd) } }
        let cpus = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        var workers: [XSKWorker<Handler>] = []
        for (i, h) in handed.enumerated() {
            let w = h.worker
            // Each descriptor is owned by its object once that exists (they close it), not before.
            let umem = try UMEM(adoptingMemory: h.memoryFD, frameCount: w.frameCount, frameSize: w.frameSize,
                                fillSize: w.fillSize, completionSize: w.completionSize)
            owned.removeAll { $0 == h.memoryFD }
            let socket = try XSKSocket(adopting: h.socketFD, interface: interface.name, queue: w.queue, umem: umem,
                                       rxSize: w.rxSize, txSize: w.txSize)
            owned.removeAll { $0 == h.socketFD }
            try socket.register(inXSKMap: program.xsksMapFD)
            workers.append(XSKWorker(index: i, adopting: socket, frames: (w.freeFrames, w.txOutstanding),
                                     handler: try makeHandler(i), cpu: pinThreads ? Int32(i % cpus) : nil))
        }
        self.workers = workers
        self.interface = interface
        self.program = program
        frameSize = handed.first?.worker.frameSize ?? 2048
    }

    deinit { stop() }

    /// Stops the workers between two iterations and waits for them (a takeover's pause: the
    /// rings hold nothing reserved or peeked); `resume()` starts them again.
    public func pause() {
        for worker in workers { worker.requestStop() }
        for worker in workers { worker.join() }
    }

    /// Starts the paused workers again.
    @inlinable
    public func resume() throws(XSKError) {
        for worker in workers { try worker.resume() }
    }

    /// Each worker's socket and its queue (a takeover's newcomer puts them in its program's
    /// XSKMAP before the pause); the descriptors stay this process's.
    public func sockets() -> [(queue: UInt32, fd: Int32)] {
        workers.map { (queue: $0.socket.queue, fd: $0.socket.fd) }
    }

    /// What a takeover hands over of each paused worker; the descriptors stay this process's.
    public func handover() -> [XSKWorkerHandover.Sent] {
        workers.map { w in
            let umem = w.socket.umem
            let frames = w.frameState
            let worker = XSKWorkerHandover(queue: w.socket.queue, frameCount: umem.frameCount, frameSize: umem.frameSize,
                                           fillSize: umem.fillSize, completionSize: umem.completionSize,
                                           rxSize: w.socket.rxSize, txSize: w.socket.txSize, freeFrames: frames.free,
                                           txOutstanding: frames.txOutstanding)
            return XSKWorkerHandover.Sent(worker: worker, socketFD: w.socket.fd, memoryFD: umem.memoryFD)
        }
    }

    /// UMEM frames per worker by default: 16 MiB of 2 KiB frames.
    ///
    /// What a worker can absorb while it is not draining RX (descheduled, asleep in poll(), in a
    /// long sendto()) is the FILL ring's frames, and RX holds at most its size: 4096 each. A
    /// frame dropped there is lost for good when it was a flow's SYN (a DSR or passthrough
    /// worker drops the rest of a flow it never saw open, until the client retransmits). The
    /// lab's generator opens its 4096 flows in one burst and never retransmits: with 4096
    /// frames and 2048-deep rings, 13 of 18 runs lost 5 to 50 % of the flows, and so of their
    /// packets, at the start (`flows_active`, `no_flow` drops); with these, 0 of 18.
    public static var defaultFrameCount: Int { 8192 }

    /// FILL and RX ring size for `frameCount` frames: half of them, a power of two, at most 4096.
    static func receiveDepth(frameCount: Int) -> UInt32 {
        var depth: UInt32 = 64
        while Int(depth) * 4 <= frameCount && depth < 4096 { depth *= 2 }
        return depth
    }

    /// Starts every worker thread. If one cannot start, the data path is stopped and the error
    /// thrown. `@inlinable` so that the worker loops are specialized for `Handler`.
    @inlinable
    public func start() throws(XSKError) {
        for worker in workers {
            do {
                try worker.start()
            } catch {
                stop()
                throw error
            }
        }
    }

    /// Stops and joins the workers, then detaches the steering program. Idempotent.
    public func stop() {
        let first = stopped.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        for worker in workers { worker.requestStop() }
        for worker in workers { worker.join() }
        program.detach()
    }

    /// The workers (e.g. to read a handler after `stop()`).
    public var allWorkers: [XSKWorker<Handler>] { workers }

    /// Counters, ring statistics, modes and verdicts now.
    public func stats() -> XSKDataPathStats {
        let workerStats = workers.map { w in
            XSKDataPathStats.Worker(index: w.index, queue: w.socket.queue, cpu: w.cpu, counters: w.counters.snapshot,
                                    ring: try? w.socket.statistics(), mode: w.socket.mode)
        }
        return XSKDataPathStats(interface: interface.name, attachMode: program.attachMode,
                                zeroCopy: !workers.isEmpty && workers.allSatisfy { $0.socket.mode == .zeroCopy },
                                workers: workerStats, verdicts: try? program.verdicts())
    }
}
