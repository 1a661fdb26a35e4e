#if canImport(Glibc)
import Glibc
#endif

/// What the AF_XDP modes need from the kernel before anything is loaded: attaching XDP
/// (CAP_NET_ADMIN), loading BPF (CAP_BPF, or CAP_SYS_ADMIN before Linux 5.8) and AF_XDP sockets
/// (CAP_NET_RAW). Checked up front so that an unprivileged start says "run as root" instead of
/// failing deep in libbpf with "Bad file descriptor".
enum XDPPrivileges {
    static let netAdmin = 12, netRaw = 13, sysAdmin = 21, bpf = 39

    /// The capability names missing from the effective set, empty when all are there (or the
    /// set cannot be read: then the kernel's own answer decides).
    static func missing() -> [String] {
        guard let capabilities = effectiveCapabilities() else { return [] }
        func has(_ bit: Int) -> Bool { capabilities >> UInt64(bit) & 1 == 1 }
        var out: [String] = []
        if !has(netAdmin) { out.append("CAP_NET_ADMIN") }
        if !has(netRaw) { out.append("CAP_NET_RAW") }
        if !has(bpf) && !has(sysAdmin) { out.append("CAP_BPF") }
        return out
    }

    /// `CapEff` of `/proc/self/status`.
    static func effectiveCapabilities() -> UInt64? {
        guard let file = fopen("/proc/self/status", "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if text.hasPrefix("CapEff:") {
                return UInt64(text.dropFirst(7).filter { !$0.isWhitespace }, radix: 16)
            }
        }
        return nil
    }
}
