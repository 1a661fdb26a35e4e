/// The servers an operator drained at runtime (`POST /servers/POOL/NAME/drain`), as a takeover
/// passes them on: the running convey sends `current()` with its listeners, and the new one
/// hands what it got to `adopt`, so that a drained server stays drained through an upgrade.
public struct OperatorDrains: Sendable {
    /// The servers drained now.
    public var current: @Sendable () -> [ServerID]
    /// Takes up the drains of the convey (the pid) being replaced.
    public var adopt: @Sendable ([ServerID], Int32) -> Void
    /// This convey handed its listeners and drains to the one (the pid) replacing it: the
    /// drains belong to that one from now on.
    public var handedOver: @Sendable (Int32) -> Void

    public init(current: @escaping @Sendable () -> [ServerID], adopt: @escaping @Sendable ([ServerID], Int32) -> Void,
                handedOver: @escaping @Sendable (Int32) -> Void = { _ in }) {
        self.current = current
        self.adopt = adopt
        self.handedOver = handedOver
    }
}
