import Balancer
@testable import Proxy
import Synchronization
import Testing

extension ProxyTests {
    /// `accept_proxy_protocol`: behind another balancer, each client connection opens with a
    /// PROXY header naming the real client, which convey then treats as the client.
    @Suite struct AcceptProxyProtocol {
        static func read(_ bytes: [UInt8]) -> ProxyHeaderReader.Result {
            bytes.withUnsafeBytes { ProxyHeaderReader.read($0) }
        }

        static func read(_ text: String) -> ProxyHeaderReader.Result { read(Array(text.utf8)) }

        @Test("the reader takes v1 and v2 headers as convey's own encoder writes them, for both families, and says how long each is")
        func readsWhatTheEncoderWrites() throws {
            let pairs = [
                (try Endpoint(parsing: "203.0.113.7:40000"), try Endpoint(parsing: "10.0.0.1:443")),
                (try Endpoint(parsing: "[2001:db8::7]:40000"), try Endpoint(parsing: "[2001:db8::1]:443")),
            ]
            for (source, destination) in pairs {
                for version in [ProxyProtocolVersion.v1, .v2] {
                    let header = ProxyProtocolHeader.encode(version, source: source, destination: destination)
                    #expect(Self.read(header + Array("GET /".utf8)) == .header(length: header.count, source: source, destination: destination),
                            "\(version) \(source)")
                }
            }
        }

