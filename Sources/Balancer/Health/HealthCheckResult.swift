/// The outcome of one health check: passed, or failed with a reason.
public enum HealthCheckResult: Sendable, Equatable, CustomStringConvertible {
    /// Connected, sent the check bytes if any, and read the expected prefix if any.
    case passed
    /// The check failed; the failure says why.
    case failed(HealthCheckFailure)

    /// True when the check could not be made (see `HealthCheckFailure.notChecked`).
    public var isInconclusive: Bool {
        if case .failed(let failure) = self { return failure.isInconclusive } else { return false }
    }

    /// True for `.passed`.
    public var passed: Bool {
        if case .passed = self { return true } else { return false }
    }

    /// `ok`, or the failure's operator-facing text.
    public var description: String {
        switch self {
        case .passed: return "ok"
        case .failed(let failure): return failure.description
        }
    }
}
