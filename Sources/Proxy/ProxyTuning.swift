/// Data-path knobs that are not part of the operator's configuration: defaults chosen by the
/// benchmark, overridable by tests (to force the copy fallback) and the bench executable.
struct ProxyTuning: Sendable {
    /// `F_SETPIPE_SZ` for each direction's pipe. Bigger pipes move more per splice on bulk
    /// transfers; pages are only used while bytes wait in them.
    var pipeSize = 256 * 1024
    /// Each loop's scratch buffer: a direction reads and writes through it until one read fills
    /// it (then the direction splices through a pipe). Small enough that a bulk transfer leaves
    /// it after one read, big enough for a typical request or reply. At most `pipeSize`.
    var scratchSize = 16 * 1024
    /// Empty pipes each loop keeps for reuse (each holds two descriptors).
    var pooledPipesPerLoop = 1024
    /// Move bytes with read/write instead of splice (tests of the fallback path).
    var forceCopy = false
    /// Pin loop `i` to CPU `i` when there are no more loops than CPUs. Off by default: the
    /// loops share their CPUs with clients, backends and everything else on the machine, and a
    /// pinned loop can neither be woken on the CPU of the task that woke it nor move away from a
    /// busy CPU, so every cross-CPU wake-up costs an interrupt (a VM exit on a virtual machine).
    /// Measured on loopback, 2 CPUs: 104 → 82 µs of proxy CPU per new connection unpinned.
    var pinThreads = false

    init() {}
}
