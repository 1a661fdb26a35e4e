import Balancer
import Testing
@testable import XSK

/// Backend slots are reused, so servers may come and go for the life of the process; a slot
/// is reused only when no flow can name it any more and its traffic has been counted.
@Suite("Backend slots: reused after every worker swept and a flush ran, never under a live flow")
struct BackendSlotReuseTests {
    static func moved(_ fixture: RoutesFixture, server: Int, to last: UInt32) -> PacketRoutes {
        fixture.republish { snapshot in
            snapshot.frontends[0].servers[server].address = Endpoint(address: .v4(0x0A4D_0000 + last), port: 8080)
        }
    }

    static func waitsForSlot(_ routes: PacketRoutes) -> Bool {
        routes.unresolved.contains(where: \.waitsForSlot)
    }

    @Test func aRetiredSlotWaitsForEverySweepAndAFlushThenServesTheNewServer() {
        var fixture = RoutesFixture(balance: .wrr, count: 2, maxBackendSlots: 3)
        var dsr = DSRForwarderTests.forwarder(fixture)
        // A second worker that never sweeps (no traffic, no batches).
        var idle: DSRForwarder? = DSRForwarderTests.forwarder(fixture)
        var onFirst: [UInt16] = []
        for port in UInt16(5000)..<5020 where DSRForwarderTests.send(clientFrame(port: port, flags: TCPHeader.syn), &dsr) == 1 {
            onFirst.append(port)
        }
        #expect(!onFirst.isEmpty)
        // s1 moves to .50 (a new key: slot 2), then to .51: slot 0 is retired but its flows
        // live, slot 2 is retired too, and the limit of 3 is reached.
        fixture.macs[Endpoint(address: .v4(0x0A4D_0032), port: 8080).address] = MACAddress(rawValue: 0x02_00_00_00_00_50)
        fixture.macs[Endpoint(address: .v4(0x0A4D_0033), port: 8080).address] = MACAddress(rawValue: 0x02_00_00_00_00_51)
        #expect(!Self.waitsForSlot(Self.moved(fixture, server: 0, to: 0x32)))
        #expect(Self.waitsForSlot(Self.moved(fixture, server: 0, to: 0x33)))
        #expect(fixture.publisher.heldBackendSlots == 3)
        // The busy worker sweeps its table: s1's old flows end (its slot is out of the routes).
        for t in UInt64(2)...5 { dsr.beginBatch(now: t * second) }
        #expect(dsr.counters.snapshot().flowsEnded == UInt64(onFirst.count))
        // The worker that never swept holds the slots back, whatever the flushes.
        for _ in 0..<3 { fixture.publisher.countersFlushStarting() }
        #expect(!fixture.publisher.canReclaimSlots)
        #expect(Self.waitsForSlot(Self.moved(fixture, server: 0, to: 0x33)))
        #expect(idle?.flowCount == 0)
        idle = nil
        // Every live worker is clean now, but no flush has run since that was seen: still held.
        #expect(Self.waitsForSlot(Self.moved(fixture, server: 0, to: 0x33)))
        #expect(!fixture.publisher.canReclaimSlots)
        fixture.publisher.countersFlushStarting()
        #expect(!fixture.publisher.canReclaimSlots)
        // That flush may have read the counters before the last flows ended: still held.
        #expect(Self.waitsForSlot(Self.moved(fixture, server: 0, to: 0x33)))
        fixture.publisher.countersFlushStarting()
        #expect(fixture.publisher.canReclaimSlots)
        let routes = Self.moved(fixture, server: 0, to: 0x33)
        #expect(!Self.waitsForSlot(routes))
        #expect(fixture.publisher.heldBackendSlots <= 3)
        // New flows reach the new server; the old flows are gone, not delivered to it.
        dsr.beginBatch(now: 6 * second)
        var toNew = 0
        for port in UInt16(6000)..<6040 {
            var f = clientFrame(port: port, flags: TCPHeader.syn)
            if withFrame(&f, { dsr.handle($0) }) == .transmit, TestFrames.fields(f).dstMAC == 0x02_00_00_00_00_51 {
                toNew += 1
            }
        }
        #expect(toNew > 10)
        for port in onFirst { #expect(DSRForwarderTests.send(clientFrame(port: port, flags: TCPHeader.ack), &dsr) == nil) }
    }

    /// Nothing else publishes once the workers are clean: polling `canReclaimSlots` while
    /// flushes run is enough for it to turn true (the control plane then republishes).
    @Test func aWaitingServerNeedsNoOtherPublishToGetAFreedSlot() {
        let fixture = RoutesFixture(balance: .wrr, count: 2, maxBackendSlots: 2)
        var dsr = DSRForwarderTests.forwarder(fixture)
        #expect(DSRForwarderTests.send(clientFrame(port: 9000, flags: TCPHeader.syn), &dsr) != nil)
        #expect(Self.waitsForSlot(Self.moved(fixture, server: 0, to: 0x34)))
        for t in UInt64(2)...5 { dsr.beginBatch(now: t * second) }
        var polls = 0
        while !fixture.publisher.canReclaimSlots && polls < 5 {
            fixture.publisher.countersFlushStarting()
            polls += 1
        }
        #expect(fixture.publisher.canReclaimSlots)
        #expect(polls == 2)
        #expect(!Self.waitsForSlot(Self.moved(fixture, server: 0, to: 0x34)))
    }

    @Test func serversComeAndGoForeverWithinTheSlotLimit() {
        var fixture = RoutesFixture(balance: .wrr, count: 2, maxBackendSlots: 4)
        var dsr = DSRForwarderTests.forwarder(fixture)
        var now = 2 * second
        for round in 0..<60 {
            let last = UInt32(0x40 + round % 150)
            let address = Endpoint(address: .v4(0x0A4D_0000 + last), port: 8080).address
            fixture.macs[address] = MACAddress(rawValue: 0x02_00_00_00_01_00 | UInt64(last))
            var routes = Self.moved(fixture, server: round % 2, to: last)
            // Flows to the current servers come and go meanwhile.
            for port in UInt16(7000)..<7004 { _ = DSRForwarderTests.send(clientFrame(port: port &+ UInt16(round * 4), flags: TCPHeader.syn), &dsr) }
            for _ in 0..<2 {
                now += 2 * second
                dsr.beginBatch(now: now)
                fixture.publisher.countersFlushStarting()
                routes = Self.moved(fixture, server: round % 2, to: last)
            }
            #expect(!Self.waitsForSlot(routes), "round \(round): \(routes.unresolved)")
            #expect(fixture.publisher.heldBackendSlots <= 4)
        }
    }
}

/// Frontend indices stay with their VIP: flow keys hold them, so a reload that adds or removes
/// another frontend must not change what an index means under established flows.
@Suite("Frontend indices: stable across reloads, reused only after the old VIP's flows are swept")
struct FrontendIndexTests {
    static func config(_ frontends: [(String, UInt32)]) -> ConveyConfig {
        let servers = (1...2).map { ServerConfig(name: "s\($0)", address: RoutesFixture.backendAddress($0)) }
        return ConveyConfig(frontends: frontends.map { name, last in
                                FrontendConfig(name: name, listen: Endpoint(address: .v4(0x0A4D_0000 + last), port: 80),
                                               pool: "pool", balance: .wrr)
                            },
                            // No drain: a removed frontend's flows end at once (no real clock here).
                            pools: [PoolConfig(name: "pool", drainTimeout: .zero, servers: servers)])
    }

