import Logging
import Synchronization

/// Announces convey's state to systemd (`Type=notify`): ready once the data plane serves
/// (and, for a replacement, that it is the main process). A failure to tell it is logged once;
/// convey serves on regardless.
final class Readiness: Sendable {
    let notifier: SystemdNotifier
    let logger: Logger
    private let failedOnce = Atomic<Bool>(false)

    init(notifier: SystemdNotifier, logger: Logger) {
        self.notifier = notifier
        self.logger = logger
    }

    func announce(_ lines: [String]) {
        do throws(SystemdNotifier.Failure) {
            try notifier.notify(lines)
        } catch {
            if !failedOnce.exchange(true, ordering: .relaxed) {
                logger.warning("cannot tell systemd \(lines.first ?? ""): \(error)")
            }
        }
    }
}
