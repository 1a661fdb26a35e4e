import Balancer
import Testing

@Suite("Rise/fall state of one server")
struct HealthStateTests {
    @Test("a new server is up, so traffic flows before the first check")
    func startsUp() {
        let state = HealthState(rise: 2, fall: 3)
        #expect(state.isUp)
        #expect(state.consecutiveSuccesses == 0)
        #expect(state.consecutiveFailures == 0)
    }

    @Test("an up server goes down on exactly the fall-th failure in a row")
    func fallsAfterFallFailures() {
        var state = HealthState(rise: 2, fall: 3)
        #expect(state.record(passed: false) == nil)
        #expect(state.record(passed: false) == nil)
        #expect(state.isUp)
        #expect(state.record(passed: false) == .wentDown)
        #expect(!state.isUp)
        #expect(state.consecutiveFailures == 3)
        // Further failures keep it down without another transition.
        #expect(state.record(passed: false) == nil)
        #expect(state.consecutiveFailures == 4)
    }

    @Test("one passed check between failures restarts the count: a flapping server stays up")
    func successResetsFailureStreak() {
        var state = HealthState(rise: 2, fall: 3)
        for passed in [false, false, true, false, false, true, false, false] {
            #expect(state.record(passed: passed) == nil)
        }
        #expect(state.isUp)
        #expect(state.consecutiveFailures == 2)
        #expect(state.record(passed: false) == .wentDown)
    }

    @Test("a down server comes back on exactly the rise-th success in a row")
    func risesAfterRiseSuccesses() {
        var state = HealthState(rise: 2, fall: 1)
        #expect(state.record(passed: false) == .wentDown)
        #expect(state.record(passed: true) == nil)
        #expect(!state.isUp)
        #expect(state.record(passed: true) == .wentUp)
        #expect(state.isUp)
        #expect(state.consecutiveSuccesses == 2)
        #expect(state.consecutiveFailures == 0)
    }

    @Test("a failure while rising restarts the rise")
    func failureResetsRise() {
        var state = HealthState(rise: 3, fall: 1, up: false)
        #expect(state.record(passed: true) == nil)
        #expect(state.record(passed: true) == nil)
        #expect(state.record(passed: false) == nil)
        #expect(state.consecutiveSuccesses == 0)
        #expect(state.record(passed: true) == nil)
        #expect(state.record(passed: true) == nil)
        #expect(state.record(passed: true) == .wentUp)
    }

    @Test("passed checks of an up server cause no transition")
    func upStaysUp() {
        var state = HealthState(rise: 1, fall: 1)
        for _ in 0..<5 { #expect(state.record(passed: true) == nil) }
        #expect(state.consecutiveSuccesses == 5)
    }

    @Test("rise and fall below 1 act as 1: one check decides")
    func degenerateThresholds() {
        var state = HealthState(rise: 0, fall: -2)
        #expect(state.rise == 1 && state.fall == 1)
        #expect(state.record(passed: false) == .wentDown)
        #expect(state.record(passed: true) == .wentUp)
    }
}
