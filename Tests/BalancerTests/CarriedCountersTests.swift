import Balancer
import Glibc
import SystemPackage
import Testing

/// A takeover's counters (`CarriedCounters`): the replaced convey's totals go on in its successor.
@Suite("Counters carried across a takeover")
struct CarriedCountersTests {
    /// A runtime of `config(ports:)` whose counters have counted something of everything.
    static func busyRuntime(ports: [UInt16] = [9001, 9002]) -> BalancerRuntime {
        let runtime = BalancerRuntime(config: config(ports: ports))
        let view = runtime.view()
        let web = view.frontendCounters["web"]!
        for _ in 0..<7 { web.connectionOpened() }
        web.connectionClosed()
        web.addTx(700)
        web.addRx(7000)
        web.noBackend.wrappingAdd(3, ordering: .relaxed)
        web.overLimit.wrappingAdd(4, ordering: .relaxed)
        web.denied.wrappingAdd(5, ordering: .relaxed)
        web.queueTimeouts.wrappingAdd(6, ordering: .relaxed)
        web.queueFull.wrappingAdd(8, ordering: .relaxed)
        web.serversFull.wrappingAdd(9, ordering: .relaxed)
        let s0 = view.serverCounters[ServerID(pool: "pool", name: "s0")]!
        for _ in 0..<4 { s0.connectionOpened() }
        s0.addTx(400)
        s0.addRx(4000)
        s0.connectFailed()
        let s1 = view.serverCounters[ServerID(pool: "pool", name: "s1")]!
        for _ in 0..<3 { s1.connectionOpened() }
        s1.addTx(300)
        s1.addRx(3000)
        return runtime
    }

    @Test("the document reads back as written, in JSON with /stats' key names; another format or bytes that are no document are refused with the reason")
    func roundTrip() throws {
        let carried = Self.busyRuntime().carriedCounters()
        #expect(carried.frontends.map(\.name) == ["web"])
        #expect(carried.servers.map(\.name) == ["s0", "s1"])
        let bytes = carried.encoded()
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains("\"total_connections\":7") && text.contains("\"queue_full\":8") && text.contains("\"connect_failures\":1"), "\(text)")
        #expect(try CarriedCounters(decoding: bytes) == carried)