        @Test("v1 UNKNOWN and v2 LOCAL (a balancer's own health check) keep the connection's peer; TLVs after the v2 addresses are skipped")
        func localAndUnknown() {
            #expect(Self.read("PROXY UNKNOWN\r\nrest") == .header(length: 15, source: nil, destination: nil))
            #expect(Self.read("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n") == .header(length: 35, source: nil, destination: nil))
            var local = ProxyProtocolHeader.v2Signature + [0x20, 0x00, 0x00, 0x00]
            #expect(Self.read(local) == .header(length: 16, source: nil, destination: nil))
            local[15] = 3
            #expect(Self.read(local + [1, 2, 3, 9]) == .header(length: 19, source: nil, destination: nil), "a LOCAL header's block is skipped too")
            // UDP or a Unix socket (not what a TCP connection carries): its own ends stand, as HAProxy does.
            let udp = ProxyProtocolHeader.v2Signature + [0x21, 0x12, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12)
            #expect(Self.read(udp) == .header(length: 28, source: nil, destination: nil))
            // TCP over IPv4 with a 7-byte TLV (type, length 4, value) after the addresses.
            let tlv: [UInt8] = [0x04, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF]
            let withTLV = ProxyProtocolHeader.v2Signature + [0x21, 0x11, 0x00, UInt8(12 + tlv.count)]
                + [198, 51, 100, 9, 10, 0, 0, 1, 0x1F, 0x90, 0x01, 0xBB] + tlv
            #expect(Self.read(withTLV + [0x47]) == .header(length: withTLV.count, source: Endpoint(address: .v4(0xC633_6409), port: 8080),
                                                           destination: Endpoint(address: .v4(0x0A00_0001), port: 443)))
        }

        @Test("a dual-stack balancer's IPv4 clients, in TCP6 lines or v2 IPv6 blocks as IPv4-mapped addresses, are the IPv4 clients; the client's bytes in a refusal reach the log escaped")
        func mappedAddressesAndEscaping() throws {
            let client = try Endpoint(parsing: "198.51.100.7:40000")
            let vip = try Endpoint(parsing: "10.0.0.1:443")
            let line = "PROXY TCP6 ::ffff:198.51.100.7 ::ffff:10.0.0.1 40000 443\r\n"
            #expect(Self.read(line) == .header(length: line.utf8.count, source: client, destination: vip))
            let mapped = ProxyProtocolHeader.v2Signature + [0x21, 0x21, 0x00, 36]
                + [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 198, 51, 100, 7] + [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 0, 0, 1]
                + [0x9C, 0x40, 0x01, 0xBB]
            #expect(Self.read(mapped) == .header(length: 52, source: client, destination: vip))
            // The text says the family: a TCP4 line with IPv6 text, or TCP6 with dotted quads, is refused.
            #expect(Self.read("PROXY TCP4 ::ffff:198.51.100.7 ::ffff:10.0.0.1 40000 443\r\n") != .incomplete)
            if case .header = Self.read("PROXY TCP6 198.51.100.7 10.0.0.1 40000 443\r\n") { Issue.record("a TCP6 line with IPv4 text was taken") }
            guard case .invalid(let reason) = Self.read("PROXY TCP4 1.2.3.4\n2026 forged line\u{1B}[2J 5.6.7.8 1 2\r\n") else {
                Issue.record("a line with a bare LF was taken")
                return
            }
            #expect(reason.contains("1.2.3.4\\x0a2026 forged line\\x1b[2J") && !reason.contains("\n"), "\(reason)")
        }

        @Test("a header still arriving is incomplete at every length short of whole, never invalid")
        func incompleteAtEveryPrefix() {
            let headers = [Array("PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\n".utf8),
                           ProxyProtocolHeader.encode(.v2, source: Endpoint(address: .v4(0xCB00_7107), port: 40000),
                                                      destination: Endpoint(address: .v4(0x0A00_0001), port: 443))]
            for header in headers {
                for n in 0..<header.count {
                    #expect(Self.read(Array(header.prefix(n))) == .incomplete, "\(n) of \(header.count) bytes")
                }
                #expect(Self.read(header) != .incomplete)
            }
        }

        @Test("what is no header is refused with the reason: other first bytes, a malformed v1 line, a v2 header of another version, command or protocol, or too long")
        func invalid() {
            func reason(_ r: ProxyHeaderReader.Result) -> String {
                if case .invalid(let text) = r { return text }
                return "not refused: \(r)"
            }
            #expect(reason(Self.read("GET / HTTP/1.1\r\n")).hasPrefix("no PROXY protocol header"))
            #expect(reason(Self.read("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n")).contains("not 'TCP4|TCP6"))
            #expect(reason(Self.read("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n")).contains("not 'TCP4|TCP6"))
            #expect(reason(Self.read("PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n")).contains("not TCP4 addresses"))
            #expect(reason(Self.read("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n")).contains("not TCP6 addresses"))
            #expect(reason(Self.read("PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n")).contains("ports are not 0-65535"))
            #expect(reason(Self.read("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n")).contains("ports are not 0-65535"))
            #expect(reason(Self.read("PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n")).contains("ports are not 0-65535"))
            #expect(reason(Self.read("PROXY " + String(repeating: "x", count: 120))).contains("without its CRLF in 107 bytes"))
            let v2 = ProxyProtocolHeader.v2Signature
            #expect(reason(Self.read(v2 + [0x11, 0x11, 0x00, 0x00])).contains("of version 1"))
            #expect(reason(Self.read(v2 + [0x22, 0x11, 0x00, 0x00])).contains("command 2"))
            #expect(reason(Self.read(v2 + [0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4])).contains("4-byte address block"))
            #expect(reason(Self.read(v2 + [0x21, 0x21, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12))).contains("12-byte address block"))
            #expect(reason(Self.read(v2 + [0x21, 0x11, 0x10, 0x00])).contains("more than the 4096 taken"))
        }

        @Test("behind a balancer: the header's client is the client (sent on in convey's own v1 header), the client's bytes follow it untouched, also when the header comes in two pieces")
        func clientFromTheHeader() async throws {
            let captured = Mutex<[[UInt8]]>([])
            // Answers each connection with what it first read (the header convey sends on, and
            // the client's bytes after it, up to their end "HELLO").
            let server = try TestServer(name: "capture") { socket, _ in
                var bytes: [UInt8] = []
                while bytes.count < 200, !bytes.reversed().starts(with: Array("HELLO".utf8).reversed()),
                      let byte = try? socket.receive(exactly: 1) {
                    bytes += byte
                }
                captured.withLock { $0.append(bytes) }
                try? socket.send("ok")
                socket.shutdownWrite()
            }
            defer { server.stop() }
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                     frontend: { $0.acceptProxyProtocol = true; $0.proxyProtocol = .v1 })
            let vip = try await proxy.start()
            let v1 = try TestSocket.connect(to: vip)
            try v1.send("PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\nHELLO")
            #expect(try v1.receive(exactly: 2) == Array("ok".utf8))
            v1.close()
            // A v2 header in two pieces, the client's bytes after a pause.
            let v2 = try TestSocket.connect(to: vip)
            let header = ProxyProtocolHeader.encode(.v2, source: try Endpoint(parsing: "203.0.113.7:40000"),
                                                    destination: try Endpoint(parsing: "10.0.0.1:443"))
            try v2.send(Array(header.prefix(10)))
            try await Task.sleep(for: .milliseconds(50))
            try v2.send(Array(header.dropFirst(10)))
            try await Task.sleep(for: .milliseconds(50))
            try v2.send("HELLO")
            #expect(try v2.receive(exactly: 2) == Array("ok".utf8))
            v2.close()
            try await proxy.stop()
            let lines = captured.withLock { $0 }.map { String(decoding: $0, as: UTF8.self) }
            // The client, and the address it connected to at the balancer.
            let wanted = "PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\nHELLO"
            #expect(lines == [wanted, wanted], "the server saw the balancer's client, then the client's bytes (\(vip))")
            #expect(proxy.counters().totalConnections.load(ordering: .relaxed) == 2)
            #expect(proxy.counters().badProxyHeader.load(ordering: .relaxed) == 0)
        }

        @Test("with proxy_protocol_peers, only those peers send a header: a client from elsewhere is its own client, and bytes that look like a header are its data, not a claim")
        func onlyListedPeersSendHeaders() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let elsewhere = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { frontend in
                frontend.acceptProxyProtocol = true
                frontend.proxyProtocolPeers = SourceFilter(allow: [SourceFilter.Prefix("10.9.9.0/24")!])
                frontend.sources = SourceFilter(allow: [SourceFilter.Prefix("127.0.0.0/8")!])
            })
            let vip = try await elsewhere.start()
            let direct = try TestSocket.connect(to: vip)
            direct.setTimeout(5)
            let forged = "PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\n"
            try direct.send(forged)
            #expect(try direct.receive(exactly: forged.utf8.count) == Array(forged.utf8), "echoed as the client's own bytes")
            direct.close()
            #expect(elsewhere.counters().badProxyHeader.load(ordering: .relaxed) == 0)
            try await elsewhere.stop()

            let listed = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)], frontend: { frontend in
                frontend.acceptProxyProtocol = true
                frontend.proxyProtocolPeers = SourceFilter(allow: [SourceFilter.Prefix("127.0.0.0/8")!])
            })
            let vip2 = try await listed.start()
            let balancer = try TestSocket.connect(to: vip2)
            balancer.setTimeout(5)
            try balancer.send(forged + "HELLO")
            #expect(try balancer.receive(exactly: 5) == Array("HELLO".utf8), "the header was taken, the rest echoed")
            balancer.close()
            try await listed.stop()
        }

        @Test("allow/deny judge the header's client; a client whose first bytes are no header is reset, counted in bad_proxy_header and logged once; one that closes first (a health check) is only closed; one that sends nothing is reset after the timeout")
        func refusals() async throws {
            let server = try TestServer.echo()
            defer { server.stop() }
            let log = LogLines()
            let proxy = ProxyHarness(servers: [.init(name: "a", address: server.endpoint)],
                                     frontend: { frontend in
                                         frontend.acceptProxyProtocol = true
                                         frontend.sources = SourceFilter(deny: [SourceFilter.Prefix("203.0.113.0/24")!])
                                     },
                                     workers: 1, logger: log.logger(), proxyHeaderTimeout: .seconds(3))
            let vip = try await proxy.start()
            let counters = proxy.counters()

            // The balancer's address (127.0.0.1) is allowed, the client it names is not.
            let denied = try TestSocket.connect(to: vip)
            denied.setTimeout(5)
            try denied.send("PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\nHELLO")
            #expect(denied.waitForClose() == "reset")
            #expect(await eventually { counters.denied.load(ordering: .relaxed) == 1 })
            let allowed = try TestSocket.connect(to: vip)
            allowed.setTimeout(5)
            try allowed.send("PROXY TCP4 198.51.100.7 10.0.0.1 40000 443\r\nHELLO")
            #expect(try allowed.receive(exactly: 5) == Array("HELLO".utf8))
            allowed.close()

            for _ in 0..<2 {
                let plain = try TestSocket.connect(to: vip)
                plain.setTimeout(5)
                try plain.send("GET / HTTP/1.1\r\n\r\n")
                #expect(plain.waitForClose() == "reset", "no header: reset")
            }
            #expect(await eventually { counters.badProxyHeader.load(ordering: .relaxed) == 2 })
            let warnings = log.all.filter { $0.contains("sent no PROXY protocol header") }
            #expect(warnings.count == 1, "one warning for both: \(log.all)")
            #expect(warnings.first?.contains("a client (127.0.0.1:") == true, "\(warnings)")

            // A header cut short by the client's end of stream: closed at once, not at the timeout.
            let cut = try TestSocket.connect(to: vip)
            cut.setTimeout(5)
            try cut.send("PROXY TCP4 198.51")
            let cutAt = ContinuousClock.now
            cut.shutdownWrite()
            #expect(cut.waitForClose() == "reset")
            #expect(ContinuousClock.now - cutAt < .milliseconds(1500), "well before the 3 s timeout")
            #expect(await eventually { counters.badProxyHeader.load(ordering: .relaxed) == 3 })
            let healthCheck = try TestSocket.connect(to: vip)
            healthCheck.close()
            let silent = try TestSocket.connect(to: vip)
            silent.setTimeout(5)
            #expect(silent.waitForClose() == "reset", "reset once the header timeout passed")
            #expect(await eventually { counters.badProxyHeader.load(ordering: .relaxed) == 4 && counters.currentConnections.load(ordering: .relaxed) == 0 },
                    "the silent client counted, the closed one not: \(counters.badProxyHeader.load(ordering: .relaxed))")
            #expect(server.accepted == 1, "only the allowed client reached the server")
            try await proxy.stop()
        }
    }
}
