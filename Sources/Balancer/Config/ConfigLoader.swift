#if canImport(Glibc)
import Glibc
#endif
import SystemPackage
import TOMLKit

/// A configuration that passed validation, with the warnings found on the way (unknown keys).
public struct LoadedConfig: Sendable, Equatable {
    public var config: ConveyConfig
    /// Problems that do not stop the balancer; `convey --check` treats them as errors.
    public var warnings: [ConfigProblem]
    /// The file's name, as messages give it.
    public var file: String
    /// Where each key is written, for problems found after loading.
    var keyLines: TOMLKeyLocator
    /// The text it was loaded from (the reload service compares the file with it).
    public var source: String

    /// A problem about the key at `path` (e.g. `["xdp", "nat_ports"]`), on the line the key is
    /// written on (or its table's line, when the key itself is not in the file).
    public func problem(path: [String], _ message: String) -> ConfigProblem {
        ConfigProblem(file: file, line: keyLines.line(of: path), key: path.joined(separator: "."), message: message)
    }

    /// `problem(path:)` for a dotted key whose parts hold no dot (`xdp.nat_ports`).
    public func problem(key: String, _ message: String) -> ConfigProblem {
        problem(path: key.split(separator: ".").map(String.init), message)
    }
}

/// Turns a TOML file into a validated `ConveyConfig`.
///
/// Accepts the seed's files unchanged (`port = "7000"` as a string, `health_check_interval = 0`
/// meaning 5 s, pools without the new keys) and the keys CONFIG.md adds. Every problem in the
/// file is reported at once, each with file, line and dotted key, so an operator fixes a file in
/// one pass; nothing here throws past the first problem.
public enum ConfigLoader {
    /// Reads and validates `path`.
    public static func load(path: String, resolver: HostNameResolver = .system) throws(ConfigError) -> LoadedConfig {
        let text: String
        do {
            text = try readFile(path)
        } catch let invalid as InvalidUTF8 {
            throw ConfigError(problems: [invalid.problem(file: path)])
        } catch {
            throw ConfigError(problems: [ConfigProblem(file: path, line: nil, key: nil,
                                                       message: "cannot read: \(error)")])
        }
        return try load(source: text, file: path, resolver: resolver)
    }

    /// Validates TOML `source`; `file` names it in messages. Servers' host names are looked
    /// up with `resolver`.
    public static func load(source: String, file: String, resolver: HostNameResolver = .system) throws(ConfigError) -> LoadedConfig {
        if let (line, message) = TOMLPreflight.problem(in: source) {
            throw ConfigError(problems: [ConfigProblem(file: file, line: line, key: nil, message: message)])
        }
        let root: TOMLTable
        do {
            root = try TOMLTable(string: source)
        } catch let error as TOMLParseError {
            throw ConfigError(problems: [ConfigProblem(file: file, line: error.source.begin.line, key: nil,
                                                       message: "TOML syntax error: \(error.description)")])
        } catch {
            throw ConfigError(problems: [ConfigProblem(file: file, line: nil, key: nil,
                                                       message: "TOML syntax error: \(error)")])
        }
        let context = LoadContext(file: file, source: source, resolver: resolver)
        let reader = TableReader(root, path: [], context: context)
        let config = read(reader)
        reader.reportUnknownKeys()
        // TOMLKit 0.6 never frees a parsed document (TOMLTable has no deinit): clearing the
        // root frees its nodes, about 2.5 KB a reload for a small file, which a long-running
        // balancer reloaded every minute would otherwise carry forever. What is left (the
        // empty root, and the C strings its accessors duplicate) is tens of bytes per key.
        root.clear()
        let byLine = { (a: ConfigProblem, b: ConfigProblem) in (a.line ?? 0) < (b.line ?? 0) }
        // A rejected file gets every remark at once, unknown keys included (a typo is often the cause).
        if !context.problems.isEmpty {
            let warnings = context.warnings.map { w -> ConfigProblem in
                var marked = w
                marked.message = "warning: " + w.message
                return marked
            }
            throw ConfigError(problems: (context.problems + warnings).sorted(by: byLine))
        }
        return LoadedConfig(config: config, warnings: context.warnings.sorted(by: byLine), file: file,
                            keyLines: context.locator, source: source)
    }

