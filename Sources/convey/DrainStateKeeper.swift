import Balancer
import Glibc
import Logging
import Synchronization

/// Keeps `[stats] state_file` in step with the operator's drains: restores them at start, and
/// rewrites the file whenever they change (a command, a takeover's drains, a reload that
/// drops the drain of a server it removes).
///
/// Writes happen on the caller's thread (a stats request, the reload service) under a lock,
/// one or two `fsync`s each: drains change rarely, and the answer to a command should mean
/// the change is on disk.
final class DrainStateKeeper: Sendable {
    let file: DrainStateFile
    private let logger: Logger

    private struct State {
        /// What the file holds now (sorted), so an unchanged list is not written again; nil
        /// until the first write.
        var saved: [ServerID]?
        /// The convey this one handed its listeners and drains to (`--takeover`): the file
        /// is that one's from then on.
        var successor: Int32?
    }

    /// Held while reading the drains and writing them, so that two changes at once are
    /// written in the order they were made.
    private let state = Mutex(State())

    init(file: DrainStateFile, logger: Logger) {
        self.file = file
        self.logger = logger
    }

    /// Drains the servers the file lists (each logged; a server the configuration lacks is
    /// warned about and dropped), then writes the list in force, which shows at start that
    /// the file can be written. A file that is not a drain list is logged and set aside as
    /// `PATH.bad`; one that cannot be read, or set aside, or written, fails the start (its
    /// list may be good: starting without it would put drained servers back in service).
    func restore(into runtime: BalancerRuntime) throws(DrainStateFileError) {
        var listed: [ServerID] = []
        do throws(DrainStateFileError) {
            listed = try file.load()
        } catch where error.kind == .notADrainList {
            let aside = file.path + ".bad"
            guard rename(file.path, aside) == 0 else {
                let reason = String(cString: strerror(errno))
                throw DrainStateFileError(path: file.path, kind: .unwritable,
                                          reason: "\(error.reason), and it cannot be set aside as \(aside): \(reason)")
            }
            logger.error("\(error): starting with no drains from it; it is kept as \(aside)")
        }
        for id in listed {
            do throws(ServerCommandError) {
                if try runtime.setDrained(id, true) {
                    logger.notice("server \(id): drained by the operator before this start (kept in \(file.path)); POST /servers/\(id)/ready ends it")
                }
            } catch {
                logger.warning("\(file.path) has server \(id) drained, which this configuration lacks (\(error)): that drain is dropped")
            }
        }
        try state.withLock { (state: inout State) throws(DrainStateFileError) in
            try write(runtime.view().drained.sorted(), &state)
        }
    }

    /// Writes the runtime's drains if they changed since the last write. Returns why they
    /// were not written (also logged), or nil: the drains hold in this process either way.
    @discardableResult
    func sync(_ runtime: BalancerRuntime) -> String? {
        state.withLock { state -> String? in
            let drained = runtime.view().drained.sorted()
            guard drained != state.saved else { return nil }
            if let successor = state.successor {
                let text = "not kept in \(file.path): the convey that took over from this one (pid \(successor)) keeps that file; send commands to it once this one has exited"
                logger.warning("\(text)")
                return text
            }
            do throws(DrainStateFileError) {
                try write(drained, &state)
                return nil
            } catch {
                let text = "\(error): the operator's drains hold until convey stops, but a restart would lose this change"
                logger.error("\(text)")
                return text
            }
        }
    }

    /// The convey `pid` took over from this one with its drains (`--takeover`): it keeps
    /// the file from now on, and this one no longer writes it.
    func handedOver(to pid: Int32) {
        state.withLock { $0.successor = pid }
    }

    /// The convey `pid` that took over exited while this one runs on: the file is this one's again.
    func successorGone(_ pid: Int32) {
        state.withLock { if $0.successor == pid { $0.successor = nil } }
    }

    private func write(_ drained: [ServerID], _ state: inout State) throws(DrainStateFileError) {
        guard state.saved != drained else { return }
        try file.save(drained)
        state.saved = drained
    }
}
