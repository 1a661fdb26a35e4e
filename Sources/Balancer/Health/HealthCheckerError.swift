/// Misuse of a `HealthChecker` that its owner can correct.
public enum HealthCheckerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `run()` was called a second time; a checker runs once. Create a new one, or keep the
    /// running one and call `update(targets:)`.
    case alreadyRun

    /// What went wrong and what to do instead.
    public var description: String {
        switch self {
        case .alreadyRun: return "the health checker has already been run; it runs once per instance"
        }
    }
}
