import Foundation
import Glibc
@testable import Balancer
import Testing

@Suite("Loading configuration files")
struct ConfigLoaderTests {
    @Test("a file in the seed's format loads unchanged, with the seed's meanings")
    func seedFormat() throws {
        let loaded = try ConfigLoader.load(path: repositoryRoot + "/examples/seed-style.toml")
        #expect(loaded.warnings.isEmpty)
        let c = loaded.config
        #expect(c.frontends.map(\.name) == ["tcp_3000"])
        #expect(c.frontends[0].listen.description == "127.0.0.1:3000")
        #expect(c.frontends[0].balance == .wrr)
        #expect(c.stats.port == 7000)  // written as the string "7000"
        #expect(c.stats.address == .v4(0x7F00_0001))  // new default: loopback only
        let pool = try #require(c.pool(named: "tcp3000_out"))
        #expect(pool.health.interval == .seconds(3))
        #expect(pool.servers.map(\.weight) == [10, 1])
        let other = try #require(c.pool(named: "tcp3001_out"))
        #expect(other.health.interval == .seconds(5))  // seed: 0 means 5 s
        #expect(other.servers.first { $0.name == "server3" }?.weight == 1)  // weight omitted
        #expect(c.passthrough.connectionTrackerCapacity == 3)
    }

    @Test("the new keys of CONFIG.md are read with their types")
    func newKeys() throws {
        let c = try load("""
            [frontends.web]
            listen_addr = "[::1]:8443"
            backend = "p"
            balance = "maglev"
            max_connections = 100
            proxy_protocol = "v2"
            log_connections = true
            accept_proxy_protocol = true
            [backends.p]
            health_check_interval = 0.5
            health_check_timeout = 0.25
            rise = 1
            fall = 2
            health_check_send = "PING\\r\\n"
            health_check_expect = "+PONG"
            connect_timeout = 1.5
            idle_timeout = 60
            drain_timeout = 0
              [backends.p.servers.a]
              addr = "[::1]:9000"
              weight = 0
            [stats]
            port = 7100
            addr = "0.0.0.0"
            [proxy]
            workers = 2
            [xdp]
            iface = "veth1"
            attach = "skb"
            zero_copy = "off"
            nat_addr = "10.77.0.2"
            nat_ports = "61000-62000"
            syn_timeout = 3
            """)
        let f = c.frontends[0]
        #expect(f.balance == .maglev && f.maxConnections == 100 && f.proxyProtocol == .v2 && f.logConnections)
        #expect(f.acceptProxyProtocol)
        let p = c.pools[0]
        #expect(p.health.interval == .milliseconds(500) && p.health.timeout == .milliseconds(250))
        #expect(p.health.rise == 1 && p.health.fall == 2)
        #expect(p.health.send == Array("PING\r\n".utf8) && p.health.expect == Array("+PONG".utf8))
        #expect(p.connectTimeout == .milliseconds(1500) && p.idleTimeout == .seconds(60) && p.drainTimeout == .zero)
        #expect(p.servers[0].weight == 0)
        #expect(c.stats.port == 7100 && c.stats.address == .v4(0))
        #expect(c.proxy.workers == 2)
        #expect(c.xdp.iface == "veth1" && c.xdp.attach == .skb && c.xdp.zeroCopy == .off)
        #expect(c.xdp.natAddresses == [IPAddress("10.77.0.2")!] && c.xdp.natPorts == 61000...62000)
        #expect(c.xdp.synTimeout == .seconds(3) && c.xdp.establishedTimeout == .seconds(300))
    }

