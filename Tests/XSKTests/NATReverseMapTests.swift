import Testing
@testable import XSK

@Suite("NAT reverse map: versions and the backend's close marks")
struct NATReverseMapTests {
    static let entry = NATReverseEntry(clientHi: 0, clientLo: 0xffff_0A4D_000A, clientPort: 40_000, clientMAC: 0x0200_0000_0001,
                                       vipHi: 0, vipLo: 0xffff_0A4D_0064, vipPort: 80, backendHi: 0,
                                       backendLo: 0xffff_0A4D_0003, backendPort: 8080, backendSlot: 0)

    @Test func aLateMarkFromAnEarlierFlowNeverHidesTheNextFlowsClose() throws {
        let map = NATReverseMap()
        let view = NATReverseView(map)
        view.publish(61_000, Self.entry, rewrite: nil)
        let first = try #require(view.read(61_000)).version
        // The port's flow ends and the port carries a new flow.
        view.retire(61_000)
        view.publish(61_000, Self.entry, rewrite: nil)
        let second = try #require(view.read(61_000)).version
        #expect(second > first)
        #expect(view.serverClose(61_000) == .open)
        // The new flow's backend sends FIN; then a worker that read the first flow's version
        // before the port changed hands gets to store its mark.
        view.markClosedByServer(61_000, version: second, reset: false)
        view.markClosedByServer(61_000, version: first, reset: true)
        #expect(view.serverClose(61_000) == .finished, "the stale mark is not stored")
        // A RST after the FIN is kept; a FIN after the RST does not undo it.
        view.markClosedByServer(61_000, version: second, reset: true)
        #expect(view.serverClose(61_000) == .reset)
        view.markClosedByServer(61_000, version: second, reset: false)
        #expect(view.serverClose(61_000) == .reset)
        // A mark left by an earlier flow says nothing about the next one.
        view.retire(61_000)
        view.publish(61_000, Self.entry, rewrite: nil)
        #expect(view.serverClose(61_000) == .open)
        view.markClosedByServer(61_000, version: second, reset: true)
        #expect(view.serverClose(61_000) == .open)
    }
}