    static func send(to vip: UInt32, port: UInt16, flags: UInt8, _ dsr: inout DSRForwarder) -> Int? {
        var f = TestFrames.ipv4TCP(src: 0x0A4D_000A, dst: 0x0A4D_0000 + vip, sport: port, dport: 80, flags: flags)
        guard withFrame(&f, { dsr.handle($0) }) == .transmit else { return nil }
        return RoutesFixture.backendNumber(mac: TestFrames.fields(f).dstMAC)
    }

    @Test func aReloadThatAddsOrRemovesAFrontendKeepsTheOthersFlows() {
        let runtime = BalancerRuntime(config: Self.config([("b", 0x65), ("c", 0x64)]))
        let publisher = PacketRoutesPublisher(maxBackendSlots: 16)
        let macs = Dictionary(uniqueKeysWithValues: (1...2).map {
            (RoutesFixture.backendAddress($0).address, MACAddress(rawValue: RoutesFixture.backendMAC($0)))
        })
        func publish() { publisher.publish(snapshot: runtime.snapshots.load().value, backendMACs: macs,
                                           interfaceMAC: RoutesFixture.interfaceMAC) }
        publish()
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 1024), routes: publisher)
        dsr.beginBatch(now: second)
        var onC: [UInt16: Int] = [:]
        for port in UInt16(1000)..<1020 { onC[port] = Self.send(to: 0x64, port: port, flags: TCPHeader.syn, &dsr) }
        for port in UInt16(2000)..<2010 { #expect(Self.send(to: 0x65, port: port, flags: TCPHeader.syn, &dsr) != nil) }
        #expect(onC.count == 20 && dsr.flowCount == 30)

        // "b" goes: "c" is the only frontend now, and its flows go on to the same backends.
        runtime.apply(Self.config([("c", 0x64)]))
        publish()
        dsr.beginBatch(now: 2 * second)
        for (port, backend) in onC { #expect(Self.send(to: 0x64, port: port, flags: TCPHeader.ack, &dsr) == backend) }
        // "b"'s flows are swept away (its VIP is no longer routed), none of "c"'s.
        for t in UInt64(3)...6 { dsr.beginBatch(now: t * second) }
        #expect(dsr.flowCount == 20)
        #expect(dsr.counters.snapshot().flowsEnded == 10)

        // "a" arrives (sorting first) and may take "b"'s old index once it is free; "c" keeps its own.
        for _ in 0..<2 { publisher.countersFlushStarting() }
        runtime.apply(Self.config([("a", 0x66), ("c", 0x64)]))
        publish()
        dsr.beginBatch(now: 7 * second)
        for (port, backend) in onC { #expect(Self.send(to: 0x64, port: port, flags: TCPHeader.ack, &dsr) == backend) }
        #expect(Self.send(to: 0x66, port: 3000, flags: TCPHeader.syn, &dsr) != nil)
        #expect(Self.send(to: 0x66, port: 3000, flags: TCPHeader.ack, &dsr) != nil)
        #expect(Self.send(to: 0x65, port: 2000, flags: TCPHeader.ack, &dsr) == nil)
        #expect(dsr.counters.snapshot().drops(.noFlow) == 0)
    }
}
