#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// One convey per interface: a lock file per (network namespace, interface index) under
/// `/run/convey`, held with `flock(2)` for as long as the steering program is attached.
///
/// Why: a steering program on the interface is either a running convey's or one left behind by
/// a killed one, and only the second may be replaced. The kernel drops the lock when its holder
/// ends, however it ends, so "nobody holds the claim" is exactly "the program is stale" — no
/// pid file to go stale itself. Keyed by namespace inode too, because interface names and
/// indexes repeat across namespaces.
final class InterfaceClaim {
    private let descriptor: FileDescriptor

    /// Where the claims live.
    static let directory = "/run/convey"

    /// Claims `interface`, or throws `.interfaceInUse` naming the process that holds it. Nil
    /// when the claim cannot be recorded here (no writable `/run`): convey then runs unclaimed,
    /// as before claims existed.
    static func acquire(_ interface: NetworkInterface) throws(XSKError) -> InterfaceClaim? {
        var ns = stat()
        guard stat("/proc/thread-self/ns/net", &ns) == 0 else { return nil }
        _ = mkdir(directory, 0o755)
        let path = "\(directory)/xdp-\(ns.st_ino)-\(interface.index).lock"
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(path, .readWrite, options: [.create, .closeOnExec],
                                                 permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            return nil
        }
        guard flock(descriptor.rawValue, LOCK_EX | LOCK_NB) == 0 else {
            let holder = Self.holder(descriptor)
            try? descriptor.close()
            throw .interfaceInUse(interface: interface.name, pid: holder)
        }
        // Record the holder for the next one's message (the lock, not this text, is the claim).
        _ = ftruncate(descriptor.rawValue, 0)
        _ = try? descriptor.writeAll(toAbsoluteOffset: 0, "\(getpid())\n".utf8)
        return InterfaceClaim(descriptor)
    }

    private init(_ descriptor: FileDescriptor) { self.descriptor = descriptor }

    deinit { try? descriptor.close() }

    /// The pid written in the claim file, if any.
    private static func holder(_ descriptor: FileDescriptor) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = (try? buffer.withUnsafeMutableBytes { try descriptor.read(fromAbsoluteOffset: 0, into: $0) }) ?? 0
        return Int32(String(decoding: buffer.prefix(n).filter { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self))
    }
}
