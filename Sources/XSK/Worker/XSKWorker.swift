import CLinux
import CXDP
import Glibc
import Synchronization

/// One AF_XDP worker: a thread bound to one RX queue, with its own socket, UMEM and frame pool,
/// running a `PacketHandler` over every received frame.
///
/// Frame ownership (the invariant everything below keeps): a frame is in exactly one place at
/// a time: the worker's `FramePool`, the FILL ring, the RX ring (until released), the TX ring,
/// or the COMPLETION ring. The loop moves frames between them:
///
///     COMPLETION → pool        (reap: the kernel has sent them)
///     pool → FILL              (refill: the kernel may receive into them)
///     RX → handler → TX        (.transmit: the same frame, rewritten in place, no copy)
///     RX → handler → pool      (.drop; also .transmit when the TX ring is full)
///
/// The loop allocates nothing, takes no lock, retains nothing and calls the handler directly
/// (the worker is generic and `@inlinable`, so it is specialized for the handler in the module
/// that names it). Syscalls happen only when the kernel asks (need_wakeup), plus a `poll()`
/// when idle so an idle worker sleeps instead of burning its core.
public final class XSKWorker<Handler: PacketHandler>: @unchecked Sendable {
    /// The largest RX batch.
    public static var batchSize: Int { 64 }

    public let index: Int
    public let socket: XSKSocket
    /// CPU the thread is pinned to (nil: not pinned).
    public let cpu: Int32?
    /// Counters readable from any thread.
    public let counters: WorkerCounters

    @usableFromInline var handler: Handler
    @usableFromInline var state: LoopState
    @usableFromInline let rings: Rings
    @usableFromInline let stopRequested = Atomic<Bool>(false)
    /// Consecutive empty polls of the RX ring before the worker sleeps in poll().
    @usableFromInline let spinLimit: Int
    /// poll() timeout: how long an idle worker sleeps before it adopts new routes and expires
    /// flows without a frame to wake it (a stop wakes it at once).
    @usableFromInline let idleTimeoutMilliseconds: Int32
    private let thread = Mutex<pthread_t?>(nil)

    /// Raw ring and area pointers, copied out of the socket and UMEM once.
    @usableFromInline struct Rings {
        @usableFromInline let rx: UnsafeMutablePointer<xsk_ring_cons>
        @usableFromInline let tx: UnsafeMutablePointer<xsk_ring_prod>
        @usableFromInline let fill: UnsafeMutablePointer<xsk_ring_prod>
        @usableFromInline let completion: UnsafeMutablePointer<xsk_ring_cons>
        @usableFromInline let area: UnsafeMutableRawPointer
        @usableFromInline let frameMask: UInt64
        @usableFromInline let fd: Int32
        /// An eventfd `requestStop()` signals, polled beside `fd`: an idle worker notices a
        /// stop (a takeover's pause, shutdown) at once, not at the end of its idle timeout.
        /// -1 when none could be made (the process at its descriptor limit): then it does.
        @usableFromInline let wakeFD: Int32
        @usableFromInline let fillSize: UInt32
        /// Scratch for the TX descriptors of one batch (allocated once).
        @usableFromInline let pending: UnsafeMutablePointer<xdp_desc>
        /// Scratch for the frames of one RX batch and their verdicts (allocated once).
        @usableFromInline let frames: UnsafeMutablePointer<PacketFrame>
        @usableFromInline let verdicts: UnsafeMutablePointer<PacketVerdict>
        /// The worker's counter words (`WorkerCounters.storage`): a raw pointer, so the loop
        /// touches no reference and does no reference counting.
        @usableFromInline let counters: UnsafeMutablePointer<UInt64>
    }

    /// What the loop carries from one iteration to the next.
    @usableFromInline struct LoopState {
        @usableFromInline var pool: FramePool
        /// Frames on TX or COMPLETION (not yet reaped).
        @usableFromInline var txOutstanding: Int = 0
        @usableFromInline var emptyPolls: Int = 0
        @usableFromInline init(pool: FramePool) { self.pool = pool }
    }

