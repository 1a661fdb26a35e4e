#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Logging
import Synchronization
import SystemPackage

/// The counters of the convey a takeover took its listeners from, which it hands over when it
/// stops (see `ListenerHandover`): a thread waits for them on the exchange's connection and
/// adds them to this convey's, so the totals go on from the old convey's final counts.
///
/// They are taken up only until this convey stops (`close()`): its own final counts, read
/// after that, go to its successor, and counts arriving later would be lost in between
/// (this convey stopping before the one it replaced loses them, as logged).
final class PredecessorCounters: Sendable {
    private let closed = Mutex(false)

    /// Starts the thread; it ends once the counters came, the old convey closed without them,
    /// or this convey stops (`close()`).
    func startWaiting(on channel: UnixMessageSocket, from pid: Int32, carry: CounterCarry, logger: Logger) {
        let started = LoopThread.start(cpu: nil) { [self] in
            while !closed.withLock({ $0 }) {
                // Its drain may last the old convey's drain_timeout: looked at twice a second.
                guard channel.waitForMessage(timeout: .milliseconds(500)) else { continue }
                take(from: channel, pid: pid, carry: carry, logger: logger)
                return
            }
            logger.warning("takeover: this convey stops before pid \(pid), which it replaced, has handed its counters over: they are not carried on")
        }
        if !started {
            logger.warning("takeover: cannot start a thread to wait for the counters of pid \(pid): they are not carried on")
        }
    }

    /// Takes no more counters: this convey's are read from now on.
    func close() {
        closed.withLock { $0 = true }
    }

    private func take(from channel: UnixMessageSocket, pid: Int32, carry: CounterCarry, logger: Logger) {
        let message: (bytes: [UInt8], descriptors: [Int32])
        do { message = try channel.receive() } catch {
            logger.warning("takeover: the connection to pid \(pid) failed before its counters came (\(error)): they are not carried on")
            return
        }
        defer { for fd in message.descriptors { _ = Glibc.close(fd) } }
        if message.bytes.isEmpty && message.descriptors.isEmpty {
            logger.warning("takeover: pid \(pid) closed the exchange without handing its counters over (it was killed, or another convey took its listeners since): they are not carried on")
            return
        }
        guard String(decoding: message.bytes, as: UTF8.self) == "counters", message.descriptors.count == 1 else {
            logger.warning("takeover: pid \(pid) sent '\(String(decoding: message.bytes.prefix(40), as: UTF8.self))' instead of its counters: they are not carried on")
            return
        }
        let carried: CarriedCounters
        do {
            carried = try CarriedCounters(decoding: try MemoryFile.contents(of: FileDescriptor(rawValue: message.descriptors[0])))
        } catch {
            logger.warning("takeover: the counters pid \(pid) handed over do not read (\(error)): they are not carried on")
            return
        }
        // Under the lock: either added before this convey reads its own for its successor, or not at all.
        let outcome = closed.withLock { closed in closed ? nil : carry.carryOn(carried, nil) }
        if let outcome {
            logger.notice("takeover: counters carried on from pid \(pid), which stopped: \(outcome.description)")
        } else {
            logger.warning("takeover: the counters of pid \(pid) came after this convey stopped: they are not carried on")
        }
    }
}
