import Balancer

/// `/flows` in proxy mode: asks every event loop for its connections matching a query and
/// renders them in the shape the AF_XDP modes' listing has (`worker` is the event loop), with
/// what only a proxy knows: its own address toward the server, age and bytes.
struct ConnectionListingReport {
    let controls: [LoopControl]
    let snapshot: ForwardingSnapshot

    /// Runs `query` on every loop at once; a loop that does not answer in time is named in
    /// `workers_unanswered` rather than failing the whole request.
    func run(_ query: FlowQuery) async throws(FlowQueryError) -> JSONValue {
        if let name = query.frontend, !snapshot.frontends.contains(where: { $0.name == name }) {
            let known = Set(snapshot.frontends.map(\.name)).sorted()
            throw .bad("frontend: no frontend '\(name)' (there are: \(known.joined(separator: ", ")))")
        }
        if let server = query.server, !snapshot.frontends.contains(where: { $0.servers.contains { $0.id == server } }) {
            let known = Set(snapshot.frontends.flatMap { $0.servers.map(\.id.description) }).sorted()
            throw .bad("server: no server '\(server)' (there are: \(known.joined(separator: ", ")))")
        }
        let filter = ConnectionFilter(client: query.client, local: query.local, frontend: query.frontend, server: query.server,
                                      limit: min(max(0, query.limit), ConnectionListing.maxRows))
        return try await FlowQuery.collect(from: controls, limit: filter.limit,
                                           noneAnswered: "no event loop answered within 3 s (the proxy is stopping): ask again") { loop, control in
            await control.listing.list(filter, wake: { control.wake() }).map {
                FlowListingPart(rows: $0.rows.map { Self.row(loop: loop, $0) }, matched: $0.matched)
            }
        }
    }

    static func row(loop: Int, _ r: ConnectionRow) -> JSONValue {
        .object([
            ("worker", .int(Int64(loop))), ("frontend", .string(r.frontend)),
            ("client", .string(r.client.description)),
            ("server", r.server.map { .string($0.description) } ?? .null),
            ("backend", r.backend.map { .string($0.description) } ?? .null),
            ("local", r.local.map { .string($0.description) } ?? .null),
            ("state", .string(r.state.rawValue)),
            ("age_seconds", .double(Double(r.ageNanoseconds) / 1e9)),
            ("idle_seconds", .double(Double(r.idleNanoseconds) / 1e9)),
            ("expires_in_seconds", .double(Double(r.expiresInNanoseconds) / 1e9)),
            ("bytes_tx", .int(r.bytesTx)), ("bytes_rx", .int(r.bytesRx)),
            ("failed_attempts", .int(Int64(r.failedAttempts))),
        ])
    }
}
