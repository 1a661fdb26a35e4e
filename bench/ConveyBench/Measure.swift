import CBenchSupport

/// Tools for writing `Benchmark.sample` closures.
enum Measure {
    /// Seconds taken by `body`, on the monotonic clock.
    @inline(__always)
    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let clock = ContinuousClock()
        let elapsed = try clock.measure(body)
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }

    /// Heap allocations made by the whole process while `body` ran (see CBenchSupport). Run
    /// nothing else concurrently when the figure has to be exact.
    @inline(__always)
    static func allocations(_ body: () throws -> Void) rethrows -> UInt64 {
        let before = cb_allocation_count()
        try body()
        return cb_allocation_count() &- before
    }

    /// Checks once that the counting allocator is really in place (an allocation-count
    /// benchmark is worthless if it always reads 0).
    static func allocationCounterWorks() -> Bool {
        let counted = allocations {
            for n in 1...8 { blackHole([Int](repeating: n, count: n * 16)) }
        }
        return counted >= 8
    }
}

/// Keeps `value` alive and opaque to the optimizer, so the work producing it is not removed.
@inline(never)
func blackHole<T>(_ value: T) {
    withExtendedLifetime(value) {}
}
