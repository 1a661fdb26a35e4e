/// How a takeover reaches a convey's counters (see `CarriedCounters`): the convey being replaced
/// sends `totals()` to its successor, which hands what it got to `carryOn`. The data planes
/// get this instead of the whole `BalancerRuntime`.
public struct CounterCarry: Sendable {
    /// The counts to hand over, read now.
    public var totals: @Sendable () -> CarriedCounters
    /// Goes on from a predecessor's counts, less what this convey counted of them itself.
    public var carryOn: @Sendable (_ carried: CarriedCounters, _ alreadyCounted: CarriedCounters?) -> CarriedCounters.Outcome

    public init(totals: @escaping @Sendable () -> CarriedCounters,
                carryOn: @escaping @Sendable (CarriedCounters, CarriedCounters?) -> CarriedCounters.Outcome) {
        self.totals = totals
        self.carryOn = carryOn
    }

    /// The counters of `runtime`.
    public init(runtime: BalancerRuntime) {
        self.init(totals: { runtime.carriedCounters() }, carryOn: { runtime.carryOn($0, alreadyCounted: $1) })
    }
}
