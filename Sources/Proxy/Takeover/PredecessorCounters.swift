#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Logging
import SystemPackage

/// The counters of the convey a takeover took its listeners from, which it hands over when it
/// stops (see `ListenerHandover`): a thread waits for them on the exchange's connection and
/// adds them to this convey's, so the totals go on from the old convey's final counts.
enum PredecessorCounters {
    /// Starts the thread; it ends once the counters came, the old convey closed without them
    /// (stopped at once, or older), or `stopped()` (this convey stops first).
    static func await(on channel: UnixMessageSocket, from pid: Int32, carry: CounterCarry, logger: Logger,
                      stopped: @escaping @Sendable () -> Bool) {
        let started = LoopThread.start(cpu: nil) {
            while !stopped() {
                // Its drain may last the old convey's drain_timeout: looked at twice a second.
                guard channel.waitForMessage(timeout: .milliseconds(500)) else { continue }
                take(from: channel, pid: pid, carry: carry, logger: logger)
                return
            }
        }
        if !started {
            logger.warning("takeover: cannot start a thread to wait for the counters of pid \(pid): this convey's counts start afresh")
        }
    }

    private static func take(from channel: UnixMessageSocket, pid: Int32, carry: CounterCarry, logger: Logger) {
        guard let message = try? channel.receive() else {
            logger.info("takeover: the connection to pid \(pid) failed before its counters came: this convey's counts start afresh")
            return
        }
        defer { for fd in message.descriptors { _ = Glibc.close(fd) } }
        if message.bytes.isEmpty && message.descriptors.isEmpty {
            logger.info("takeover: pid \(pid) stopped without handing its counters over (stopped at once, or a convey from before 2026-12-08): this convey's counts start afresh")
            return
        }
        guard String(decoding: message.bytes, as: UTF8.self) == "counters", message.descriptors.count == 1 else {
            logger.warning("takeover: pid \(pid) sent '\(String(decoding: message.bytes.prefix(40), as: UTF8.self))' instead of its counters: this convey's counts start afresh")
            return
        }
        let carried: CarriedCounters
        do {
            carried = try CarriedCounters(decoding: try MemoryFile.contents(of: FileDescriptor(rawValue: message.descriptors[0])))
        } catch {
            logger.warning("takeover: the counters pid \(pid) handed over do not read (\(error)): this convey's counts start afresh")
            return
        }
        let outcome = carry.carryOn(carried, nil)
        logger.notice("takeover: counters carried on from pid \(pid), which stopped: \(outcome.description)")
    }
}
