/// When the checks of one target run.
///
/// **First check, jittered.** A target is checked as soon as it is added (servers start up, so a
/// dead one must be found quickly), but not at the very instant: its first check waits a random
/// delay in `[0, firstCheckWindow(interval))`, at most a quarter of the interval and never more
/// than 500 ms. A config with 1000 servers therefore spreads its first connects over up to half
/// a second instead of opening 1000 sockets in the same millisecond, and because later checks
/// keep the phase of the first one, the spread persists for the life of the targets.
///
/// **Later checks, on a fixed grid.** Check *n* is due at `first + n × interval`, measured from
/// when it was due rather than from when the previous check finished, so slow checks do not
/// make the period drift. A check that overruns its slot (timeout longer than the interval) is
/// followed by the next one at once, never by a burst of missed ones.
enum HealthCheckSchedule {
    /// Upper bound of the first-check jitter whatever the interval.
    static let maxFirstCheckWindow: Duration = .milliseconds(500)

    /// The window the first check's delay is drawn from: `min(interval / 4, 500 ms)`.
    static func firstCheckWindow(interval: Duration) -> Duration {
        min(interval / 4, maxFirstCheckWindow)
    }

    /// A random delay in `[0, firstCheckWindow(interval))` before a new target's first check.
    static func firstCheckDelay(interval: Duration,
                                using generator: inout some RandomNumberGenerator) -> Duration {
        let window = firstCheckWindow(interval: interval)
        let (seconds, attoseconds) = window.components
        let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        guard nanoseconds > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0..<nanoseconds, using: &generator))
    }

    /// When the check after the one due at `due` should start: one interval later, or `now` if
    /// that moment has already passed.
    static func nextCheck(after due: ContinuousClock.Instant, interval: Duration,
                          now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        max(due + interval, now)
    }
}
