#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What the health checker currently knows about one server: the view `/stats` shows and the
/// value handed to `HealthChecker`'s `onChange` callback on every up/down transition.
public struct HealthStatus: Sendable, Equatable {
    /// Whether the server takes new flows as far as health is concerned.
    public var isUp: Bool
    /// Passed checks since the last failed one.
    public var consecutiveSuccesses: Int
    /// Failed checks since the last passed one.
    public var consecutiveFailures: Int
    /// Checks completed since the checker started watching this target (a reload that changes
    /// the target's address or check settings starts it again from 0).
    public var checks: Int
    /// The result of the most recent check; nil before the first one completed.
    public var lastResult: HealthCheckResult?
    /// Wall-clock time the most recent check completed; nil before the first one.
    public var lastCheck: Date?

    /// A server nobody has checked yet: up, as every server starts.
    public static let unchecked = HealthStatus(isUp: true, consecutiveSuccesses: 0, consecutiveFailures: 0,
                                               checks: 0, lastResult: nil, lastCheck: nil)

    /// A status with every field given (the checker builds these; tests and stats may too).
    public init(isUp: Bool, consecutiveSuccesses: Int, consecutiveFailures: Int, checks: Int,
                lastResult: HealthCheckResult?, lastCheck: Date?) {
        self.isUp = isUp
        self.consecutiveSuccesses = consecutiveSuccesses
        self.consecutiveFailures = consecutiveFailures
        self.checks = checks
        self.lastResult = lastResult
        self.lastCheck = lastCheck
    }

    /// `.up` or `.down`, in the vocabulary of the forwarding snapshot.
    public var state: ServerState { isUp ? .up : .down }

    /// The last result as text: `ok`, the failure's reason, or `not checked yet`.
    public var lastResultText: String { lastResult?.description ?? "not checked yet" }
}
