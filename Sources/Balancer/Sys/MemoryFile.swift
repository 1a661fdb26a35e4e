#if canImport(Glibc)
import Glibc
#endif
import CLinux
import SystemPackage

/// An anonymous in-memory file (`memfd_create`) holding one document that a takeover passes
/// between two conveys beside its Unix-socket messages: a message has a size limit, a file
/// passed as a descriptor has none, and the receiver reads it whole.
package enum MemoryFile {
    /// The most a small document read here may hold by default: a counters document of ten
    /// thousand servers is a few megabytes; anything far beyond is not one.
    package static let maxSize = 64 << 20

    /// A new memory file holding `bytes` (the caller closes it).
    package static func holding(_ bytes: [UInt8], name: String) throws(Errno) -> FileDescriptor {
        try holding(pieces: [bytes[...]], name: name)
    }

    /// A new memory file holding `pieces` one after the other, written without joining them
    /// first (a takeover's flows are megabytes, written while workers are paused).
    package static func holding(pieces: [ArraySlice<UInt8>], name: String) throws(Errno) -> FileDescriptor {
        let raw = cl_memfd(name)
        guard raw >= 0 else { throw Errno(rawValue: errno) }
        let fd = FileDescriptor(rawValue: raw)
        do {
            for piece in pieces { _ = try piece.withUnsafeBytes { try fd.writeAll($0) } }
        } catch {
            try? fd.close()
            throw error as? Errno ?? .ioError
        }
        return fd
    }

    /// The whole content of the file at `fd` (from its start, whatever its offset); throws
    /// `.fileTooLarge` past `limit`. Filled by `pread` alone: zero-filling megabytes first
    /// would touch every page twice.
    package static func contents(of fd: FileDescriptor, limit: Int = maxSize) throws(Errno) -> [UInt8] {
        var info = stat()
        guard fstat(fd.rawValue, &info) == 0 else { throw Errno(rawValue: errno) }
        let size = Int(info.st_size)
        guard size <= limit else { throw .fileTooLarge }
        var failure: Errno?
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            var done = 0
            while done < size {
                let n = pread(fd.rawValue, buffer.baseAddress! + done, size - done, off_t(done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    // n == 0: shorter than fstat said (changed under us).
                    failure = Errno(rawValue: n < 0 ? errno : EIO)
                    break
                }
                done += n
            }
            initialized = done
        }
        if let failure { throw failure }
        return bytes
    }
}
