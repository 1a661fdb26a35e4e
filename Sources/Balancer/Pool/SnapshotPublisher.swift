import Synchronization

/// Publishes immutable values (forwarding snapshots) to data-path threads without a lock on
/// their fast path.
///
/// A reader keeps the generation it last adopted and compares it with `generation` between
/// batches: one acquiring atomic load. Only when it changed does it call `load()`, which takes
/// a short lock to copy the new value out. Old values are freed by ARC once the last reader has
/// moved on, which is the "free after every worker has moved on" rule without epochs.
public final class SnapshotPublisher<Value: Sendable>: Sendable {
    private let current: Mutex<(value: Value, generation: UInt64)>
    private let published: Atomic<UInt64>
    /// Serializes publishers, so that `current`'s lock, which readers take in `load()`, is
    /// held only for a swap: never while a new value is built.
    private let publishing = Mutex(())

    public init(_ initial: Value) {
        current = Mutex((initial, 1))
        published = Atomic(1)
    }

    /// The generation of the newest value; changes on every `publish`.
    @inlinable public var generation: UInt64 { publishedGeneration() }

    @usableFromInline func publishedGeneration() -> UInt64 { published.load(ordering: .acquiring) }

    /// The newest value and its generation.
    public func load() -> (value: Value, generation: UInt64) {
        current.withLock { ($0.value, $0.generation) }
    }

    /// Replaces the value; readers see it at their next generation check.
    public func publish(_ value: Value) {
        publishing.withLock { _ in swap(in: value) }
    }

    /// Replaces the value with `transform(current)` atomically with respect to other
    /// publishers. `transform` runs outside the readers' lock: a data-path thread adopting a
    /// value never waits for the next one to be built.
    public func update(_ transform: (Value) -> Value) {
        publishing.withLock { _ in
            let next = transform(current.withLock { $0.value })
            swap(in: next)
        }
    }

    /// Stores `value` as the next generation; the old value is handed out of the lock and
    /// released there (freeing a snapshot is not done while readers wait).
    private func swap(in value: Value) {
        _ = current.withLock { state -> Value in
            let old = state.value
            state.value = value
            state.generation &+= 1
            published.store(state.generation, ordering: .releasing)
            return old
        }
    }
}
