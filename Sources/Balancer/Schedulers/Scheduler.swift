// PLACEHOLDER: replaced by the schedulers work (issue 2). API fixed here so other modules compile.

/// The identity of a new connection as schedulers hash it.
public struct FlowKey: Hashable, Sendable {
    public var client: Endpoint
    public var vip: Endpoint

    public init(client: Endpoint, vip: Endpoint) {
        self.client = client
        self.vip = vip
    }
}

/// Per-thread server selection for one frontend: owned by one proxy loop or XSK worker, rebuilt
/// when that thread adopts a new `ForwardingSnapshot`.
public struct Scheduler: Sendable {
    public init(route: FrontendRoute) {
        fatalError("Scheduler not implemented yet")
    }

    /// The index into `route.servers` for a new flow, or nil when no server may take it.
    public mutating func pick(for flow: FlowKey, in route: FrontendRoute) -> Int? {
        fatalError("Scheduler not implemented yet")
    }

    /// The server to try when `firstChoice` and the `attempt - 1` servers after it failed
    /// (attempt is 1-based): walks `route.selectable` onward from `firstChoice`; nil once every
    /// selectable server has been tried.
    public static func fallback(after firstChoice: Int, attempt: Int, in route: FrontendRoute) -> Int? {
        fatalError("Scheduler not implemented yet")
    }
}
