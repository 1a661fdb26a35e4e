import Balancer
import Glibc
import Logging
import Synchronization

/// Keeps `[stats] state_file` in step with the operator's drains: restores them at start, and
/// rewrites the file whenever they change (a command, a takeover's drains, a reload that
/// drops the drain of a server it removes).
final class DrainStateKeeper: Sendable {
    let file: DrainStateFile
    private let logger: Logger
    /// What the file holds now (sorted), so an unchanged list is not written again; nil
    /// until the first write. Held while writing, so writes never interleave.
    private let saved = Mutex<[ServerID]?>(nil)

    init(file: DrainStateFile, logger: Logger) {
        self.file = file
        self.logger = logger
    }

    /// Drains the servers the file lists (each logged; a server the configuration lacks is
    /// warned about and dropped), then writes the list in force, which shows at start that
    /// the file can be written. A file convey cannot read is logged, set aside as
    /// `PATH.bad` and replaced. Throws when the file cannot be written.
    func restore(into runtime: BalancerRuntime) throws(DrainStateFileError) {
        do throws(DrainStateFileError) {
            for id in try file.load() {
                do throws(ServerCommandError) {
                    if try runtime.setDrained(id, true) {
                        logger.notice("server \(id): drained by the operator before this start (kept in \(file.path)); POST /servers/\(id)/ready ends it")
                    }
                } catch {
                    logger.warning("\(file.path) has server \(id) drained, which this configuration lacks (\(error)): that drain is dropped")
                }
            }
        } catch {
            let aside = file.path + ".bad"
            let moved = rename(file.path, aside) == 0
            logger.error("\(error): starting with no drains from it\(moved ? "; it is kept as \(aside)" : "")")
        }
        try write(runtime.view().drained.sorted())
    }

    /// Writes the runtime's drains if they changed since the last write; a failure is logged
    /// (the drains hold in this process, and the next change tries again).
    func sync(_ runtime: BalancerRuntime) {
        do throws(DrainStateFileError) {
            try write(runtime.view().drained.sorted())
        } catch {
            logger.error("\(error): the operator's drains hold until convey stops, but a restart would lose the change")
        }
    }

    private func write(_ drained: [ServerID]) throws(DrainStateFileError) {
        try saved.withLock { (saved: inout [ServerID]?) throws(DrainStateFileError) in
            guard saved != drained else { return }
            try file.save(drained)
            saved = drained
        }
    }
}
