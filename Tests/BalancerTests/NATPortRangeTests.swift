import Balancer
import Testing

@Suite("Passthrough NAT ports against the host's ephemeral ports")
struct NATPortRangeTests {
    let facts = NATPortRange.LocalPortFacts(ephemeral: 32768...60999)

    @Test("ranges parse as FIRST-LAST")
    func parse() {
        #expect(NATPortRange.parse("61000-65535") == 61000...65535)
        #expect(NATPortRange.parse(" 1 - 2 ") == 1...2)
        #expect(NATPortRange.parse("2-1") == nil)
        #expect(NATPortRange.parse("0-10") == nil)
        #expect(NATPortRange.parse("61000") == nil)
    }

    @Test("the default range is the ports above the kernel's ephemeral range")
    func defaultRange() {
        #expect(NATPortRange.defaultRange(facts) == 61000...65535)
        #expect(NATPortRange.defaultRange(.init(ephemeral: 1024...65535)) == nil)
    }

    @Test("an overlap with unreserved ephemeral ports is refused, and the message says how to fix it")
    func overlap() throws {
        #expect(NATPortRange.conflict(of: 61000...65535, with: facts) == nil)
        let message = try #require(NATPortRange.conflict(of: 20000...40000, with: facts))
        #expect(message.contains("at 32768-40000"))
        #expect(message.contains("sysctl -w net.ipv4.ip_local_reserved_ports=20000-40000"))
    }

    @Test("reserved ports make an overlap safe")
    func reserved() {
        let reserved = NATPortRange.LocalPortFacts(ephemeral: 32768...60999, reserved: [40000...40100])
        #expect(NATPortRange.conflict(of: 40000...40100, with: reserved) == nil)
        #expect(reserved.unreservedOverlap(with: 39990...40110) == [39990...39999, 40101...40110])
    }
}