    static func readFile(_ path: String) throws -> String {
        // Non-blocking, so a FIFO does not hang the open; then only a regular file is read.
        let fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec, .nonBlocking])
        return try fd.closeAfter {
            var info = stat()
            guard fstat(fd.rawValue, &info) == 0 else { throw Errno(rawValue: errno) }
            guard info.st_mode & S_IFMT == S_IFREG else { throw NotARegularFile() }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                let n = try chunk.withUnsafeMutableBytes { try fd.read(into: $0) }
                if n == 0 { break }
                bytes += chunk[0..<n]
                if bytes.count > 16 << 20 { throw Errno.fileTooLarge }
            }
            guard let text = String(validating: bytes, as: UTF8.self) else { throw InvalidUTF8(bytes: bytes) }
            return text
        }
    }

    // MARK: - Sections

    private static func read(_ root: TableReader) -> ConveyConfig {
        let families = frontendFamilies(root.table)
        let pools = root.table("backends")?.namedTables().compactMap { readPool($0.name, $0.reader, families: families[$0.name]) } ?? []
        let frontendTables = root.table("frontends", required: true)?.namedTables() ?? []
        if frontendTables.isEmpty, root.table["frontends"]?.table?.isEmpty == true {
            root.fail("frontends", "defines no frontend: add a [frontends.NAME] table with listen_addr and backend")
        }
        let frontends = frontendTables.compactMap { readFrontend($0.name, $0.reader, pools: pools, root: root) }
        checkDistinctListeners(frontends, root)
        checkNoServerIsAListener(frontends, pools, root)

        let stats = root.table("stats").map(readStats) ?? StatsConfig()
        let statsEndpoint = Endpoint(address: stats.address, port: stats.port)
        if stats.port != 0, let f = frontends.first(where: { $0.listen == statsEndpoint || Self.overlap($0.listen, statsEndpoint) }) {
            root.loadContext.problem(path: ["stats", "port"],
                                     "\(statsEndpoint) is also frontend '\(f.name)''s " +
                                     "listen_addr \(f.listen); give the stats server another port (or port = 0 to disable it)")
        }
        for f in frontends {
            guard let pool = pools.first(where: { $0.name == f.pool }), !pool.servers.isEmpty,
                  pool.servers.allSatisfy({ $0.weight == 0 }) else { continue }
            root.loadContext.warning(path: ["frontends", f.name, "backend"],
                                     "every server of pool '\(pool.name)' has weight 0: this frontend takes no new connection")
        }
        let proxy = root.table("proxy").map(readProxy) ?? ProxySettings()
        let passthrough = root.table("passthrough").map(readPassthrough) ?? PassthroughConfig()
        let xdp = root.table("xdp").map(readXDP) ?? XDPConfig()
        return ConveyConfig(frontends: frontends, pools: pools, stats: stats, proxy: proxy,
                            passthrough: passthrough, xdp: xdp)
    }

    private static func readFrontend(_ name: String, _ t: TableReader, pools: [PoolConfig],
                                      root: TableReader) -> FrontendConfig? {
        defer { t.reportUnknownKeys(elsewhere: MisplacedKeys.inFrontend()) }
        let listen = endpoint(t, "listen_addr", required: true, role: .listener)
        let poolName = t.string("backend", required: true)
        let balance = t.choice("balance", BalanceAlgorithm.self) ?? .wrr
        let maxConnections = t.int("max_connections", in: 0...10_000_000) ?? 0
        let proxyProtocol = t.choice("proxy_protocol", ProxyProtocolVersion.self) ?? ProxyProtocolVersion.none
        let logConnections = t.bool("log_connections") ?? false
        let tcpKeepalive = t.int("tcp_keepalive", in: 0...32767) ?? 0
        let acceptProxyProtocol = t.bool("accept_proxy_protocol") ?? false
        let peers = prefixes(t, "proxy_protocol_peers")
        if !peers.isEmpty && !acceptProxyProtocol {
            t.warn("proxy_protocol_peers", "has no effect without accept_proxy_protocol = true")
        }
        let sources = SourceFilter(allow: prefixes(t, "allow"), deny: prefixes(t, "deny"))
        // Behind a balancer's PROXY header the clients' family is the header's, not the listener's.
        if let listen, !acceptProxyProtocol, !sources.allow.isEmpty, !sources.allow.contains(where: { $0.address.isIPv4 == listen.address.isIPv4 }) {
            let family = listen.address.isIPv4 ? "IPv4" : "IPv6"
            t.warn("allow", "lists no \(family) prefix, but \(listen) takes only \(family) clients: every client is refused")
        }
        // The pool is checked even when listen_addr is bad, so one error never hides another.
        if let poolName { checkPool(poolName, of: t, pools: pools, root: root) }
        guard let listen, let poolName else { return nil }
        return FrontendConfig(name: name, listen: listen, pool: poolName, balance: balance,
                              maxConnections: maxConnections, proxyProtocol: proxyProtocol, logConnections: logConnections,
                              sources: sources, acceptProxyProtocol: acceptProxyProtocol,
                              proxyProtocolPeers: SourceFilter(allow: peers), tcpKeepalive: tcpKeepalive)
    }

    /// `allow` / `deny`: address prefixes, each `ADDRESS` or `ADDRESS/LENGTH`.
    private static func prefixes(_ t: TableReader, _ key: String) -> [SourceFilter.Prefix] {
        guard let texts = t.strings(key) else { return [] }
        if texts.isEmpty && key == "allow" {
            t.warn(key, "an empty allow list admits every client (as no list does): remove it, or list the prefixes to admit")
        }
        var out: [SourceFilter.Prefix] = []
        for (i, text) in texts.map({ $0.trimmingSpaces() }).enumerated() {
            guard let prefix = SourceFilter.Prefix(text) else {
                t.fail(key, "entry \(i + 1), '\(text)', " + prefixProblem(text))
                continue
            }
            out.append(prefix)
        }
        return out
    }

    /// Why `text` is no `allow` / `deny` entry, with the likely fix.
    private static func prefixProblem(_ text: String) -> String {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, let address = IPAddress(parts[0]) else {
            return "is not an address or ADDRESS/LENGTH prefix"
        }
        let bits = address.isIPv4 ? 32 : 128
        guard let length = Int(parts[1]), (0...bits).contains(length), !parts[1].hasPrefix("+") else {
            return "is not an address or ADDRESS/LENGTH prefix (a length of 0-\(bits) for \(address.isIPv4 ? "IPv4" : "IPv6"))"
        }
        // The length is fine: the address has bits set past it.
        let masked = SourceFilter.Prefix.network(of: address, length: length)
        return "has address bits set past /\(length): did you mean \(masked)/\(length), or a longer prefix?"
    }

    /// A frontend's `backend` must name a pool with servers.
    private static func checkPool(_ poolName: String, of t: TableReader, pools: [PoolConfig], root: TableReader) {
        if let pool = pools.first(where: { $0.name == poolName }) {
            let servers = root.table["backends"]?.table?[poolName]?.table?["servers"]
            // Servers written wrong are reported where they are; an empty pool is not the news.
            let writtenWrong = servers != nil && servers?.table?.isEmpty != true
            if pool.servers.isEmpty && !writtenWrong {
                t.fail("backend", "pool '\(poolName)' has no servers\(serverHint(root, pool: poolName))")
            }
        } else if root.table.contains(key: "backends"), root.table["backends"]?.table?.contains(key: poolName) == true {
            // The pool exists but failed validation itself; its own problems are reported.
        } else {
            let known = pools.map(\.name).sorted()
            t.fail("backend", "pool '\(poolName)' does not exist" +
                   (known.isEmpty ? " (no [backends.NAME] table is defined)" : " (defined: \(known.joined(separator: ", ")))"))
        }
    }

    /// When a pool is empty, points at a pool whose servers sit under another name: the seed's
    /// own sample made that mistake (`[backends.a]` with `[backends.b.servers.x]`).
    private static func serverHint(_ root: TableReader, pool: String) -> String {
        guard let backends = root.table["backends"]?.table else { return "" }
        let others = backends.keys.sorted().filter { name in
            name != pool && (backends[name]?.table?["servers"]?.table?.isEmpty == false)
        }
        guard !others.isEmpty else { return ": add [backends.\(pool).servers.NAME] tables with addr" }
        return ": servers are listed under [backends.\(others.joined(separator: "], [backends."))]; " +
            "did you mean backend = \"\(others[0])\", or to write [backends.\(pool).servers.NAME]?"
    }

    /// Two listen addresses on one port where one is the wildcard of the other's family.
    private static func overlap(_ a: Endpoint, _ b: Endpoint) -> Bool {
        a.port == b.port && a.address.isIPv4 == b.address.isIPv4 && (a.address.isUnspecified || b.address.isUnspecified)
    }

    /// A server at a frontend's own listen address: every connection (and every health check)
    /// to it would come back to convey and open another, until descriptors run out.
    private static func checkNoServerIsAListener(_ frontends: [FrontendConfig], _ pools: [PoolConfig], _ root: TableReader) {
        for pool in pools {
            for server in pool.servers {
                guard let f = frontends.first(where: { $0.listen == server.address }) else { continue }
                root.loadContext.problem(path: ["backends", pool.name, "servers", server.name, "addr"],
                                         "\(server.address) is frontend '\(f.name)''s own listen_addr: convey would "
                                         + "connect to itself, each connection opening another until descriptors run out")
            }
        }
    }

    private static func checkDistinctListeners(_ frontends: [FrontendConfig], _ root: TableReader) {
        var seen: [Endpoint: String] = [:]
        for f in frontends.sorted(by: { $0.name < $1.name }) {
            if let other = seen[f.listen] {
                root.loadContext.problem(path: ["frontends", f.name, "listen_addr"],
                                         "\(f.listen) is already the listen_addr of frontend '\(other)'")
            } else if let (other, address) = seen.sorted(by: { $0.value < $1.value })
                .first(where: { Self.overlap($0.key, f.listen) }).map({ ($0.value, $0.key) }) {
                root.loadContext.problem(path: ["frontends", f.name, "listen_addr"],
                                         "\(f.listen) overlaps frontend '\(other)' on \(address): a wildcard address " +
                                         "listens on that port of every address of its family")
            } else {
                seen[f.listen] = f.name
            }
        }
    }

    /// `health_check_http` and the keys that go with it (nil when it is not set, or wrong).
    private static func httpCheck(_ t: TableReader, sendsOwnBytes: Bool) -> HTTPHealthCheck? {
        let path = t.string("health_check_http")
        let host = t.string("health_check_http_host")
        let statusText = t.stringOrInteger("health_check_http_status")
        guard let path else {
            // A health_check_http of the wrong type has its own error already.
            guard !t.has("health_check_http") else { return nil }
            for (key, value) in [("health_check_http_host", host), ("health_check_http_status", statusText)] where value != nil {
                t.warn(key, "has no effect without health_check_http (the path each check requests)")
            }
            return nil
        }
        var check = HTTPHealthCheck(path: path)
        var valid = true
        if let problem = HTTPHealthCheck.problem(path: path) {
            t.fail("health_check_http", problem)
            valid = false
        }
        if sendsOwnBytes {
            t.fail("health_check_http", "sends its own request and judges the reply by its status: remove "
                   + "health_check_send and health_check_expect, or health_check_http")
            valid = false
        }
        if let host {
            if let problem = HTTPHealthCheck.problem(host: host) {
                t.fail("health_check_http_host", problem)
                valid = false
            }
            check.host = host
        }
        if let statusText {
            if let statuses = HTTPHealthCheck.statuses(parsing: statusText) {
                check.statuses = statuses
            } else {
                t.fail("health_check_http_status", "'\(statusText)' is not a status code or a range of them within "
                       + "100-599 (as \"200\" or \"200-299\")")
                valid = false
            }
        }
        return valid ? check : nil
    }

    /// Per pool, whether its frontends listen on IPv4 (true) or IPv6 (false) addresses: read
    /// ahead of the pools, so a server's host name can take an address its frontends reach
    /// (the frontends themselves are read, and judged, later).
    private static func frontendFamilies(_ root: TOMLTable) -> [String: Set<Bool>] {
        var families: [String: Set<Bool>] = [:]
        guard let frontends = root["frontends"]?.table else { return families }
        for key in frontends.keys {
            guard let f = frontends[key]?.table, let pool = f["backend"]?.string, let listen = f["listen_addr"]?.string,
                  let endpoint = try? Endpoint(parsing: listen.trimmingSpaces()) else { continue }
            families[pool, default: []].insert(endpoint.address.isIPv4)
        }
        return families
    }

    private static func readPool(_ name: String, _ t: TableReader, families: Set<Bool>?) -> PoolConfig? {
        defer { t.reportUnknownKeys(elsewhere: MisplacedKeys.inPool(name)) }
        var health = HealthCheckConfig()
        if let interval = t.seconds("health_check_interval") {
            health.interval = interval == .zero ? .seconds(5) : interval  // seed: 0 means 5 s
        }
        let timeout = t.seconds("health_check_timeout", minimum: 0.001)
        if let timeout { health.timeout = timeout }
        if health.timeout > health.interval {
            if timeout == nil {
                t.fail("health_check_interval", "\(health.interval.configText) is shorter than the default health_check_timeout "
                       + "(\(health.timeout.configText)): set health_check_timeout to at most the interval")
            } else {
                t.fail("health_check_timeout", "\(health.timeout.configText) is longer than health_check_interval (\(health.interval.configText))")
            }
        }
        health.rise = t.int("rise", in: 1...1000) ?? health.rise
        health.fall = t.int("fall", in: 1...1000) ?? health.fall
        health.send = Array((t.string("health_check_send") ?? "").utf8)
        health.expect = Array((t.string("health_check_expect") ?? "").utf8)
        health.proxyProtocol = t.choice("health_check_proxy_protocol", ProxyProtocolVersion.self)
        health.port = t.int("health_check_port", in: 1...65535).map(UInt16.init)
        health.http = httpCheck(t, sendsOwnBytes: !health.send.isEmpty || !health.expect.isEmpty)
        let connectTimeout = t.seconds("connect_timeout", minimum: 0.001) ?? .seconds(2)
        let idleTimeout = t.seconds("idle_timeout", minimum: 0.001) ?? .seconds(300)
        let drainTimeout = t.seconds("drain_timeout") ?? .seconds(30)
        let slowStart = t.seconds("slow_start") ?? .zero
        let errorLimit = t.int("error_limit", in: 0...1000) ?? 0
        let queueTimeout = t.seconds("queue_timeout", minimum: 0.001)
        let maxQueue = t.int("max_queue", in: 0...10_000_000) ?? 0
        let onDown = t.choice("on_down", ServerDownAction.self) ?? .keep

        var servers: [ServerConfig] = []
        if let table = t.table("servers") {
            var addresses: [Endpoint: String] = [:]
            for (serverName, s) in table.namedTables() {
                let (address, hostName) = serverEndpoint(s, families: families ?? [])
                let weight = s.int("weight", in: 0...ServerConfig.maxWeight) ?? 1
                let backup = s.bool("backup") ?? false
                let maxConnections = s.int("max_connections", in: 0...10_000_000) ?? 0
                let checkPort = s.int("health_check_port", in: 1...65535).map(UInt16.init)
                s.reportUnknownKeys(elsewhere: MisplacedKeys.inServer(name))
                guard let address else { continue }
                if let other = addresses[address] {
                    s.fail("addr", "\(address)\(hostName.map { " ('\($0)' resolves to it)" } ?? "") is already server '\(other)' of this pool")
                    continue
                }
                addresses[address] = serverName
                servers.append(ServerConfig(name: serverName, address: address, weight: weight, backup: backup,
                                            maxConnections: maxConnections, healthCheckPort: checkPort, hostName: hostName))
            }
            table.reportUnknownKeys()
            if servers.count > 0, servers.allSatisfy(\.backup) {
                t.warn("servers", "every server of pool '\(name)' has backup = true: with no other server to stand in "
                       + "for, they take connections as non-backup servers would")
            }
        }
        if queueTimeout != nil, !servers.isEmpty, !servers.contains(where: { $0.maxConnections > 0 }) {
            t.warn("queue_timeout", "no server of pool '\(name)' sets max_connections, so no client ever waits: "
                   + "set max_connections on the servers to limit, or remove queue_timeout")
        }
        if maxQueue > 0, !servers.isEmpty, !servers.contains(where: { $0.maxConnections > 0 }) {
            t.warn("max_queue", "no server of pool '\(name)' sets max_connections, so no client ever waits: "
                   + "set max_connections on the servers to limit, or remove max_queue")
        }
        return PoolConfig(name: name, health: health, connectTimeout: connectTimeout, idleTimeout: idleTimeout,
                          drainTimeout: drainTimeout, slowStart: slowStart, errorLimit: errorLimit, queueTimeout: queueTimeout,
                          maxQueue: maxQueue, onDown: onDown, servers: servers)
    }

    private static func readStats(_ t: TableReader) -> StatsConfig {
        defer { t.reportUnknownKeys() }
        var stats = StatsConfig()
        if let port = t.intOrNumericString("port", in: 0...65_535) { stats.port = UInt16(port) }
        if let admin = t.bool("admin") { stats.admin = admin }
        if let file = t.string("state_file") {
            if !file.hasPrefix("/") || file.hasSuffix("/") || file.utf8.contains(0) {
                t.fail("state_file", "'\(file)' is not an absolute path to a file (as \"/var/lib/convey/drains.json\")")
            } else if !stats.admin {
                t.warn("state_file", "kept only with admin = true (it holds the drains the stats server's commands make): ignored")
            } else if stats.port == 0 {
                t.warn("state_file", "the stats server is off (port = 0): the drains it lists are restored at each start, "
                       + "and no POST /servers/POOL/NAME/ready can end them")
                stats.stateFile = file
            } else {
                stats.stateFile = file
            }
        }
        if let addr = t.string("addr") {
            if let ip = IPAddress(addr) { stats.address = ip } else {
                t.fail("addr", "'\(addr)' is not an IPv4 or IPv6 address")
            }
        }
        return stats
    }

    private static func readProxy(_ t: TableReader) -> ProxySettings {
        defer { t.reportUnknownKeys() }
        return ProxySettings(workers: t.int("workers", in: 0...1024) ?? 0)
    }

    private static func readPassthrough(_ t: TableReader) -> PassthroughConfig {
        defer { t.reportUnknownKeys() }
        var p = PassthroughConfig()
        p.connectionTrackerCapacity = t.int("connection_tracker_capacity", in: 1...(64 << 20)) ?? p.connectionTrackerCapacity
        p.workers = t.int("workers", in: 0...1024) ?? p.workers
        p.statsUpdateFrequency = t.seconds("stats_update_frequency", minimum: 0.1) ?? p.statsUpdateFrequency
        return p
    }

    private static func readXDP(_ t: TableReader) -> XDPConfig {
        defer { t.reportUnknownKeys() }
        var x = XDPConfig()
        if let iface = t.string("iface"), !iface.isEmpty {
            if iface.utf8.count > 15 || iface.contains("/") || iface.contains(" ") {
                t.fail("iface", "'\(iface)' is not an interface name (at most 15 characters, no '/' or spaces)")
            } else {
                x.iface = iface
            }
        }
        x.attach = t.choice("attach", XDPConfig.AttachMode.self) ?? x.attach
        x.zeroCopy = t.choice("zero_copy", XDPConfig.ZeroCopyMode.self) ?? x.zeroCopy
        x.natAddresses = natAddresses(t)
        if let ports = t.string("nat_ports"), !ports.isEmpty {
            if let range = NATPortRange.parse(ports) { x.natPorts = range } else {
                t.fail("nat_ports", "'\(ports)' is not a port range: write \"FIRST-LAST\" with 1 <= FIRST <= LAST <= 65535")
            }
        }
        x.synTimeout = t.seconds("syn_timeout", minimum: 0.1) ?? x.synTimeout
        x.establishedTimeout = t.seconds("established_timeout", minimum: 0.1) ?? x.establishedTimeout
        x.closingTimeout = t.seconds("closing_timeout", minimum: 0.1) ?? x.closingTimeout
        return x
    }

    /// `nat_addr`: one address, or one of each family (`["192.0.2.10", "2001:db8::10"]`).
    private static func natAddresses(_ t: TableReader) -> [IPAddress] {
        guard let texts = t.strings("nat_addr") else { return [] }
        var out: [IPAddress] = []
        for text in texts.map({ $0.trimmingSpaces() }) where !text.isEmpty {
            guard let ip = IPAddress(text) else {
                t.fail("nat_addr", "'\(text)' is not an IPv4 or IPv6 address")
                return []
            }
            if ip.isUnspecified || ip.isMulticast || ip.isReservedIPv4 || ip.isLoopback {
                t.fail("nat_addr", "\(ip) cannot be a source address: give one of the interface's unicast addresses")
                return []
            }
            if let same = out.first(where: { $0.isIPv4 == ip.isIPv4 }) {
                t.fail("nat_addr", "two \(NATAddressFamilies.family(ip)) addresses (\(same), \(ip)): give at most one per family")
                return []
            }
            out.append(ip)
        }
        return out.sorted { $0.isIPv4 && !$1.isIPv4 }  // one order: ["v6", "v4"] is ["v4", "v6"]
    }

    /// What an endpoint is for: which addresses make sense there.
    private enum EndpointRole { case listener, server }

    /// A server's `addr`: an address, or a host name looked up now (`HostNameResolver`), with
    /// that name. Of a name's addresses it takes the first the resolver prefers, of the family
    /// the pool's frontends listen on when they all use one (passthrough keeps a flow in its
    /// family; proxy mode would connect either way).
    private static func serverEndpoint(_ t: TableReader, families: Set<Bool>) -> (Endpoint?, String?) {
        guard let text = t.string("addr", required: true)?.trimmingSpaces() else { return (nil, nil) }
        guard let colon = text.lastIndex(of: ":"), !text.hasPrefix("["),
              !text[..<colon].contains(":"), HostNameResolver.isHostName(text[..<colon]) else {
            return (endpoint(t, "addr", text: text, role: .server), nil)
        }
        let name = String(text[..<colon])
        // The port first: a bad one is said without a lookup.
        let port: UInt16
        do {
            port = try Endpoint.port(parsing: text[text.index(after: colon)...])
        } catch {
            t.fail("addr", error.description)
            return (nil, nil)
        }
        switch t.loadContext.resolver.lookUp(name) {
        case .failure(let failure):
            t.failLookup("addr", "'\(name)' does not resolve: \(failure) (names are looked up at start, at each reload and "
                         + "at --check; write the address itself to depend on no resolver)")
            return (nil, nil)
        case .success(let addresses):
            let reachable = families.count == 1 ? addresses.filter { families.contains($0.isIPv4) } : addresses
            guard let first = reachable.first ?? addresses.first else { return (nil, nil) }
            if addresses.count > 1 {
                t.warn("addr", "'\(name)' has \(addresses.count) addresses (\(addresses.map(\.description).joined(separator: ", "))); "
                       + "this server is \(first): list one server per address to use them all")
            }
            return (endpoint(t, "addr", text: Endpoint(address: first, port: port).description, role: .server,
                             resolvedFrom: name), name)
        }
    }

    private static func endpoint(_ t: TableReader, _ key: String, required: Bool, role: EndpointRole) -> Endpoint? {
        guard let text = t.string(key, required: required) else { return nil }
        return endpoint(t, key, text: text.trimmingSpaces(), role: role)
    }

    /// `text` as an endpoint in role `role`, or nil with a problem recorded under `key`.
    private static func endpoint(_ t: TableReader, _ key: String, text: String, role: EndpointRole,
                                 resolvedFrom name: String? = nil) -> Endpoint? {
        let endpoint: Endpoint
        do {
            endpoint = try Endpoint(parsing: text)
        } catch {
            if role == .listener, case .badAddress(let host) = error, HostNameResolver.isHostName(Substring(host)) {
                t.fail(key, "'\(host)' is a host name: \(key) takes this host's own IP address (host names are for servers' addr)")
            } else {
                t.fail(key, error.description)
            }
            return nil
        }
        let via = name.map { " ('\($0)' resolves to it)" } ?? ""
        let a = endpoint.address
        if a.isMulticast || a.isReservedIPv4 {
            t.fail(key, "\(a)\(via) is a \(a.isMulticast ? "multicast" : a == .v4(0xFFFF_FFFF) ? "broadcast" : "reserved (240.0.0.0/4)") "
                   + "address: TCP needs a unicast one")
            return nil
        }
        if role == .server && a.isUnspecified {
            t.fail(key, "\(a)\(via) is the wildcard address, not a server: write the server's own address")
            return nil
        }
        if role == .server, case .v6(let hi, _) = a, hi >> 54 == 0x3FA {
            t.fail(key, "\(a)\(via) is an IPv6 link-local address (fe80::/10): reaching it needs an interface (a scope, as in "
                   + "fe80::1%eth0), which addr cannot carry, so every connect and health check would fail; use the "
                   + "server's global or unique-local address")
            return nil
        }
        return endpoint
    }
}

/// A configuration file that is not UTF-8, as TOML requires. Decoding it anyway would turn the
/// bad bytes into U+FFFD inside names and values, silently.
struct InvalidUTF8: Error, CustomStringConvertible {
    /// 1-based line of the first byte sequence that is not UTF-8.
    var line: Int

    init(bytes: [UInt8]) {
        // The longest valid prefix, then the line it ends on.
        var valid = bytes.count
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var consumed = 0
        decoding: while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): consumed += UTF8.width(scalar)
            case .emptyInput: break decoding
            case .error:
                valid = consumed
                break decoding
            }
        }
        line = bytes[..<valid].reduce(1) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
    }

    var description: String { "line \(line) is not valid UTF-8 (a TOML file is UTF-8 text)" }

    func problem(file: String) -> ConfigProblem {
        ConfigProblem(file: file, line: line, key: nil, message: "not valid UTF-8 here: a TOML file is UTF-8 text")
    }
}

/// A configuration path that names a FIFO, device or socket: reading one could block or never end.
struct NotARegularFile: Error, CustomStringConvertible {
    var description: String { "not a regular file" }
}
