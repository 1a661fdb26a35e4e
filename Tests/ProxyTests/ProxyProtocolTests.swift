import Balancer
import Proxy
import Synchronization
import Testing

extension ProxyTests {
    @Suite struct ProxyProtocol {
        /// Runs one connection through a frontend with `version` and returns the first bytes the
        /// server received, the client's own address and the frontend's.
        func firstBytes(_ version: ProxyProtocolVersion, count: Int) async throws -> (bytes: [UInt8], client: Endpoint, vip: Endpoint) {
            let captured = Mutex<[UInt8]?>(nil)
            let server = try TestServer(name: "capture") { socket, _ in
                let bytes = (try? socket.receive(exactly: count)) ?? []
                captured.withLock { $0 = bytes }
                try? socket.send("ok")
                socket.shutdownWrite()
            }
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { $0.proxyProtocol = version })
            let vip = try await proxy.start()
            let client = try TestSocket.connect(to: vip)
            try client.send("HELLO")
            #expect(try client.receive(exactly: 2) == Array("ok".utf8))
            let source = client.localEndpoint
            client.close()
            try await proxy.stop()
            return (captured.withLock { $0 } ?? [], source, vip)
        }

        @Test("PROXY v1: the server reads the client's address line, then the client's bytes")
        func v1() async throws {
            // Ephemeral ports have 5 digits on Linux's default range, so the line length is known.
            let probe = "PROXY TCP4 127.0.0.1 127.0.0.1 00000 00000\r\nHELLO"
            let (bytes, client, vip) = try await firstBytes(.v1, count: probe.utf8.count)
            let expected = "PROXY TCP4 127.0.0.1 127.0.0.1 \(client.port) \(vip.port)\r\nHELLO"
            #expect(String(decoding: bytes, as: UTF8.self) == expected)
        }

        @Test("PROXY v2: the server reads the binary header with both addresses, then the client's bytes")
        func v2() async throws {
            let (bytes, client, vip) = try await firstBytes(.v2, count: 28 + 5)
            var expected: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
                                     0x21, 0x11, 0x00, 0x0C, 127, 0, 0, 1, 127, 0, 0, 1]
            expected += [UInt8(client.port >> 8), UInt8(client.port & 0xFF), UInt8(vip.port >> 8), UInt8(vip.port & 0xFF)]
            expected += Array("HELLO".utf8)
            #expect(bytes == expected)
        }

        @Test("PROXY headers for IPv6 carry 16-byte addresses (v2) and TCP6 text (v1)")
        func ipv6Encoding() throws {
            let source = try Endpoint(parsing: "[2001:db8::1]:40000")
            let destination = try Endpoint(parsing: "[2001:db8::2]:443")
            #expect(String(decoding: ProxyProtocolHeader.encode(.v1, source: source, destination: destination), as: UTF8.self)
                    == "PROXY TCP6 2001:db8::1 2001:db8::2 40000 443\r\n")
            let v2 = ProxyProtocolHeader.encode(.v2, source: source, destination: destination)
            #expect(v2.count == 16 + 36)
            #expect(Array(v2[12..<16]) == [0x21, 0x21, 0x00, 36])
            #expect(Array(v2[16..<32]) == source.address.networkBytes)
            #expect(Array(v2[48..<52]) == [0x9C, 0x40, 0x01, 0xBB])
            #expect(ProxyProtocolHeader.encode(.none, source: source, destination: destination).isEmpty)
        }
    }
}
