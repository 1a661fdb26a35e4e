import Balancer
import Testing
@testable import XSK

/// The `facts` message a running AF_XDP convey answers a takeover with: what the newcomer may
/// ask of it depends on what it offers, so an older convey on either side is never asked
/// for what it does not know.
@Suite("A takeover's facts message")
struct XDPTakeoverFactsTests {
    @Test("the message reads back as written, with the offers (sockets first, counters) as flags")
    func roundTrip() throws {
        let facts = XDPTakeoverFacts(pid: 42, mode: .passthrough, attachMode: .skb, workers: 2,
                                     natAddresses: [IPAddress("10.0.0.1")!], natPorts: 20000...29999)
        #expect(facts.message == "facts pid=42 mode=passthrough attach=skb workers=2 nat=10.0.0.1 ports=20000-29999 sockets-first=1 counters=1")
        #expect(XDPTakeoverFacts(message: facts.message) == facts)
    }

    @Test("a convey from before the counters (no counters=1) is not asked for them; one before sockets-first is not asked for its sockets early; unknown flags of a newer one are ignored")
    func olderAndNewerConveys() throws {
        let older = try #require(XDPTakeoverFacts(message: "facts pid=7 mode=dsr attach=native workers=1 sockets-first=1"))
        #expect(older.handsSocketsFirst && !older.handsCounters)
        let oldest = try #require(XDPTakeoverFacts(message: "facts pid=7 mode=dsr attach=native workers=1"))
        #expect(!oldest.handsSocketsFirst && !oldest.handsCounters)
        let newer = try #require(XDPTakeoverFacts(message: "facts pid=7 mode=dsr attach=native workers=1 counters=1 colour=blue"))
        #expect(newer.handsCounters && newer.mode == .dsr)
        #expect(XDPTakeoverFacts(message: "facts pid=7 mode=dsr") == nil, "workers and attach are required")
        #expect(XDPTakeoverFacts(message: "hello") == nil)
    }
}
