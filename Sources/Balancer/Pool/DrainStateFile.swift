#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import SystemPackage

/// The operator's runtime drains kept on disk (`[stats] state_file`), so that a restart, an
/// upgrade or a crash does not put a server under maintenance back into service (HAProxy's
/// `server-state-file` keeps such states for the same reason).
///
/// The file is JSON that convey rewrites after each change (a new file renamed over the old
/// one, so a crash leaves either the old or the new list, never half of one):
///
///     {"about": "...", "drained": [{"pool": "web_pool", "server": "b1"}]}
public struct DrainStateFile: Sendable {
    /// An absolute path (the loader refuses others).
    public let path: String

    public init(path: String) { self.path = path }

    private struct Document: Codable {
        var about: String?
        var drained: [Entry]
    }

    private struct Entry: Codable {
        var pool: String
        var server: String
    }

    static let about = "servers an operator drained (POST /servers/POOL/NAME/drain); convey rewrites this file on each change"

    /// The servers the file lists; none when the file does not exist yet (a first start).
    public func load() throws(DrainStateFileError) -> [ServerID] {
        let bytes: [UInt8]
        do {
            let fd = try FileDescriptor.open(path, .readOnly, options: [.closeOnExec])
            bytes = try fd.closeAfter { try Self.readAll(fd) }
        } catch let error as Errno where error == .noSuchFileOrDirectory {
            return []
        } catch {
            throw DrainStateFileError(path: path, kind: .unreadable, reason: "cannot read it: \(error)")
        }
        do {
            let document = try JSONDecoder().decode(Document.self, from: Data(bytes))
            return document.drained.map { ServerID(pool: $0.pool, name: $0.server) }
        } catch {
            throw DrainStateFileError(path: path, kind: .notADrainList, reason: "not a drain list convey wrote (\(Self.describe(error)))")
        }
    }

    /// Replaces the file with `drained` (in order): written to a new `PATH.tmp.PID` (never
    /// through a symbolic link, and never one another process writes), flushed to disk, then
    /// renamed over `PATH`.
    public func save(_ drained: [ServerID]) throws(DrainStateFileError) {
        let document = Document(about: Self.about, drained: drained.map { Entry(pool: $0.pool, server: $0.name) })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let temporary = path + ".tmp.\(getpid())"
        do {
            let data = try encoder.encode(document) + Data("\n".utf8)
            // A file left by a process of this pid that crashed is this process's to replace.
            _ = unlink(temporary)
            let fd = try FileDescriptor.open(temporary, .writeOnly, options: [.create, .exclusiveCreate, .noFollow, .closeOnExec],
                                             permissions: [.ownerReadWrite, .groupRead, .otherRead])
            try fd.closeAfter {
                _ = try fd.writeAll(data)
                guard fsync(fd.rawValue) == 0 else { throw Errno(rawValue: errno) }
            }
            guard rename(temporary, path) == 0 else { throw Errno(rawValue: errno) }
        } catch {
            _ = unlink(temporary)
            throw DrainStateFileError(path: path, kind: .unwritable, reason: "cannot write it: \(error)")
        }
        // The rename is durable once the directory is flushed too (best effort: a directory
        // that cannot be opened for reading still took the rename).
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if let fd = try? FileDescriptor.open(directory.isEmpty ? "/" : directory, .readOnly, options: [.directory, .closeOnExec]) {
            _ = fsync(fd.rawValue)
            try? fd.close()
        }
    }

    private static func readAll(_ fd: FileDescriptor) throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try fd.read(into: $0) }
            if n == 0 { return out }
            out += buffer[0..<n]
            // A drain list is small: anything this large is not one.
            if out.count > 16 << 20 { throw Errno.fileTooLarge }
        }
    }

    private static func describe(_ error: any Error) -> String {
        switch error as? DecodingError {
        case .dataCorrupted(let c): return c.debugDescription
        case .keyNotFound(let key, _): return "no '\(key.stringValue)' key"
        case .typeMismatch(_, let c), .valueNotFound(_, let c):
            let at = c.codingPath.map(\.stringValue).joined(separator: ".")
            return "\(at.isEmpty ? "" : "\(at): ")\(c.debugDescription)"
        default: return "\(error)"
        }
    }
}

/// The state file could not be read or written.
public struct DrainStateFileError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The file exists but could not be read (permissions, I/O): its list may be good.
        case unreadable
        /// The file was read but is not the JSON convey writes.
        case notADrainList
        /// The new list could not be written.
        case unwritable
    }

    public var path: String
    public var kind: Kind
    public var reason: String
    public var description: String { "state_file \(path): \(reason)" }

    public init(path: String, kind: Kind, reason: String) {
        self.path = path
        self.kind = kind
        self.reason = reason
    }
}