    @Test("nat_addr: one address, or one of each family; anything else is refused on its line")
    func natAddresses() throws {
        let head = "[frontends.web]\nlisten_addr = \"10.0.0.1:80\"\nbackend = \"p\"\n[backends.p.servers.a]\naddr = \"10.0.0.2:80\"\n[xdp]\n"
        #expect(try load(head + "nat_addr = \"fd77::2\"").xdp.natAddresses == [IPAddress("fd77::2")!])
        #expect(try load(head + "nat_addr = [\"10.77.0.2\", \" fd77::2 \"]").xdp.natAddresses
                    == [IPAddress("10.77.0.2")!, IPAddress("fd77::2")!])
        #expect(try load(head + "nat_addr = []").xdp.natAddresses.isEmpty)
        let cases: [(String, String)] = [
            ("nat_addr = [\"10.77.0.2\", \"10.77.0.3\"]", "two IPv4 addresses (10.77.0.2, 10.77.0.3): give at most one per family"),
            ("nat_addr = [\"fd77::2\", \"fd77::3\"]", "two IPv6 addresses"),
            ("nat_addr = [\"10.77.0.2\", \"fd77::x\"]", "'fd77::x' is not an IPv4 or IPv6 address"),
            ("nat_addr = 7", "must be a string or an array of strings, found"),
            ("nat_addr = [\"10.77.0.2\", 7]", "must be a string or an array of strings, found an array holding"),
        ]
        for (line, message) in cases {
            let p = problems(head + line)
            #expect(p.count == 1 && p.first?.key == "xdp.nat_addr" && p.first?.line == 7, "\(line): \(p)")
            #expect(p.first?.message.contains(message) == true, "\(line): \(p)")
        }
    }

    @Test("allow / deny: addresses and prefixes of both families; a bad entry is refused on its line, naming it")
    func sourceLists() throws {
        let head = "[backends.p.servers.a]\naddr = \"10.0.0.2:80\"\n[frontends.web]\nlisten_addr = \"10.0.0.1:80\"\nbackend = \"p\"\n"
        let f = try load(head + "allow = [\"10.0.0.0/8\", \" 2001:db8::/32 \"]\ndeny = \"10.9.9.9\"").frontends[0]
        #expect(f.sources.allow.map(\.description) == ["10.0.0.0/8", "2001:db8::/32"])
        #expect(f.sources.deny.map(\.description) == ["10.9.9.9"])
        #expect(try load(head).frontends[0].sources.isEmpty)
        let cases: [(String, String, String)] = [
            ("allow = [\"10.0.0.0/33\"]", "frontends.web.allow", "entry 1, '10.0.0.0/33', is not an address or ADDRESS/LENGTH prefix (a length of 0-32 for IPv4)"),
            ("deny = [\"10.0.0.0/8\", \"10.1.0.0/8\"]", "frontends.web.deny", "entry 2, '10.1.0.0/8', has address bits set past /8: did you mean 10.0.0.0/8, or a longer prefix?"),
            ("deny = \"2001:db8::1/32\"", "frontends.web.deny", "has address bits set past /32: did you mean 2001:db8::/32"),
            ("allow = \"example.com\"", "frontends.web.allow", "entry 1, 'example.com', is not an address or ADDRESS/LENGTH prefix"),
            ("deny = 7", "frontends.web.deny", "must be a string or an array of strings"),
            ("allow = \"/\"", "frontends.web.allow", "entry 1, '/', is not an address or ADDRESS/LENGTH prefix"),
            ("deny = [\"//\", \"10.0.0.0/8\"]", "frontends.web.deny", "entry 1, '//', is not an address"),
        ]
        for (line, key, message) in cases {
            let p = problems(head + line)
            #expect(p.count == 1 && p.first?.key == key && p.first?.line == 6, "\(line): \(p)")
            #expect(p.first?.message.contains(message) == true, "\(line): \(p)")
        }
    }

    @Test("allow: an empty list, and one with no prefix of the listener's family, are warned about")
    func sourceListWarnings() throws {
        let head = "[backends.p.servers.a]\naddr = \"10.0.0.2:80\"\n[frontends.web]\nlisten_addr = \"10.0.0.1:80\"\nbackend = \"p\"\n"
        let empty = try ConfigLoader.load(source: head + "allow = []", file: "t.toml")
        #expect(empty.warnings.map(\.description) == ["t.toml:6: frontends.web.allow: an empty allow list admits every client (as no list does): remove it, or list the prefixes to admit"])
        let v6Only = try ConfigLoader.load(source: head + "allow = [\"fd77::/64\"]", file: "t.toml")
        #expect(v6Only.warnings.map(\.description) == ["t.toml:6: frontends.web.allow: lists no IPv4 prefix, but 10.0.0.1:80 takes only IPv4 clients: every client is refused"])
        #expect(try ConfigLoader.load(source: head + "allow = [\"fd77::/64\", \"10.0.0.0/8\"]", file: "t.toml").warnings.isEmpty)
        // proxy_protocol_peers: read as prefixes; without accept_proxy_protocol it does nothing, and says so.
        let peers = try ConfigLoader.load(source: head + "accept_proxy_protocol = true\nproxy_protocol_peers = [\"10.1.0.0/16\", \"fd00::/8\"]", file: "t.toml")
        #expect(peers.config.frontends[0].proxyProtocolPeers.allow.map(\.description) == ["10.1.0.0/16", "fd00::/8"] && peers.warnings.isEmpty)
        let idle = try ConfigLoader.load(source: head + "proxy_protocol_peers = \"10.1.0.0/16\"", file: "t.toml")
        #expect(idle.warnings.map(\.description) == ["t.toml:6: frontends.web.proxy_protocol_peers: has no effect without accept_proxy_protocol = true"])
        #expect(problems(head + "accept_proxy_protocol = true\nproxy_protocol_peers = [\"10.1.0.0/8\"]").first?.key == "frontends.web.proxy_protocol_peers")
        // Behind a balancer's PROXY header the clients are whatever family the header names.
        #expect(try ConfigLoader.load(source: head + "allow = [\"fd77::/64\"]\naccept_proxy_protocol = true", file: "t.toml").warnings.isEmpty)
    }

    @Test("a source filter refuses what deny lists, and what allow (when given) does not list; families never cross")
    func sourceFilterSemantics() throws {
        let filter = SourceFilter(allow: [try #require(.init("10.0.0.0/8")), try #require(.init("2001:db8::/32"))],
                                  deny: [try #require(.init("10.9.0.0/16"))])
        #expect(filter.admits(IPAddress("10.1.2.3")!) && filter.admits(IPAddress("2001:db8::1")!))
        #expect(!filter.admits(IPAddress("10.9.1.1")!) && !filter.admits(IPAddress("11.0.0.1")!))
        #expect(!filter.admits(IPAddress("2001:db9::1")!) && !filter.admits(IPAddress("::ffff:11.0.0.1")!))
        // IPv4 prefixes do not match IPv6 addresses that merely share low bits.
        #expect(!SourceFilter(allow: [try #require(.init("0.0.0.0/0"))]).admits(IPAddress("::1")!))
        #expect(SourceFilter(allow: [try #require(.init("0.0.0.0/0"))]).admits(IPAddress("192.0.2.1")!))
        #expect(SourceFilter(allow: [try #require(.init("::/0"))]).admits(IPAddress("2001:db8::1")!))
        #expect(!SourceFilter(allow: [try #require(.init("::/0"))]).admits(IPAddress("192.0.2.1")!), "::/0 is IPv6 only")
        let denyOnly = SourceFilter(deny: [try #require(.init("192.0.2.7"))])
        #expect(!denyOnly.admits(IPAddress("192.0.2.7")!) && denyOnly.admits(IPAddress("192.0.2.8")!))
        #expect(SourceFilter().admits(IPAddress("192.0.2.7")!))
        for bad in ["10.0.0.0/", "10.0.0.1/24", "10.0.0.0/+8", "::1/129", "fe80::/-1", ""] {
            #expect(SourceFilter.Prefix(bad) == nil, "\(bad)")
        }
    }

    @Test("passthrough: a VIP whose family has no NAT address is a problem naming the frontend and the fix")
    func natFamilies() {
        let frontends = [FrontendConfig(name: "v4", listen: Endpoint(address: .v4(0x0A00_0001), port: 80), pool: "p"),
                         FrontendConfig(name: "v6", listen: Endpoint(address: IPAddress("fd77::100")!, port: 80), pool: "p")]
        #expect(NATAddressFamilies.problems(frontends: frontends, addresses: [.v4(0x0A4D_0002), IPAddress("fd77::2")!],
                                            source: "nat_addr").isEmpty)
        let p = NATAddressFamilies.problems(frontends: frontends, addresses: [.v4(0x0A4D_0002)], source: "nat_addr is 10.77.0.2")
        #expect(p.count == 1 && p.first?.path == ["frontends", "v6", "listen_addr"])
        #expect(p.first?.message == "[fd77::100]:80 is IPv6, but passthrough has no IPv6 NAT address (nat_addr is 10.77.0.2); "
                    + "add one: [xdp] nat_addr = [\"10.77.0.2\", \"<IPv6 address>\"]")
        #expect(NATAddressFamilies.problems(frontends: frontends, addresses: [IPAddress("fd77::2")!], source: "")
                    .map(\.path) == [["frontends", "v4", "listen_addr"]])
        #expect(!NATAddressFamilies.isDefaultCandidate(IPAddress("fe80::1")!))
        #expect(!NATAddressFamilies.isDefaultCandidate(IPAddress("::1")!))
        #expect(!NATAddressFamilies.isDefaultCandidate(IPAddress("127.0.0.1")!))
        #expect(!NATAddressFamilies.isDefaultCandidate(IPAddress("169.254.1.2")!))
        #expect(NATAddressFamilies.isDefaultCandidate(IPAddress("10.77.0.2")!))
        #expect(NATAddressFamilies.isDefaultCandidate(IPAddress("fd77::2")!))
        #expect(NATAddressFamilies.isDefaultCandidate(IPAddress("2001:db8::1")!))

        // A server of the other family than a frontend its pool serves.
        let servers = [ServerConfig(name: "a", address: Endpoint(address: .v4(0x0A4D_0015), port: 80)),
                       ServerConfig(name: "b", address: Endpoint(address: IPAddress("fd77::22")!, port: 80))]
        let mixed = ConveyConfig(frontends: [frontends[0]], pools: [PoolConfig(name: "p", servers: servers)])
        let s = NATAddressFamilies.serverProblems(config: mixed)
        #expect(s.map(\.path) == [["backends", "p", "servers", "b", "addr"]])
        #expect(s.first?.message == "[fd77::22]:80 is IPv6, but frontend 'v4' (10.0.0.1:80) is IPv4: passthrough keeps a "
                    + "flow in its family; give this frontend a pool of IPv4 servers")
        // A mixed pool shared by a v4 and a v6 frontend: each side's mismatched server.
        let shared = ConveyConfig(frontends: frontends, pools: [PoolConfig(name: "p", servers: servers)])
        #expect(NATAddressFamilies.serverProblems(config: shared).map { $0.path[3] + "/" + $0.message.prefix(40) }.count == 2)
        #expect(Set(NATAddressFamilies.serverProblems(config: shared).map { $0.path[3] }) == ["a", "b"])
        #expect(NATAddressFamilies.serverProblems(config: ConveyConfig(frontends: [frontends[0]],
                    pools: [PoolConfig(name: "p", servers: [servers[0]])])).isEmpty)
    }

    @Test("a wildcard listen address overlapping another frontend's port is refused on its line")
    func overlappingListeners() {
        let p = problems("""
            [frontends.a]
            listen_addr = "127.0.0.1:80"
            backend = "p"
            [frontends.b]
            listen_addr = "0.0.0.0:80"
            backend = "p"
            [frontends.c]
            listen_addr = "[::]:80"
            backend = "p"
            [frontends.d]
            listen_addr = "0.0.0.0:81"
            backend = "p"
            [backends.p.servers.x]
            addr = "127.0.0.1:9000"
            """)
        #expect(p.count == 1, "\(p)")
        #expect(p.first?.key == "frontends.b.listen_addr" && p.first?.line == 5)
        #expect(p.first?.message.contains("overlaps frontend 'a' on 127.0.0.1:80") == true)
    }

    @Test("a stats port on a frontend's address is refused; a pool all at weight 0 is warned about; a rejected file lists its unknown keys too")
    func moreChecks() throws {
        let clash = problems("""
            [frontends.web]
            listen_addr = "127.0.0.1:7000"
            backend = "p"
            [backends.p.servers.x]
            addr = "127.0.0.1:9000"
            [stats]
            port = 7000
            """)
        #expect(clash.map(\.key) == ["stats.port"] && clash.first?.line == 7, "\(clash)")
        #expect(clash.first?.message.contains("is also frontend 'web''s listen_addr 127.0.0.1:7000") == true)

        let zero = try ConfigLoader.load(source: """
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "p"
            [backends.p.servers.x]
            addr = "127.0.0.1:9000"
            weight = 0
            """, file: "test.toml")
        #expect(zero.warnings.map(\.key) == ["frontends.web.backend"])
        #expect(zero.warnings.first?.message.contains("every server of pool 'p' has weight 0") == true)

        let both = problems("""
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "p"
            balanse = "wrr"
            [backends.p.servers.x]
            addr = "127.0.0.1:90000"
            """)
        #expect(both.map(\.key) == ["frontends.web.balanse", "backends.p.servers.x.addr"], "\(both)")
        #expect(both[0].message == "warning: unknown key: did you mean balance?", "a warning says so among the errors")
    }

    @Test("a syntax error names its line")
    func syntaxError() {
        let p = problems("[frontends.web]\nlisten_addr = \"127.0.0.1:80\"\nbackend = \"pool\n")
        #expect(p.count == 1)
        #expect(p.first?.line == 3)
        #expect(p.first?.message.contains("syntax") == true)
    }

    @Test("a frontend whose pool's servers sit under another pool's name is refused with a hint")
    func misplacedServers() {
        let p = problems("""
            [frontends.tcp_80]
            listen_addr = "127.0.0.1:80"
            backend = "tcp80_out"

            [backends.tcp80_out]
              health_check_interval = 3
              [backends.tcp3000_out.servers]
                [backends.tcp3000_out.servers.server1]
                addr = "127.0.0.1:8080"
            """)
        let problem = p.first { $0.key == "frontends.tcp_80.backend" }
        #expect(problem?.line == 3)
        #expect(problem?.message.contains("pool 'tcp80_out' has no servers") == true)
        #expect(problem?.message.contains("tcp3000_out") == true)
    }

    @Test("every problem of a file is reported at once, each with its line and key")
    func manyProblems() {
        let p = problems("""
            [frontends.a]
            listen_addr = "10.0.0.1"
            backend = "missing"
            [frontends.b]
            listen_addr = "10.0.0.1:80"
            backend = "pool"
            balance = "random"
            [backends.pool]
            rise = 0
              [backends.pool.servers.x]
              addr = "10.0.0.300:80"
              [backends.pool.servers.y]
              addr = "10.0.0.2:80"
              weight = 5000
            """)
        let byKey = Dictionary(p.map { ($0.key ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        #expect(byKey["frontends.a.listen_addr"]?.line == 2)
        #expect(byKey["frontends.a.listen_addr"]?.message.contains("no port") == true)
        #expect(byKey["frontends.b.balance"]?.message.contains("'random' is not one of: wrr, leastconn, maglev, source") == true)
        #expect(byKey["backends.pool.rise"]?.line == 9)
        #expect(byKey["backends.pool.servers.x.addr"]?.line == 11)
        #expect(byKey["backends.pool.servers.x.addr"]?.message.contains("10.0.0.300") == true)
        #expect(byKey["backends.pool.servers.y.weight"]?.line == 14)
        #expect(byKey["backends.pool.servers.y.weight"]?.message.contains("5000 is out of range (0-1000)") == true)
        #expect(p.allSatisfy { $0.file == "test.toml" })
        // frontends.a's missing listen port makes it unusable; its pool name is still checked.
        #expect(byKey["frontends.a.backend"]?.line == 3)
        #expect(byKey["frontends.a.backend"]?.message.contains("pool 'missing' does not exist") == true)
        #expect(p.count == 6)
    }

    @Test("a pool that does not exist is named, with the pools that do")
    func missingPool() {
        let p = problems("""
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "nope"
            [backends.pool]
              [backends.pool.servers.a]
              addr = "127.0.0.1:81"
            """)
        #expect(p.map(\.description) == ["test.toml:3: frontends.web.backend: pool 'nope' does not exist (defined: pool)"])
    }

    @Test("unknown keys are warnings with their line, not errors")
    func unknownKeys() throws {
        let loaded = try ConfigLoader.load(source: """
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "pool"
            balanse = "wrr"
            alow = "10.0.0.0/8"
            colour = "blue"
            [backends.pool]
              [backends.pool.servers.a]
              addr = "127.0.0.1:81"
              wieght = 2
              max_conections = 5
            """, file: "test.toml")
        #expect(loaded.warnings.map(\.description) == [
            "test.toml:4: frontends.web.balanse: unknown key: did you mean balance?",
            "test.toml:5: frontends.web.alow: unknown key: did you mean allow?",
            "test.toml:6: frontends.web.colour: unknown key",
            "test.toml:10: backends.pool.servers.a.wieght: unknown key: did you mean weight?",
            "test.toml:11: backends.pool.servers.a.max_conections: unknown key: did you mean max_connections?",
        ])
        #expect(KeySuggestion.closest(to: "rize", among: ["rise", "size"]) == nil, "two equally close: no guess")
        #expect(KeySuggestion.closest(to: "idle", among: ["idle_timeout"]) == nil)
    }

    @Test("two frontends on one address and two servers on one address are refused")
    func duplicates() {
        let p = problems("""
            [frontends.a]
            listen_addr = "127.0.0.1:80"
            backend = "pool"
            [frontends.b]
            listen_addr = "127.0.0.1:80"
            backend = "pool"
            [backends.pool]
              [backends.pool.servers.a]
              addr = "127.0.0.1:81"
              [backends.pool.servers.b]
              addr = "127.0.0.1:81"
            """)
        #expect(p.contains { $0.key == "frontends.b.listen_addr" && $0.line == 5 && $0.message.contains("frontend 'a'") })
        #expect(p.contains { $0.key == "backends.pool.servers.b.addr" && $0.message.contains("server 'a'") })
    }

    @Test("wrong types name the key and the type found")
    func wrongTypes() {
        let p = problems("""
            [frontends.web]
            listen_addr = 80
            backend = "pool"
            [backends.pool]
            health_check_interval = "often"
              [backends.pool.servers.a]
              addr = "127.0.0.1:81"
            [stats]
            port = "seven"
            """)
        #expect(p.contains { $0.key == "frontends.web.listen_addr" && $0.message.contains("must be a string") })
        #expect(p.contains { $0.key == "backends.pool.health_check_interval" && $0.message.contains("number of seconds") })
        #expect(p.contains { $0.key == "stats.port" && $0.message.contains("'seven' is not a number") })
    }

    @Test("addresses no TCP service can have are refused: multicast, broadcast, a wildcard server; sloppy ports and brackets too")
    func oddAddresses() {
        func firstProblem(listen: String = "127.0.0.1:80", server: String = "127.0.0.1:81") -> String? {
            problems("""
                [frontends.web]
                listen_addr = "\(listen)"
                backend = "pool"
                [backends.pool.servers.a]
                addr = "\(server)"
                """).first.map { "\($0.key ?? ""): \($0.message)" }
        }
        #expect(firstProblem(listen: "224.0.0.1:80") == "frontends.web.listen_addr: 224.0.0.1 is a multicast address: TCP needs a unicast one")
        #expect(firstProblem(listen: "[ff02::1]:80")?.contains("multicast") == true)
        #expect(firstProblem(server: "255.255.255.255:81")?.contains("broadcast address") == true)
        #expect(firstProblem(server: "240.0.0.1:81")?.contains("reserved (240.0.0.0/4) address") == true)
        #expect(firstProblem(server: "0.0.0.0:81") == "backends.pool.servers.a.addr: 0.0.0.0 is the wildcard address, not a server: write the server's own address")
        #expect(firstProblem(server: "[::]:81")?.contains("wildcard") == true)
        #expect(firstProblem(server: "[fe80::1]:81")?.hasPrefix("backends.pool.servers.a.addr: fe80::1 is an IPv6 link-local address") == true)
        #expect(firstProblem(server: "[febf::1]:81")?.contains("link-local") == true)
        #expect(firstProblem(server: "[fec0::1]:81") == nil, "past fe80::/10")
        #expect(firstProblem(listen: "127.0.0.1:+80")?.contains("'+80' is not a port") == true)
        #expect(firstProblem(listen: "127.0.0.1:080")?.contains("'080' is not a port") == true)
        #expect(firstProblem(listen: "[127.0.0.1]:80")?.contains("brackets are for IPv6 only") == true)
        #expect(firstProblem(listen: "0.0.0.0:80") == nil)  // a wildcard listener is fine
        #expect(firstProblem(listen: "[::]:80", server: "[::1]:81") == nil)
    }

    @Test("a server at a frontend's own listen address is refused: convey would connect to itself")
    func serverIsOwnListener() {
        let p = problems("""
            [frontends.web]
            listen_addr = "127.0.0.1:28480"
            backend = "pool"
            [backends.pool.servers.a]
            addr = "127.0.0.1:9001"
            [backends.pool.servers.me]
            addr = "127.0.0.1:28480"
            """)
        #expect(p.map(\.description) == ["test.toml:7: backends.pool.servers.me.addr: 127.0.0.1:28480 is frontend 'web''s own "
                                         + "listen_addr: convey would connect to itself, each connection opening another until descriptors run out"])
    }

    @Test("messages stay one bounded line: control and line-separator characters escaped, huge keys cut")
    func printableMessages() {
        let p = problems("[frontends.web]\nlisten_addr = \"a\\u2028b\\nc\"\nbackend = \"p\"\n[backends.p.servers.a]\naddr = \"127.0.0.1:1\"\n"
                         + "\(String(repeating: "k", count: 5000)) = 1\n")
        let text = p.map(\.description).joined(separator: "\n")
        #expect(text.split(separator: "\n").count == p.count, "each problem one line: \(text)")
        #expect(text.contains("'a\\u{2028}b\\u{A}c'"), "\(text)")
        #expect(text.contains("kkk… (4861 more characters): warning: unknown key"), "\(text.prefix(400))")
        #expect(text.count < 3000)
    }

    @Test("a file that is not UTF-8 is refused on the line of the first bad byte")
    func notUTF8() throws {
        let path = "/tmp/convey-utf8-\(getpid()).toml"
        let bytes = Array("# ok\n[frontends.web]\n# caf".utf8) + [0xE9] + Array("\n".utf8)
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        defer { unlink(path) }
        do {
            _ = try ConfigLoader.load(path: path)
            Issue.record("loaded a file that is not UTF-8")
        } catch {
            #expect(error.problems.map(\.description) == ["\(path):3: not valid UTF-8 here: a TOML file is UTF-8 text"])
        }
    }

    @Test("durations below a millisecond and NAT addresses no packet can come from are refused")
    func tinyDurationsAndBadNATAddresses() {
        let base = "[frontends.web]\nlisten_addr = \"127.0.0.1:80\"\nbackend = \"p\"\n[backends.p]\n"
        let servers = "[backends.p.servers.a]\naddr = \"127.0.0.1:81\"\n"
        #expect(problems(base + "health_check_interval = 0.0000001\n" + servers).first?.message
                == "1e-07 seconds is below a millisecond, the smallest duration convey keeps")
        #expect(problems(base + "health_check_interval = 0\n" + servers).isEmpty)  // the seed's "0 means 5 s"
        for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.5", "::", "127.0.0.1", "240.0.0.1"] {
            #expect(problems(base + servers + "[xdp]\nnat_addr = \"\(bad)\"\n").first?.message.contains("cannot be a source address") == true, "\(bad)")
        }
    }

    @Test("a table with an empty name is refused on its line")
    func emptyNames() {
        let p = problems("""
            [frontends.""]
            listen_addr = "127.0.0.1:80"
            backend = "pool"
            [backends.pool.servers.a]
            addr = "127.0.0.1:81"
            """)
        #expect(p.map(\.description) == ["test.toml:1: frontends.: an empty name: give this table a name"])
    }

    @Test("one bad server address is one error: the pool is not also called empty")
    func badServerIsOneError() {
        let p = problems("""
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "pool"
            [backends.pool.servers.a]
            addr = "local!host:81"
            """)
        #expect(p.map(\.description) == ["test.toml:5: backends.pool.servers.a.addr: 'local!host' is not an IPv4 or IPv6 address"])
    }

    @Test("an interval shorter than the default timeout says the timeout is the default, on the interval's line")
    func defaultTimeoutNamed() {
        let p = problems("""
            [frontends.web]
            listen_addr = "127.0.0.1:80"
            backend = "pool"
            [backends.pool]
            health_check_interval = 0.5
            [backends.pool.servers.a]
            addr = "127.0.0.1:81"
            """)
        #expect(p.map(\.description) == ["test.toml:5: backends.pool.health_check_interval: 0.5 s is shorter than the "
                                         + "default health_check_timeout (1 s): set health_check_timeout to at most the interval"])
    }

    @Test("health_check_proxy_protocol is read; absent, it follows the frontends")
    func healthProxyProtocol() throws {
        let text = "[frontends.web]\nlisten_addr = \"127.0.0.1:80\"\nbackend = \"pool\"\n[backends.pool]\n"
            + "health_check_proxy_protocol = \"v2\"\n[backends.pool.servers.a]\naddr = \"127.0.0.1:81\"\n"
        #expect(try ConfigLoader.load(source: text, file: "t.toml").config.pools[0].health.proxyProtocol == .v2)
        let absent = text.replacingOccurrences(of: "health_check_proxy_protocol = \"v2\"\n", with: "")
        #expect(try ConfigLoader.load(source: absent, file: "t.toml").config.pools[0].health.proxyProtocol == nil)
        #expect(problems(text.replacingOccurrences(of: "\"v2\"", with: "\"v3\"")).first?.message == "'v3' is not one of: none, v1, v2")
    }

    @Test("health_check_port is read on a pool and on a server, a server's outranking its pool's; HAProxy's name gets a hint")
    func healthCheckPort() throws {
        let text = "[frontends.web]\nlisten_addr = \"127.0.0.1:80\"\nbackend = \"pool\"\n[backends.pool]\n"
            + "health_check_port = 8080\n[backends.pool.servers.a]\naddr = \"10.0.0.1:81\"\n"
            + "[backends.pool.servers.b]\naddr = \"10.0.0.2:81\"\nhealth_check_port = 9090\n"
            + "[backends.pool.servers.c]\naddr = \"10.0.0.3:81\"\n"
        let loaded = try ConfigLoader.load(source: text, file: "t.toml")
        #expect(loaded.warnings.isEmpty)
        let pool = loaded.config.pools[0]
        #expect(pool.health.port == 8080 && pool.servers.map(\.healthCheckPort) == [nil, 9090, nil])
        let checked = HealthTarget.targets(for: loaded.config).map(\.checkedAddress.description)
        #expect(checked == ["10.0.0.1:8080", "10.0.0.2:9090", "10.0.0.3:8080"])
        #expect(HealthTarget.targets(for: loaded.config).map(\.address.description) == ["10.0.0.1:81", "10.0.0.2:81", "10.0.0.3:81"],
                "the server's own address stays its identity")
        // Without the pool's: each server's own port, unless it sets one.
        let ownPorts = try ConfigLoader.load(source: text.replacingOccurrences(of: "health_check_port = 8080\n", with: ""), file: "t.toml")
        #expect(HealthTarget.targets(for: ownPorts.config).map(\.checkedAddress.description) == ["10.0.0.1:81", "10.0.0.2:9090", "10.0.0.3:81"])
        #expect(problems(text.replacingOccurrences(of: "9090", with: "0")).map(\.description)
                == ["test.toml:10: backends.pool.servers.b.health_check_port: 0 is out of range (1-65535)"])
        #expect(problems(text.replacingOccurrences(of: "8080", with: "70000")).map(\.description)
                == ["test.toml:5: backends.pool.health_check_port: 70000 is out of range (1-65535)"])
        let haproxy = try ConfigLoader.load(source: text.replacingOccurrences(of: "health_check_port = 9090", with: "port = 9090"), file: "t.toml")
        #expect(haproxy.warnings.map(\.description) == ["t.toml:10: backends.pool.servers.b.port: unknown key here: "
            + "a server's port goes in addr = \"IP:PORT\"; the port its health checks connect to, if another, is health_check_port"])
    }

    @Test("a file with no frontends is refused, saying what to add")
    func noFrontends() {
        let p = problems("[stats]\nport = 7000\n")
        #expect(p.contains { $0.key == "frontends" && $0.message == "is required" })
    }

    @Test("an unreadable file names the file")
    func unreadable() {
        #expect(throws: ConfigError.self) { try ConfigLoader.load(path: "/nonexistent/convey.toml") }
        do {
            _ = try ConfigLoader.load(path: "/nonexistent/convey.toml")
        } catch {
            #expect(error.description.hasPrefix("/nonexistent/convey.toml: cannot read"))
        }
    }
}
