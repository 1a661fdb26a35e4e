#if canImport(Glibc)
import Glibc
#endif
import CLinux
import SystemPackage

/// An anonymous in-memory file (`memfd_create`) holding one document that a takeover passes
/// between two conveys beside its Unix-socket messages: a message has a size limit, a file
/// passed as a descriptor has none, and the receiver reads it whole.
package enum MemoryFile {
    /// The most a document read here may hold: a counters document of ten thousand servers is
    /// a few megabytes; anything far beyond is not one.
    package static let maxSize = 64 << 20

    /// A new memory file holding `bytes` (the caller closes it).
    package static func holding(_ bytes: [UInt8], name: String) throws(Errno) -> FileDescriptor {
        let raw = cl_memfd(name)
        guard raw >= 0 else { throw Errno(rawValue: errno) }
        let fd = FileDescriptor(rawValue: raw)
        do {
            _ = try bytes.withUnsafeBytes { try fd.writeAll($0) }
        } catch {
            try? fd.close()
            throw error as? Errno ?? .ioError
        }
        return fd
    }

    /// The whole content of the file at `fd` (from its start, whatever its offset); throws
    /// `.fileTooLarge` past `maxSize`.
    package static func contents(of fd: FileDescriptor) throws(Errno) -> [UInt8] {
        var info = stat()
        guard fstat(fd.rawValue, &info) == 0 else { throw Errno(rawValue: errno) }
        let size = Int(info.st_size)
        guard size <= maxSize else { throw .fileTooLarge }
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n: Int
            do {
                n = try bytes.withUnsafeMutableBytes { buffer in
                    try fd.read(fromAbsoluteOffset: Int64(done), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
                }
            } catch {
                throw error as? Errno ?? .ioError
            }
            guard n > 0 else { throw .ioError }  // shorter than fstat said: changed under us
            done += n
        }
        return bytes
    }
}