    /// A worker over `socket` (whose UMEM it owns from now on) running `handler`.
    public init(index: Int, socket: XSKSocket, handler: Handler, cpu: Int32? = nil,
                spinLimit: Int = 32, idleTimeout: Duration = .milliseconds(100)) {
        self.index = index
        self.socket = socket
        self.cpu = cpu
        self.handler = handler
        self.spinLimit = spinLimit
        let (seconds, attoseconds) = idleTimeout.components
        idleTimeoutMilliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
        counters = WorkerCounters()
        let umem = socket.umem
        rings = Rings(rx: socket.rx, tx: socket.tx, fill: umem.fill, completion: umem.completion,
                      area: umem.area, frameMask: ~UInt64(umem.frameSize - 1), fd: socket.fd,
                      wakeFD: max(cxdp_eventfd(), -1), fillSize: umem.fillSize, pending: .allocate(capacity: Self.batchSize),
                      frames: .allocate(capacity: Self.batchSize), verdicts: .allocate(capacity: Self.batchSize),
                      counters: counters.storage)
        state = LoopState(pool: FramePool(frameCount: umem.frameCount, frameSize: umem.frameSize))
    }

    /// A worker taking over `socket` from another convey's worker, whose frames were
    /// `frames.free` (free) and `frames.txOutstanding` (on TX or COMPLETION) when it stopped.
    public convenience init(index: Int, adopting socket: XSKSocket, frames: (free: [UInt64], txOutstanding: Int), handler: Handler,
                cpu: Int32? = nil) {
        self.init(index: index, socket: socket, handler: handler, cpu: cpu)
        state.pool.deallocate()
        state = LoopState(pool: FramePool(frames: frames.free, capacity: socket.umem.frameCount))
        state.txOutstanding = frames.txOutstanding
    }

    /// The frames of a stopped worker that are in none of its rings' kernel-owned parts:
    /// free ones, and how many are on TX or COMPLETION (for a takeover; after `join()`).
    public var frameState: (free: [UInt64], txOutstanding: Int) { (state.pool.frames, state.txOutstanding) }

    deinit {
        requestStop()
        join()
        if rings.wakeFD >= 0 { close(rings.wakeFD) }
        rings.pending.deallocate()
        rings.frames.deallocate()
        rings.verdicts.deallocate()
        state.pool.deallocate()
    }

    /// The handler as the worker left it (read it after `join()`).
    public var finalHandler: Handler { handler }

    // MARK: Thread

    /// Starts the worker thread (pinned to `cpu` when given). Starting twice is an error.
    ///
    /// `@inlinable` on purpose: the thread's closure is formed where the handler type is
    /// concrete, so the loop it runs is the specialized one.
    @inlinable
    public func start() throws(XSKError) {
        try spawn { [self] in self.runLoop() }
    }

    @usableFromInline
    func spawn(_ body: @escaping () -> Void) throws(XSKError) {
        var error: Int32 = 0
        thread.withLock { thread in
            guard thread == nil else {
                error = EALREADY
                return
            }
            let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
            var created = pthread_t()
            let rc = pthread_create(&created, nil, { raw in
                let body = Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue()
                body.run()
                return nil
            }, context)
            if rc == 0 {
                thread = created
            } else {
                Unmanaged<ThreadBody>.fromOpaque(context).release()
                error = rc
            }
        }
        guard error == 0 else {
            throw .system(operation: "pthread_create", subject: "worker \(index) (\(socket.interface) queue \(socket.queue))",
                          errno: .init(rawValue: error))
        }
    }

    /// Starts the thread again after `requestStop()` and `join()` (a takeover that did not
    /// complete): the loop goes on from where it stopped.
    @inlinable
    public func resume() throws(XSKError) {
        stopRequested.store(false, ordering: .releasing)
        // Then the stop's wake-up, or every idle poll would return at once. In this order a
        // stop asked meanwhile is not lost: its flag is set again, and the loop checks it.
        cxdp_eventfd_drain(rings.wakeFD)
        try start()
    }

