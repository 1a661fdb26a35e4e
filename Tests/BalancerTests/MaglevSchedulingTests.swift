import Balancer
import Testing

@Suite("Maglev scheduling")
struct MaglevSchedulingTests {
    /// 2000 connections from 500 clients, 4 ports each.
    let flows: [FlowKey] = (0..<2000).map { (n: Int) -> FlowKey in
        flow(client: UInt32(n / 4 + 1), port: UInt16(40000 + n % 4))
    }

    @Test("two balancers with the same config send every connection to the same server")
    func sameChoiceOnEveryBalancer() {
        // Each "balancer" builds its own route and table, as two processes would.
        let first = makeRoute(.maglev, equalServers(7))
        let second = makeRoute(.maglev, equalServers(7))
        var one = Scheduler(route: first)
        var other = Scheduler(route: second)
        #expect(one.algorithm == .maglev)
        for f in flows {
            #expect(one.pick(for: f, in: first) == other.pick(for: f, in: second))
        }
    }

    @Test("a connection goes to the server its 5-tuple hash owns in the table")
    func pickReadsTheTable() throws {
        let route = makeRoute(.maglev, [ServerSpec(name: "a"), ServerSpec(name: "down", state: .down),
                                        ServerSpec(name: "b", weight: 2)])
        let table = try #require(route.maglev)
        var scheduler = Scheduler(route: route)
        for f in flows.prefix(200) {
            let position = try #require(table.lookup(f.hash))
            #expect(scheduler.pick(for: f, in: route) == route.selectable[position])
        }
    }

    @Test("connections spread over every server, and down or draining servers get none")
    func spreadsOverSelectable() {
        let route = makeRoute(.maglev, [ServerSpec(name: "a"), ServerSpec(name: "failed", state: .down),
                                        ServerSpec(name: "b"), ServerSpec(name: "draining", weight: 0, state: .drain),
                                        ServerSpec(name: "c")])
        var scheduler = Scheduler(route: route)
        var counts: [String: Int] = [:]
        for f in flows {
            let name = names([scheduler.pick(for: f, in: route)], in: route)[0]
            counts[name, default: 0] += 1
        }
        #expect(Set(counts.keys) == ["a", "b", "c"])
        for server in ["a", "b", "c"] {
            // 2000 / 3 = 667 each on average; a hash spread keeps each well within ±20%.
            #expect((533...800).contains(counts[server] ?? 0), "\(server) got \(counts[server] ?? 0)")
        }
    }

    @Test("when a server fails, only its own connections move")
    func failureMovesOnlyItsConnections() {
        let healthy = makeRoute(.maglev, equalServers(10))
        var failed = equalServers(10)
        failed[3].state = .down
        let degraded = makeRoute(.maglev, failed)
        var before = Scheduler(route: healthy)
        var after = Scheduler(route: degraded)
        var moved = 0
        for f in flows {
            let old = before.pick(for: f, in: healthy)
            let new = after.pick(for: f, in: degraded)
            #expect(new != 3)
            if old != new {
                moved += 1
            }
        }
        // Server 3 held about 1/10 of the 2000 connections; Maglev moves little beyond those.
        #expect(moved <= 2000 / 10 + 2000 / 50, "\(moved) connections moved")
    }

    @Test("without a prebuilt table, connections are still placed alike on every balancer")
    func withoutTable() {
        let first = makeRoute(.maglev, equalServers(5), withMaglevTable: false)
        let second = makeRoute(.maglev, equalServers(5), withMaglevTable: false)
        var one = Scheduler(route: first)
        var other = Scheduler(route: second)
        var seen = Set<Int>()
        for f in flows {
            let pick = one.pick(for: f, in: first)
            #expect(pick == other.pick(for: f, in: second))
            #expect(pick == first.selectable[Int(f.hash % 5)])
            if let pick { seen.insert(pick) }
        }
        #expect(seen == [0, 1, 2, 3, 4])
    }

    @Test("no server is chosen when none is selectable")
    func noneSelectable() {
        let route = makeRoute(.maglev, [ServerSpec(name: "a", state: .down)])
        var scheduler = Scheduler(route: route)
        #expect(scheduler.pick(for: flows[0], in: route) == nil)
    }
}