        var other = carried
        other.format = 2
        #expect(throws: CarriedCountersError.self) { try CarriedCounters(decoding: other.encoded()) }
        do {
            _ = try CarriedCounters(decoding: Array("{\"format\": 1}".utf8))
            Issue.record("a document without its parts was read")
        } catch {
            #expect(error.reason.hasPrefix("not a counters document"), "\(error)")
        }
        #expect(throws: CarriedCountersError.self) { try CarriedCounters(decoding: Array(bytes.prefix(bytes.count / 2))) }
        // A counter an older convey's document lacks reads as 0.
        let older = text.replacingOccurrences(of: "\"bad_proxy_header\":0,", with: "")
        #expect(older != text)
        let read = try CarriedCounters(decoding: Array(older.utf8))
        #expect(read.frontends.first?.badProxyHeader == 0 && read.frontends.first?.queueFull == 8)
    }

    @Test("the document travels in a memory file, read whole from its start; a file past the size limit is refused without being read")
    func memoryFile() throws {
        let bytes = Self.busyRuntime().carriedCounters().encoded()
        let file = try MemoryFile.holding(bytes, name: "test-counters")
        defer { try? file.close() }
        #expect(try MemoryFile.contents(of: file) == bytes, "read from the start though the offset is at the end")
        #expect(ftruncate(file.rawValue, off_t(MemoryFile.maxSize + 1)) == 0)  // sparse: nothing is written
        #expect(throws: Errno.fileTooLarge) { try MemoryFile.contents(of: file) }
    }

    @Test("a successor's totals go on from the carried ones: every counter added, open connections not (they stay where they are), and /stats shows the sums")
    func carryOnAdds() throws {
        let carried = Self.busyRuntime().carriedCounters()
        let successor = BalancerRuntime(config: config(ports: [9001, 9002]))
        let web = successor.view().frontendCounters["web"]!
        web.connectionOpened()  // its own connection, open
        web.addTx(1)
        let outcome = successor.carryOn(carried)
        #expect(outcome.frontends == 1 && outcome.servers == 2 && outcome.retiredFrontends.isEmpty && outcome.retiredServers.isEmpty)
        #expect(outcome.description == "the counts of 1 frontend(s) and 2 server(s) go on")
        let document = StatsDocument(view: successor.view(), mode: .proxy, uptime: .zero, version: "t")
        #expect(document.totals.totalConnections == 8)
        #expect(document.totals.currentConnections == 1, "only its own connection is open here")
        #expect(document.totals.bytesTx == 701 && document.totals.bytesRx == 7000)
        let f = try #require(document.frontends.first)
        #expect(f.noBackend == 3 && f.overLimit == 4 && f.denied == 5 && f.queueTimeouts == 6 && f.queueFull == 8 && f.serversFull == 9)
        let s0 = successor.view().serverCounters[ServerID(pool: "pool", name: "s0")]!.snapshot()
        #expect(s0 == TrafficTotals(totalConnections: 4, currentConnections: 0, bytesTx: 400, bytesRx: 4000, connectFailures: 1))
    }

    @Test("what the successor counted itself of the same events (an AF_XDP takeover's carried flows, opened on entering) is not counted twice")
    func alreadyCountedIsLeftOut() throws {
        let carried = Self.busyRuntime().carriedCounters()
        let successor = BalancerRuntime(config: config(ports: [9001, 9002]))
        // Two of the predecessor's flows entered its table, counted as opened on s0.
        let s0 = successor.view().serverCounters[ServerID(pool: "pool", name: "s0")]!
        let web = successor.view().frontendCounters["web"]!
        for _ in 0..<2 {
            s0.connectionOpened()
            web.connectionOpened()
        }
        _ = successor.carryOn(carried, alreadyCounted: successor.carriedCounters())
        #expect(s0.snapshot().totalConnections == 4, "the predecessor's 4, not 4 + 2")
        #expect(s0.snapshot().currentConnections == 2, "the carried flows are open here")
        #expect(web.snapshot().totalConnections == 7)
        #expect(s0.snapshot().bytesTx == 400)
    }

    @Test("counts of frontends and servers the successor's configuration lacks go to its retired totals: the whole and the pool's sum go on, and the log line names them")
    func goneOnesRetire() throws {
        let carried = Self.busyRuntime().carriedCounters()
        var smaller = config(ports: [9001])  // s1 is gone
        smaller.frontends[0].name = "www"    // and web is now www
        let successor = BalancerRuntime(config: smaller)
        let outcome = successor.carryOn(carried)
        #expect(outcome.frontends == 0 && outcome.retiredFrontends == ["web"])
        #expect(outcome.servers == 1 && outcome.retiredServers == [ServerID(pool: "pool", name: "s1")])
        #expect(outcome.description.contains("no longer configured, their counts added to the retired totals: frontend web, server pool/s1"),
                "\(outcome.description)")
        let document = StatsDocument(view: successor.view(), mode: .proxy, uptime: .zero, version: "t")
        #expect(document.totals.totalConnections == 7 && document.totals.bytesRx == 7000, "the whole goes on")
        #expect(BalancerRuntimeTests.poolField(successor, "pool", "total_connections") == 7, "s0's 4 and the retired s1's 3")
        // And on again: a second takeover carries the retired totals too.
        let third = BalancerRuntime(config: smaller)
        _ = third.carryOn(successor.carriedCounters())
        #expect(StatsDocument(view: third.view(), mode: .proxy, uptime: .zero, version: "t").totals.totalConnections == 7)
        #expect(BalancerRuntimeTests.poolField(third, "pool", "total_connections") == 7)
    }
}
