import Balancer
import Testing

@Suite("Weighted least connections")
struct LeastConnectionsTests {
    let anyFlow = flow(client: 1, port: 40000)

    /// Records `n` established connections on server `index`.
    func open(_ n: Int, on index: Int, in route: FrontendRoute) {
        for _ in 0..<n { route.servers[index].counters.connectionOpened() }
    }

    @Test("the server with the fewest open connections gets the next one")
    func prefersLeastLoaded() {
        let route = makeRoute(.leastconn, equalServers(3))
        open(5, on: 0, in: route)
        open(2, on: 1, in: route)
        open(7, on: 2, in: route)
        var scheduler = Scheduler(route: route)
        #expect(scheduler.algorithm == .leastconn)
        #expect(scheduler.pick(for: anyFlow, in: route) == 1)

        // Once server 1 catches up and server 2's clients leave, server 2 is the least loaded.
        open(4, on: 1, in: route)
        for _ in 0..<6 { route.servers[2].counters.connectionClosed() }
        #expect(scheduler.pick(for: anyFlow, in: route) == 2)
    }

    @Test("weights are honoured: connections per unit of weight, not raw counts, decide")
    func weightsHonoured() {
        let route = makeRoute(.leastconn, [ServerSpec(name: "small", weight: 1),
                                           ServerSpec(name: "big", weight: 3)])
        // big holds 5 connections for weight 3 (1.67 each), small 2 for weight 1: big is less loaded.
        open(2, on: 0, in: route)
        open(5, on: 1, in: route)
        var scheduler = Scheduler(route: route)
        #expect(scheduler.pick(for: anyFlow, in: route) == 1)
    }

    @Test("connections that stay open settle in proportion to the weights")
    func settlesInProportion() {
        let route = makeRoute(.leastconn, [ServerSpec(name: "a", weight: 1), ServerSpec(name: "b", weight: 3),
                                           ServerSpec(name: "c", weight: 4)])
        var scheduler = Scheduler(route: route)
        for _ in 0..<800 {
            guard let i = scheduler.pick(for: anyFlow, in: route) else {
                Issue.record("no server chosen")
                return
            }
            route.servers[i].counters.connectionOpened()
        }
        let open = route.servers.map { $0.counters.currentConnections.load(ordering: .relaxed) }
        #expect(open == [100, 300, 400])
    }

    @Test("a burst on an idle pool is spread over the tied servers, not piled on the first")
    func tiesRotate() {
        let route = makeRoute(.leastconn, equalServers(3))
        var scheduler = Scheduler(route: route)
        // The counters do not move during the burst (no connection established yet).
        let picks = (0..<9).map { _ in scheduler.pick(for: anyFlow, in: route) }
        #expect(picks == [0, 1, 2, 0, 1, 2, 0, 1, 2])
    }

    @Test("down and draining servers are never chosen, however idle they are")
    func downAndDrainingNeverChosen() {
        let route = makeRoute(.leastconn, [ServerSpec(name: "busy"),
                                           ServerSpec(name: "failed", state: .down),
                                           ServerSpec(name: "draining", weight: 0, state: .drain)])
        open(1000, on: 0, in: route)
        var scheduler = Scheduler(route: route)
        let picks = names((0..<20).map { _ in scheduler.pick(for: anyFlow, in: route) }, in: route)
        #expect(picks == Array(repeating: "busy", count: 20))
    }

    @Test("no server is chosen when none is selectable")
    func noneSelectable() {
        let route = makeRoute(.leastconn, [ServerSpec(name: "a", state: .down),
                                           ServerSpec(name: "b", weight: 0, state: .drain)])
        var scheduler = Scheduler(route: route)
        #expect(scheduler.pick(for: anyFlow, in: route) == nil)
    }
}
