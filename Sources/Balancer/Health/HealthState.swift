/// The rise/fall state machine of one server: whether it is up, and how many checks in a row
/// agreed.
///
/// A server starts up (traffic flows at once, as with a balancer that has no health checks) and
/// is taken out only after `fall` failed checks in a row; a down server comes back only after
/// `rise` passed checks in a row. One check that disagrees with the current state resets the
/// opposite streak, so a flapping server neither falls nor rises until its results are steady.
///
/// The counters keep counting after a transition, so a status read right after a server went
/// down says exactly how many checks in a row it failed.
public struct HealthState: Sendable, Equatable {
    /// A change between up and down caused by one recorded check.
    public enum Transition: Sendable, Equatable {
        /// The server was down and has now passed `rise` checks in a row.
        case wentUp
        /// The server was up and has now failed `fall` checks in a row.
        case wentDown
    }

    /// Passed checks in a row that bring a down server back (at least 1).
    public let rise: Int
    /// Failed checks in a row that take an up server out (at least 1).
    public let fall: Int
    /// Whether the server takes new flows.
    public private(set) var isUp: Bool
    /// Passed checks since the last failed one.
    public private(set) var consecutiveSuccesses: Int = 0
    /// Failed checks since the last passed one.
    public private(set) var consecutiveFailures: Int = 0

    /// A fresh state: up unless `up` says otherwise, with no checks recorded. `rise` and `fall`
    /// below 1 are treated as 1 (config validation rejects them; this keeps the machine total).
    public init(rise: Int, fall: Int, up: Bool = true) {
        self.rise = max(1, rise)
        self.fall = max(1, fall)
        self.isUp = up
    }

    /// Records the result of one check and returns the transition it caused, if any.
    @discardableResult
    public mutating func record(passed: Bool) -> Transition? {
        if passed {
            consecutiveSuccesses += 1
            consecutiveFailures = 0
            if !isUp && consecutiveSuccesses >= rise {
                isUp = true
                return .wentUp
            }
        } else {
            consecutiveFailures += 1
            consecutiveSuccesses = 0
            if isUp && consecutiveFailures >= fall {
                isUp = false
                return .wentDown
            }
        }
        return nil
    }
}
