import Balancer
import Synchronization
import Testing

/// Servers named by host (`addr = "web1.internal:80"`): looked up when the file is loaded, with
/// a resolver the test controls, and once with the system's own.
@Suite("Server host names")
struct HostNameTests {
    /// Names the fake resolver knows, and every name it was asked for.
    final class FakeDNS: Sendable {
        let asked = Mutex<[String]>([])
        var resolver: HostNameResolver {
            HostNameResolver { [self] name in
                asked.withLock { $0.append(name) }
                switch name {
                case "web1.internal", "web1.internal.": return .success([IPAddress("10.0.0.5")!])
                case "web1-alias.internal": return .success([IPAddress("10.0.0.5")!])
                case "dual.internal": return .success([IPAddress("fd00::6")!, IPAddress("10.0.0.6")!])
                case "zero.internal": return .success([IPAddress("0.0.0.0")!])
                default: return .failure(.init("Name or service not known"))
                }
            }
        }
    }

    static func file(_ servers: [String], listen: String = "127.0.0.1:80") -> String {
        var text = "[frontends.web]\nlisten_addr = \"\(listen)\"\nbackend = \"pool\"\n[backends.pool]\n"
        for (i, addr) in servers.enumerated() { text += "[backends.pool.servers.s\(i)]\naddr = \"\(addr)\"\n" }
        return text
    }

    func problems(_ servers: [String], listen: String = "127.0.0.1:80", dns: FakeDNS = FakeDNS()) -> [String] {
        do {
            _ = try ConfigLoader.load(source: Self.file(servers, listen: listen), file: "t.toml", resolver: dns.resolver)
            return []
        } catch {
            return error.problems.map(\.description)
        }
    }

    @Test("a name is looked up when the file loads: the server gets its first address and keeps the name")
    func resolved() throws {
        let dns = FakeDNS()
        let loaded = try ConfigLoader.load(source: Self.file(["web1.internal:80", "10.0.0.7:80", "web1.internal.:81"]),
                                           file: "t.toml", resolver: dns.resolver)
        #expect(loaded.warnings.isEmpty)
        let servers = loaded.config.pools[0].servers
        #expect(servers.map(\.address.description) == ["10.0.0.5:80", "10.0.0.7:80", "10.0.0.5:81"])
        #expect(servers.map(\.hostName) == ["web1.internal", nil, "web1.internal."])
        #expect(dns.asked.withLock { $0 } == ["web1.internal", "web1.internal."], "an address is never looked up")
    }

