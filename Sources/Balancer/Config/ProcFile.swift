import SystemPackage

/// Reads a small kernel settings file under `/proc/sys` (one or a few numbers), in the calling
/// thread's namespaces.
public enum ProcFile {
    /// The file's text (its first 4 KiB, which holds every such setting).
    public static func read(_ path: String) throws -> String {
        let fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        return try fd.closeAfter {
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = try buf.withUnsafeMutableBytes { try fd.read(into: $0) }
            return String(decoding: buf[0..<n], as: UTF8.self)
        }
    }
}
