@testable import Balancer
import Testing

@Suite("When health checks run, and how their results read")
struct HealthCheckScheduleTests {
    @Test("the first check waits at most a quarter interval, and never more than 500 ms")
    func firstCheckWindow() {
        #expect(HealthCheckSchedule.firstCheckWindow(interval: .milliseconds(100)) == .milliseconds(25))
        #expect(HealthCheckSchedule.firstCheckWindow(interval: .seconds(1)) == .milliseconds(250))
        #expect(HealthCheckSchedule.firstCheckWindow(interval: .seconds(5)) == .milliseconds(500))
        #expect(HealthCheckSchedule.firstCheckWindow(interval: .seconds(60)) == .milliseconds(500))
    }

    @Test("1000 servers added at once get first checks spread over the whole window")
    func firstChecksAreSpread() {
        var random = SystemRandomNumberGenerator()
        let window = HealthCheckSchedule.firstCheckWindow(interval: .seconds(5))
        let delays = (0..<1000).map { _ in
            HealthCheckSchedule.firstCheckDelay(interval: .seconds(5), using: &random)
        }
        #expect(delays.allSatisfy { $0 >= .zero && $0 < window })
        // Spread out, not bunched: both ends of the window are used and almost no two collide.
        #expect(delays.min()! < window / 10)
        #expect(delays.max()! > window * 9 / 10)
        #expect(Set(delays.map { $0.components.attoseconds / 1_000_000_000_000 }).count > 900)
    }

    @Test("a zero interval yields no delay rather than a crash")
    func zeroInterval() {
        var random = SystemRandomNumberGenerator()
        #expect(HealthCheckSchedule.firstCheckDelay(interval: .zero, using: &random) == .zero)
    }

    @Test("later checks stay on the grid of the first, and an overrun check is followed at once")
    func nextCheck() {
        let clock = ContinuousClock()
        let due = clock.now
        let soon = due + .milliseconds(30)
        #expect(HealthCheckSchedule.nextCheck(after: due, interval: .milliseconds(100), now: soon)
                == due + .milliseconds(100))
        let late = due + .milliseconds(250)
        #expect(HealthCheckSchedule.nextCheck(after: due, interval: .milliseconds(100), now: late) == late)
    }

    @Test("failure reasons read the way an operator writes timeouts and bytes")
    func failureTexts() {
        #expect(HealthCheckFailure.connectRefused.description == "connect refused")
        #expect(HealthCheckFailure.connectTimeout(.seconds(1)).description == "timeout after 1s while connecting")
        #expect(HealthCheckFailure.replyTimeout(.milliseconds(250), received: 0).description
                == "timeout after 250ms waiting for a reply")
        #expect(HealthCheckFailure.replyTimeout(.milliseconds(1500), received: 2).description
                == "timeout after 1.5s waiting for a reply (2 bytes received)")
        #expect(HealthCheckFailure.unexpectedReply(received: Array("-ERR\r\n".utf8), expected: [0x2B, 0x00]).description
                == #"reply did not start with expected bytes: got "-ERR\r\n", expected "+\x00""#)
        #expect(HealthCheckResult.passed.description == "ok")
        #expect(HealthStatus.unchecked.lastResultText == "not checked yet")
    }
}
