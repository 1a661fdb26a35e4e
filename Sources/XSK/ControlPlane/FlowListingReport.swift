import Balancer

/// `/flows` in the AF_XDP modes: asks every worker for its tracked flows matching a query and
/// renders them with the names and addresses of the current routes.
struct FlowListingReport {
    let listings: [FlowListing]
    let routes: PacketRoutes
    let mode: XDPForwardingMode
    let natAddresses: [IPAddress]
    /// Passthrough: `[xdp] nat_ports`, the only ports a flow's NAT end has.
    var natPorts: ClosedRange<UInt16>? = nil

    /// Runs `query` on every worker at once; a worker that does not answer in time is named
    /// in `workers_unanswered` rather than failing the whole request.
    func run(_ query: FlowQuery) async throws(FlowQueryError) -> JSONValue {
        var filter = FlowFilter(client: query.client, limit: query.limit)
        if let local = query.local {
            // The end a passthrough backend sees: the NAT address and port of the flow.
            guard mode == .passthrough else {
                throw .bad("local: in DSR the backends see the client's own address and port: ask with client=IP")
            }
            if let address = local.address {
                guard natAddresses.contains(address) else {
                    throw .bad("local: \(address) is not a NAT address of this convey (they are: "
                               + "\(natAddresses.map(\.description).joined(separator: ", ")))")
                }
                filter.natFamilyIsIPv4 = address.isIPv4
            }
            if let natPorts, !natPorts.contains(local.port) {
                throw .bad("local: port \(local.port) is outside nat_ports \(natPorts.lowerBound)-\(natPorts.upperBound), "
                           + "so no flow has it (the port a backend logs for its client is one of those)")
            }
            filter.natPort = local.port
        }
        if let name = query.frontend {
            // Its live address, and the old one it drains at while it moves.
            let indices = routes.frontendNames.indices.filter { routes.frontendNames[$0] == name }
            guard !indices.isEmpty else {
                let known = Set(routes.frontendNames.filter { !$0.isEmpty }).sorted()
                throw .bad("frontend: no frontend '\(name)' (there are: \(known.joined(separator: ", ")))")
            }
            filter.frontendIndices = indices
        }
        if let server = query.server {
            // One slot per frontend whose pool holds the server.
            let slots = routes.servers.indices.filter { routes.servers[$0] == server }.map(UInt32.init)
            guard !slots.isEmpty else {
                let known = Set(routes.servers.compactMap { $0?.description }).sorted()
                throw .bad("server: no server '\(server)' (there are: \(known.joined(separator: ", ")))")
            }
            filter.backendSlots = slots
        }
        return try await FlowQuery.collect(
            from: listings, limit: filter.limit,
            noneAnswered: "no worker answered within 3 s (stopping, or still walking a table for an earlier request): ask again"
        ) { [filter] worker, listing in
            await listing.list(filter).map { result in
                FlowListingPart(rows: result.entries.map { row(worker: worker, $0, now: result.now) }, matched: result.matched)
            }
        }
    }

    private func row(worker: Int, _ e: FlowEntry, now: UInt64) -> JSONValue {
        let client: IPAddress = StableHash.mappedIPv4(hi: e.clientHi, lo: e.clientLo).map { .v4($0) } ?? .v6(e.clientHi, e.clientLo)
        let slot = Int(e.backendSlot)
        let idle = now >= e.lastSeen ? now - e.lastSeen : 0
        let name = e.vipIndex < routes.frontendNames.count ? routes.frontendNames[e.vipIndex] : ""
        let server = slot < routes.servers.count ? routes.servers[slot] : nil
        var fields: [(String, JSONValue)] = [
            ("worker", .int(Int64(worker))), ("frontend", name.isEmpty ? .null : .string(name)),
            ("client", .string(Endpoint(address: client, port: e.clientPort).description)),
            ("server", server.map { .string($0.description) } ?? .null),
            ("backend", routes.backendEndpoint(slot: slot).map { .string($0.description) } ?? .null),
            ("state", .string(Self.stateName(e.state))),
            ("idle_seconds", .double(Double(idle) / 1e9)),
            ("expires_in_seconds", .double(Double(e.idleTimeout > idle ? e.idleTimeout - idle : 0) / 1e9)),
        ]
        if mode == .passthrough, let nat = natAddresses.first(where: { $0.isIPv4 == client.isIPv4 }) {
            fields.append(("nat", .string(Endpoint(address: nat, port: e.natPort).description)))
        }
        return .object(fields)
    }

    static func stateName(_ state: FlowState) -> String {
        switch state {
        case .empty: return "empty"
        case .syn: return "syn"
        case .established: return "established"
        case .closing: return "closing"
        }
    }
}
