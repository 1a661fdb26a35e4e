import Balancer
import Testing

@Suite("Smooth weighted round robin")
struct SmoothWeightedRoundRobinTests {
    let anyFlow = flow(client: 1, port: 40000)

    @Test("weights a=5, b=1, c=1 interleave as a a b a c a a, cycle after cycle")
    func nginxSequence() {
        let route = makeRoute(.wrr, [ServerSpec(name: "a", weight: 5), ServerSpec(name: "b"),
                                     ServerSpec(name: "c")])
        var scheduler = Scheduler(route: route)
        #expect(scheduler.algorithm == .wrr)
        let picks = (0..<21).map { _ in scheduler.pick(for: anyFlow, in: route) }
        let cycle = ["a", "a", "b", "a", "c", "a", "a"]
        #expect(names(picks, in: route) == cycle + cycle + cycle)
    }

    @Test("every cycle of sum(weights) connections gives each server exactly its weight")
    func exactProportions() {
        let weights = [3, 7, 1, 4, 10]
        let route = makeRoute(.wrr, weights.enumerated().map { ServerSpec(name: "s\($0)", weight: $1) })
        var scheduler = Scheduler(route: route)
        let cycle = weights.reduce(0, +)
        for _ in 0..<5 {
            var counts = [Int](repeating: 0, count: weights.count)
            for _ in 0..<cycle {
                guard let i = scheduler.pick(for: anyFlow, in: route) else {
                    Issue.record("no server chosen")
                    return
                }
                counts[i] += 1
            }
            #expect(counts == weights)
        }
    }

    @Test("two equal servers alternate")
    func equalWeightsAlternate() {
        let route = makeRoute(.wrr, [ServerSpec(name: "a"), ServerSpec(name: "b")])
        var scheduler = Scheduler(route: route)
        let picks = (0..<6).map { _ in scheduler.pick(for: anyFlow, in: route) }
        #expect(names(picks, in: route) == ["a", "b", "a", "b", "a", "b"])
    }

    @Test("a draining (weight 0) server and a down server never get a new connection")
    func drainAndDownNeverChosen() {
        let route = makeRoute(.wrr, [ServerSpec(name: "a", weight: 2),
                                     ServerSpec(name: "draining", weight: 0, state: .drain),
                                     ServerSpec(name: "b", weight: 1),
                                     ServerSpec(name: "failed", weight: 5, state: .down)])
        var scheduler = Scheduler(route: route)
        let picks = names((0..<300).map { _ in scheduler.pick(for: anyFlow, in: route) }, in: route)
        #expect(picks.filter { $0 == "a" }.count == 200)
        #expect(picks.filter { $0 == "b" }.count == 100)
        #expect(!picks.contains("draining") && !picks.contains("failed"))
    }

    @Test("a weight-0 server that is still listed as selectable is skipped")
    func zeroWeightInSelectableSkipped() {
        var route = makeRoute(.wrr, [ServerSpec(name: "a"), ServerSpec(name: "zero", weight: 0)])
        route.selectable = [0, 1]
        var scheduler = Scheduler(route: route)
        let picks = names((0..<10).map { _ in scheduler.pick(for: anyFlow, in: route) }, in: route)
        #expect(picks == Array(repeating: "a", count: 10))
    }

    @Test("no server is chosen when every server is down")
    func noneSelectable() {
        let route = makeRoute(.wrr, [ServerSpec(name: "a", state: .down), ServerSpec(name: "b", state: .down)])
        var scheduler = Scheduler(route: route)
        #expect(scheduler.pick(for: anyFlow, in: route) == nil)
        #expect(scheduler.pick(for: anyFlow, in: route) == nil)
    }

    @Test("a scheduler handed a route with more servers than it was built for starts afresh")
    func routeOfAnotherSize() {
        let small = makeRoute(.wrr, [ServerSpec(name: "a"), ServerSpec(name: "b")])
        let grown = makeRoute(.wrr, [ServerSpec(name: "a"), ServerSpec(name: "b"), ServerSpec(name: "c", weight: 2)])
        var scheduler = Scheduler(route: small)
        _ = scheduler.pick(for: anyFlow, in: small)
        let picks = names((0..<8).map { _ in scheduler.pick(for: anyFlow, in: grown) }, in: grown)
        #expect(picks == ["c", "a", "b", "c", "c", "a", "b", "c"])
    }
}
