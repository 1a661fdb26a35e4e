import Balancer
import Testing

@Suite("Addresses in the configuration")
struct EndpointTests {
    @Test("IPv4 and bracketed IPv6 endpoints parse and print back the same")
    func roundTrip() throws {
        for text in ["10.77.0.1:80", "127.0.0.1:65535", "[2001:db8::1]:443", "[::1]:8080"] {
            #expect(try Endpoint(parsing: text).description == text)
        }
        #expect(try Endpoint(parsing: "10.0.0.1:80").address == .v4(0x0A00_0001))
    }

    @Test("a bad endpoint says what is wrong with it")
    func rejects() {
        #expect(throws: Endpoint.ParseError.missingPort("10.0.0.1")) { try Endpoint(parsing: "10.0.0.1") }
        #expect(throws: Endpoint.ParseError.badAddress("10.0.0.300")) { try Endpoint(parsing: "10.0.0.300:80") }
        #expect(throws: Endpoint.ParseError.badPort("0")) { try Endpoint(parsing: "10.0.0.1:0") }
        #expect(throws: Endpoint.ParseError.badPort("70000")) { try Endpoint(parsing: "10.0.0.1:70000") }
        #expect(throws: Endpoint.ParseError.badAddress("2001:db8::1:80")) { try Endpoint(parsing: "2001:db8::1:80") }
    }

    @Test("an IPv4-mapped IPv6 address is its IPv4 address (one address, one family)")
    func mappedIsIPv4() throws {
        #expect(IPAddress("::ffff:10.77.0.100") == .v4(0x0A4D_0064))
        #expect(IPAddress("::FFFF:a4d:64") == .v4(0x0A4D_0064))
        #expect(try Endpoint(parsing: "[::ffff:10.77.0.100]:80").description == "10.77.0.100:80")
        // Neighbours of the mapped block stay IPv6.
        #expect(IPAddress("::fffe:10.77.0.100")?.isIPv4 == false)
        #expect(IPAddress("1::ffff:10.77.0.100")?.isIPv4 == false)
        #expect(IPAddress("::10.77.0.100")?.isIPv4 == false)
    }

    @Test("network bytes are big-endian for both families")
    func networkBytes() {
        #expect(IPAddress("10.77.0.21")!.networkBytes == [10, 77, 0, 21])
        let v6 = IPAddress("2001:db8::ff")!
        #expect(v6.networkBytes.prefix(4) == [0x20, 0x01, 0x0d, 0xb8])
        #expect(v6.networkBytes.last == 0xff)
        #expect(IPAddress(ipv6NetworkBytes: v6.networkBytes) == v6)
    }
}
