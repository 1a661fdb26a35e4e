/// Data-path knobs that are not part of the operator's configuration: defaults chosen by the
/// benchmark, overridable by tests (to force the copy fallback) and the bench executable.
struct ProxyTuning: Sendable {
    /// `F_SETPIPE_SZ` for each direction's pipe. Bigger pipes move more per splice on bulk
    /// transfers; pages are only used while bytes wait in them.
    var pipeSize = 256 * 1024
    /// `TCP_NOTSENT_LOWAT` on both sockets of every connection (the listener's, inherited by the
    /// accepted ones, and each backend socket); 0 leaves the kernel's default (no limit).
    ///
    /// Without it a socket takes unsent bytes until its send buffer is full (4 MiB with the
    /// default `tcp_wmem`): a bulk transfer faster than its receiver parks megabytes there, and
    /// the socket sends them whenever an ACK opens the window, inside that ACK's receive
    /// processing, on whatever task runs it. On loopback that is the receiving process: iperf3
    /// behind the proxy transmitted a fifth to nine tenths of the proxy's backend-side bytes
    /// itself (a quarter behind HAProxy) and paid 1.3–1.8× the CPU per Gbit it pays behind
    /// HAProxy. With the limit the socket reports writable only while less than this is unsent,
    /// the pipe holds the rest, and the bytes leave from the proxy's own `splice` (the receiver
    /// then sends under a tenth of them, and its CPU per Gbit falls to HAProxy's level; the
    /// proxy's rises by about as much: the work moves, the total stays). Set on the listener
    /// once (accepted sockets inherit it); each backend socket costs one `setsockopt`.
    var notSentLowWater = 256 * 1024
    /// Each loop's scratch buffer: a direction reads and writes through it until one read fills
    /// it (then the direction splices through a pipe). Small enough that a bulk transfer leaves
    /// it after one read, big enough for a typical request or reply. At most `pipeSize`.
    var scratchSize = 16 * 1024
    /// Empty pipes each loop keeps for reuse (each holds two descriptors).
    var pooledPipesPerLoop = 1024
    /// How long a client of an `accept_proxy_protocol` frontend has to send its PROXY header (a
    /// balancer in front sends it with its first segment; nginx waits 30 s, this less, since
    /// each waiting client holds a descriptor). Shorter in tests.
    var proxyHeaderTimeout: Duration = .seconds(10)
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