    /// Asks the loop to end; it notices at the end of its current batch, or at once when it
    /// sleeps idle (the wake-up eventfd). Safe from any thread; idempotent.
    public func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        cxdp_eventfd_signal(rings.wakeFD)
    }

    /// Waits for the thread to end (after `requestStop()`); idempotent.
    public func join() {
        let joined: pthread_t? = thread.withLock { thread in
            defer { thread = nil }
            return thread
        }
        if let joined { pthread_join(joined, nil) }
    }

    // MARK: Loop

    /// The worker thread's body: iterate until a stop is requested.
    @inlinable
    public func runLoop() {
        if let cpu { _ = cl_pin_thread_to_cpu(cpu) }
        var handler = self.handler
        var state = self.state
        let rings = self.rings
        while !stopRequested.load(ordering: .acquiring) {
            _ = Self.iterate(rings: rings, state: &state, handler: &handler,
                             spinLimit: spinLimit, idleTimeout: idleTimeoutMilliseconds)
        }
        self.handler = handler
        self.state = state
    }

    /// Runs `count` loop iterations on the calling thread (tests and benchmarks: the loop
    /// without a thread). Must not be used while the worker thread runs. Returns frames received.
    @inlinable
    public func runIterations(_ count: Int) -> Int {
        var handler = self.handler
        var state = self.state
        var received = 0
        var n = 0
        while n < count {
            n &+= 1
            received += Self.iterate(rings: rings, state: &state, handler: &handler,
                                     spinLimit: spinLimit, idleTimeout: idleTimeoutMilliseconds)
        }
        self.handler = handler
        self.state = state
        return received
    }

    /// One iteration: reap completions → refill FILL → peek RX → handle → TX → kick if asked;
    /// when nothing arrived: kick pending TX, spin a little, then sleep in poll().
    @inlinable
    static func iterate(rings: Rings, state: inout LoopState, handler: inout Handler,
                        spinLimit: Int, idleTimeout: Int32) -> Int {
        var wakeups: UInt64 = 0

        // 1. Reap completions: the kernel is done sending these frames.
        var index: UInt32 = 0
        let completed = xsk_ring_cons__peek(rings.completion, rings.fillSize, &index)
        if completed > 0 {
            var i: UInt32 = 0
            while i < completed {
                state.pool.push(xsk_ring_cons__comp_addr(rings.completion, index &+ i).pointee & rings.frameMask)
                i &+= 1
            }
            xsk_ring_cons__release(rings.completion, completed)
            state.txOutstanding -= Int(completed)
        }

        // 2. Refill FILL from the pool.
        let wanted = UInt32(min(state.pool.count, Int(rings.fillSize)))
        if wanted > 0 {
            let free = xsk_prod_nb_free(rings.fill, wanted)
            if free > 0 {
                let n = min(free, wanted)
                if xsk_ring_prod__reserve(rings.fill, n, &index) == n {
                    var i: UInt32 = 0
                    while i < n {
                        xsk_ring_prod__fill_addr(rings.fill, index &+ i).pointee = state.pool.pop()!
                        i &+= 1
                    }
                    xsk_ring_prod__submit(rings.fill, n)
                }
            }
        }

        // 3. Peek RX.
        let received = xsk_ring_cons__peek(rings.rx, UInt32(batchSize), &index)
        if received == 0 {
            let sending = state.txOutstanding > 0
            if sending && xsk_ring_prod__needs_wakeup(rings.tx) != 0 {
                wakeups &+= kickTX(rings)
            }
            state.emptyPolls += 1
            if state.emptyPolls >= spinLimit {
                if xsk_ring_prod__needs_wakeup(rings.fill) != 0 {
                    _ = cxdp_xsk_kick_rx(rings.fd)
                }
                // Frames still out on TX: sleep briefly (their completions wake no poll), so
                // a transmit path that never completes (a link gone down) costs no spinning CPU.
                // Likewise while the handler walks its table for a listing, a piece per call.
                _ = cxdp_poll_in_or_wake(rings.fd, rings.wakeFD, sending || handler.hasWorkBetweenBatches ? 1 : idleTimeout)
                wakeups += 1
                state.emptyPolls = 0
                // Idle: let the handler adopt new routes and expire flows all the same.
                handler.beginBatch(now: monotonicNanoseconds())
            }
            if wakeups > 0 { Self.count(rings, .wakeups, wakeups) }
            return 0
        }
        state.emptyPolls = 0

        // 4. Handle the batch.
        handler.beginBatch(now: monotonicNanoseconds())
        var r: UInt32 = 0
        while r < received {
            let desc = xsk_ring_cons__rx_desc(rings.rx, index &+ r)!
            rings.frames[Int(r)] = PacketFrame(base: rings.area + Int(desc.pointee.addr), length: Int(desc.pointee.len))
            r &+= 1
        }
        handler.handle(batch: UnsafeBufferPointer(start: rings.frames, count: Int(received)), verdicts: rings.verdicts)
        var bytes: UInt64 = 0
        var transmit = 0
        var drops: UInt64 = 0
        r = 0
        while r < received {
            defer { r &+= 1 }
            let desc = xsk_ring_cons__rx_desc(rings.rx, index &+ r)!
            let addr = desc.pointee.addr
            let length = desc.pointee.len
            bytes &+= UInt64(length)
            switch rings.verdicts[Int(r)] {
            case .transmit:
                rings.pending[transmit] = xdp_desc(addr: addr, len: length, options: 0)
                transmit += 1
            case .drop:
                state.pool.push(addr & rings.frameMask)
                drops += 1
            }
        }
        xsk_ring_cons__release(rings.rx, received)

        // 5. Transmit the same frames.
        var sent: UInt32 = 0
        var ringFull: UInt64 = 0
        if transmit > 0 {
            // Reserve succeeds for all it is asked or none: ask for what is free, so a nearly
            // full ring sends what fits and drops only the rest.
            let room = xsk_prod_nb_free(rings.tx, UInt32(transmit))
            sent = xsk_ring_prod__reserve(rings.tx, min(room, UInt32(transmit)), &index)
            var i = 0
            while i < Int(sent) {
                xsk_ring_prod__tx_desc(rings.tx, index &+ UInt32(i)).pointee = rings.pending[i]
                i &+= 1
            }
            while i < transmit {
                state.pool.push(rings.pending[i].addr & rings.frameMask)
                ringFull &+= 1
                i &+= 1
            }
            if sent > 0 {
                xsk_ring_prod__submit(rings.tx, sent)
                state.txOutstanding += Int(sent)
            }
        }
        if state.txOutstanding > 0 && xsk_ring_prod__needs_wakeup(rings.tx) != 0 {
            wakeups &+= kickTX(rings)
        }

        Self.count(rings, .rxPackets, UInt64(received))
        Self.count(rings, .rxBytes, bytes)
        Self.count(rings, .txPackets, UInt64(sent))
        Self.count(rings, .drops, drops)
        if ringFull > 0 { Self.count(rings, .txRingFullDrops, ringFull) }
        Self.count(rings, .batches, 1)
        if wakeups > 0 { Self.count(rings, .wakeups, wakeups) }
        return Int(received)
    }

    /// The most TX kicks one iteration makes (see `kickTX`).
    @usableFromInline static var maxKicksPerIteration: UInt64 { 8 }

    /// Asks the kernel to transmit what is on the TX ring, again as long as it answers that it
    /// left descriptors behind; returns the syscalls made.
    ///
    /// In copy mode the sendto() itself transmits, at most the socket's TX budget per call (32
    /// frames unless the kernel took a larger `XSKSocket.txBudget`), and answers EAGAIN when
    /// descriptors remain (or the COMPLETION ring is full). One kick per batch would leave the
    /// rest of a 64-frame batch on the ring: the ring then grows by the difference every batch
    /// until it is full, and from then on frames already received (copied, parsed, looked up)
    /// are dropped for want of TX room (measured in the lab: 0 to 41 % of received frames,
    /// depending on the run, with the FILL ring short of the frames parked on TX; with this,
    /// 0 to 0.4 %). Draining here sends each batch in the
    /// iteration that received it. Bounded, so a full COMPLETION ring (reaped at the top of the
    /// next iteration) cannot keep the worker here. In zero-copy mode the kick only wakes the
    /// driver and returns 0: one call.
    @inlinable
    static func kickTX(_ rings: Rings) -> UInt64 {
        var kicks: UInt64 = 0
        while kicks < maxKicksPerIteration {
            kicks &+= 1
            guard cxdp_xsk_kick_tx(rings.fd) == -EAGAIN else { break }
        }
        return kicks
    }

    /// Adds to one of the worker's counters (a plain store of an aligned word; see `WorkerCounters`).
    @inlinable @inline(__always)
    static func count(_ rings: Rings, _ slot: WorkerCounters.Slot, _ value: UInt64) {
        rings.counters[slot.rawValue] &+= value
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    @inlinable @inline(__always)
    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Kernel ring statistics of this worker's socket.
    public func ringStatistics() throws(XSKError) -> XSKRingStatistics { try socket.statistics() }
}

/// The closure a worker thread runs (boxed to cross pthread_create's C entry point).
final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
