import Balancer
import Testing

@Suite("Source hash scheduling")
struct SourceHashTests {
    @Test("every connection of one client lands on the same server")
    func clientSticks() {
        let route = makeRoute(.source, equalServers(8))
        var scheduler = Scheduler(route: route)
        #expect(scheduler.algorithm == .source)
        for client in UInt32(1)...50 {
            let picks = Set((0..<40).map { scheduler.pick(for: flow(client: client, port: UInt16(30000 + $0 * 7)), in: route) })
            #expect(picks.count == 1, "client \(client) went to \(picks)")
            #expect(picks.first! != nil)
        }
    }

    @Test("the client stays on its server whichever VIP port it connects to")
    func vipPortIgnored() {
        let route = makeRoute(.source, equalServers(8))
        var scheduler = Scheduler(route: route)
        let client = Endpoint(address: .v4(0x0A4D_0203), port: 50000)
        let web = scheduler.pick(for: FlowKey(client: client, vip: Endpoint(address: .v4(0x0A4D_0064), port: 80)), in: route)
        let tls = scheduler.pick(for: FlowKey(client: client, vip: Endpoint(address: .v4(0x0A4D_0064), port: 443)), in: route)
        #expect(web == tls)
    }

    @Test("different clients spread over every server; down or draining servers get none")
    func clientsSpread() {
        let route = makeRoute(.source, [ServerSpec(name: "a"), ServerSpec(name: "b"),
                                        ServerSpec(name: "failed", state: .down),
                                        ServerSpec(name: "draining", weight: 0, state: .drain),
                                        ServerSpec(name: "c")])
        var scheduler = Scheduler(route: route)
        var counts: [String: Int] = [:]
        for client in UInt32(1)...1500 {
            let name = names([scheduler.pick(for: flow(client: client, port: 40000), in: route)], in: route)[0]
            counts[name, default: 0] += 1
        }
        #expect(Set(counts.keys) == ["a", "b", "c"])
        for server in ["a", "b", "c"] {
            #expect((400...600).contains(counts[server] ?? 0), "\(server) got \(counts[server] ?? 0)")
        }
    }

    @Test("no server is chosen when none is selectable")
    func noneSelectable() {
        let route = makeRoute(.source, [ServerSpec(name: "a", weight: 0, state: .drain)])
        var scheduler = Scheduler(route: route)
        #expect(scheduler.pick(for: flow(client: 1, port: 1), in: route) == nil)
    }
}
