/// Data-path knobs that are not part of the operator's configuration: defaults chosen by the
/// benchmark, overridable by tests (to force the copy fallback) and the bench executable.
struct ProxyTuning: Sendable {
    /// `F_SETPIPE_SZ` for each direction's pipe. Bigger pipes move more per splice on bulk
    /// transfers; pages are only used while bytes wait in them.
    var pipeSize = 256 * 1024
    /// Empty pipes each loop keeps for reuse (each holds two descriptors).
    var pooledPipesPerLoop = 1024
    /// Move bytes with read/write instead of splice (tests of the fallback path).
    var forceCopy = false
    /// Pin loop `i` to CPU `i` when there are no more loops than CPUs.
    var pinThreads = true

    init() {}
}
