#if canImport(Glibc)
import Glibc
#endif

/// Large, zeroed, page-aligned memory from `mmap(2)`, advised for transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`), for tables the packet path reads at random (the flow table).
///
/// Why: a 1M-flow table spans ~100 MB; with 4 KiB pages nearly every random lookup also misses
/// the TLB, with 2 MiB pages almost none does. The advice is best effort: where THP is off
/// (`/sys/kernel/mm/transparent_hugepage/enabled` = never) the memory is ordinary pages.
/// If `mmap` fails the process cannot hold its configured tables, which is fatal at start.
struct HugePageMemory {
    let base: UnsafeMutableRawPointer
    let byteCount: Int

    static let hugePage = 2 << 20

    init(byteCount requested: Int) {
        let size = (max(requested, 1) + Self.hugePage - 1) / Self.hugePage * Self.hugePage
        // mmap aligns to 4 KiB only, and a huge page needs a 2 MiB-aligned range: map one huge
        // page more and unmap the unaligned head and tail, so all of the table can be backed.
        let mapped = size + Self.hugePage
        guard let p = mmap(nil, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              p != MAP_FAILED else {
            fatalError("cannot map \(size) bytes for a flow table: \(String(cString: strerror(errno))); "
                       + "lower [passthrough] connection_tracker_capacity")
        }
        let address = UInt(bitPattern: p)
        let aligned = (address + UInt(Self.hugePage) - 1) & ~UInt(Self.hugePage - 1)
        let head = Int(aligned - address)
        if head > 0 { munmap(p, head) }
        if mapped - head - size > 0 { munmap(p + head + size, mapped - head - size) }
        let base = p + head
        _ = madvise(base, size, MADV_HUGEPAGE)
        self.base = base
        byteCount = size
    }

    /// Unmaps the memory; call exactly once.
    func release() { munmap(base, byteCount) }
}
