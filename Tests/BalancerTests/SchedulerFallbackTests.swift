import Balancer
import Testing

@Suite("Retrying on the next server")
struct SchedulerFallbackTests {
    @Test("after a refused connect, the retries visit every other selectable server once",
          arguments: BalanceAlgorithm.allCases)
    func visitsEverySelectableOnce(algorithm: BalanceAlgorithm) throws {
        let route = makeRoute(algorithm, [ServerSpec(name: "a"), ServerSpec(name: "failed", state: .down),
                                          ServerSpec(name: "b"), ServerSpec(name: "c", weight: 3),
                                          ServerSpec(name: "draining", weight: 0, state: .drain),
                                          ServerSpec(name: "d")])
        var scheduler = Scheduler(route: route)
        let pick = scheduler.pick(for: flow(client: 9, port: 41000), in: route)
        let first = try #require(pick)
        var tried = [first]
        var attempt = 1
        while let next = Scheduler.fallback(after: first, attempt: attempt, in: route) {
            tried.append(next)
            attempt += 1
            if attempt > 10 { break }
        }
        #expect(tried.count == route.selectable.count)
        #expect(Set(tried) == Set(route.selectable))
        #expect(names(tried, in: route).allSatisfy { $0 != "failed" && $0 != "draining" })
    }

    @Test("the walk goes onward from the first choice and wraps around")
    func onwardAndWrapping() {
        let route = makeRoute(.wrr, equalServers(4))
        let walk = (1...4).map { Scheduler.fallback(after: 2, attempt: $0, in: route) }
        #expect(walk == [3, 0, 1, nil])
    }

    @Test("a first choice that left selection meanwhile is not retried; all others are")
    func firstChoiceNoLongerSelectable() {
        var specs = equalServers(4)
        specs[1].state = .down
        let route = makeRoute(.wrr, specs)
        let walk = (1...4).map { Scheduler.fallback(after: 1, attempt: $0, in: route) }
        #expect(walk == [2, 3, 0, nil])
    }

    @Test("there is nothing to fall back to when no server is selectable")
    func noneSelectable() {
        let route = makeRoute(.wrr, [ServerSpec(name: "a", state: .down)])
        #expect(Scheduler.fallback(after: 0, attempt: 1, in: route) == nil)
    }
}