    @Test("a name that does not resolve is refused, naming the line, the name and the resolver's reason, as a lookup failure")
    func unresolvable() {
        do {
            _ = try ConfigLoader.load(source: Self.file(["nope.internal:80", "web_1:80"]), file: "t.toml", resolver: FakeDNS().resolver)
            Issue.record("loaded")
        } catch {
            #expect(error.problems.count == 2 && error.problems.allSatisfy(\.isLookupFailure), "an underscore is a name too: \(error)")
        }
        #expect(problems(["nope.internal:80"]) == ["t.toml:6: backends.pool.servers.s0.addr: 'nope.internal' does not resolve: "
            + "Name or service not known (names are looked up at start, at each reload and at --check; write the address "
            + "itself to depend on no resolver)"])
    }

    @Test("what is no name is judged as an address, without a lookup; a bad port is said before any lookup")
    func notNames() {
        let dns = FakeDNS()
        #expect(problems(["10.0.0.256:80"], dns: dns) == ["t.toml:6: backends.pool.servers.s0.addr: '10.0.0.256' is not an IPv4 or IPv6 address"])
        #expect(problems(["web!1.internal:80"], dns: dns) == ["t.toml:6: backends.pool.servers.s0.addr: 'web!1.internal' is not an IPv4 or IPv6 address"])
        #expect(problems(["-web.internal:80"], dns: dns).count == 1)
        #expect(problems(["web1.internal:0"], dns: dns) == ["t.toml:6: backends.pool.servers.s0.addr: '0' is not a port (1-65535)"])
        #expect(problems(["web1.internal"], dns: dns) == ["t.toml:6: backends.pool.servers.s0.addr: 'web1.internal' has no port: write \"ip:port\" or \"[ipv6]:port\""])
        #expect(dns.asked.withLock { $0 }.isEmpty)
    }

    @Test("a name's address meets the rules an address does; two names of one address are one server twice; listen_addr takes no name")
    func rules() {
        #expect(problems(["zero.internal:80"]) == ["t.toml:6: backends.pool.servers.s0.addr: 0.0.0.0 ('zero.internal' resolves to it) "
            + "is the wildcard address, not a server: write the server's own address"])
        #expect(problems(["web1.internal:80", "web1-alias.internal:80"]) == ["t.toml:8: backends.pool.servers.s1.addr: 10.0.0.5:80 "
            + "('web1-alias.internal' resolves to it) is already server 's0' of this pool"])
        #expect(problems(["10.0.0.7:80"], listen: "web1.internal:80") == ["t.toml:2: frontends.web.listen_addr: 'web1.internal' is a host name: listen_addr takes this host's own IP address (host names are for servers' addr)"])
    }

    @Test("a name of several addresses takes one of its frontends' family, and says it uses one")
    func familyAndWarning() throws {
        let v4 = try ConfigLoader.load(source: Self.file(["dual.internal:80"]), file: "t.toml", resolver: FakeDNS().resolver)
        #expect(v4.config.pools[0].servers[0].address.description == "10.0.0.6:80", "an IPv4 frontend: the IPv4 address")
        #expect(v4.warnings.map(\.description) == ["t.toml:6: backends.pool.servers.s0.addr: 'dual.internal' has 2 addresses "
            + "(fd00::6, 10.0.0.6); this server is 10.0.0.6: list one server per address to use them all"])
        let v6 = try ConfigLoader.load(source: Self.file(["dual.internal:80"], listen: "[fd00::1]:80"), file: "t.toml", resolver: FakeDNS().resolver)
        #expect(v6.config.pools[0].servers[0].address.description == "[fd00::6]:80")
    }

    @Test("a reload keeps the address a name's server has while the name still has it (round-robin DNS moves nothing)")
    func reloadKeepsAnAddressTheNameStillHas() throws {
        let first = HostNameResolver { _ in .success([IPAddress("10.0.0.2")!, IPAddress("10.0.0.1")!]) }
        let running = try ConfigLoader.load(source: Self.file(["rr.internal:80"]), file: "t.toml", resolver: first).config
        #expect(running.pools[0].servers[0].address.description == "10.0.0.2:80")
        let rotated = HostNameResolver { _ in .success([IPAddress("10.0.0.1")!, IPAddress("10.0.0.2")!]) }
        let again = try ConfigLoader.load(source: Self.file(["rr.internal:80"]), file: "t.toml", resolver: rotated.preferring(running)).config
        #expect(again.pools[0].servers[0].address.description == "10.0.0.2:80")
        let moved = HostNameResolver { _ in .success([IPAddress("10.0.0.3")!]) }
        let gone = try ConfigLoader.load(source: Self.file(["rr.internal:80"]), file: "t.toml", resolver: moved.preferring(running)).config
        #expect(gone.pools[0].servers[0].address.description == "10.0.0.3:80", "the name left it: the new one")
    }

    @Test("the system's resolver: localhost is a loopback address (from /etc/hosts, no DNS server needed)")
    func systemResolver() throws {
        let loaded = try ConfigLoader.load(source: Self.file(["localhost:9001"]), file: "t.toml")
        let server = try #require(loaded.config.pools[0].servers.first)
        #expect(["127.0.0.1:9001", "[::1]:9001"].contains(server.address.description), "\(server.address)")
        #expect(server.hostName == "localhost")
    }

    @Test("a reload that finds a name at another address says so, with the name")
    func reloadReport() throws {
        let before = try ConfigLoader.load(source: Self.file(["web1.internal:80"]), file: "t.toml", resolver: FakeDNS().resolver).config
        let moved = HostNameResolver { _ in .success([IPAddress("10.0.0.9")!]) }
        let after = try ConfigLoader.load(source: Self.file(["web1.internal:80"]), file: "t.toml", resolver: moved).config
        let runtime = BalancerRuntime(config: before)
        #expect(runtime.apply(after).applied == ["server pool/s0: 10.0.0.5:80 -> 10.0.0.9:80 ('web1.internal' resolves to it now)"])
    }
}
