import Logging
import SystemPackage

/// `net.ipv4.tcp_migrate_req`: whether the kernel hands the clients queued on a closing
/// listener to another listener of its port. It matters to a takeover only where some of the
/// replaced convey's sockets close with it: where it bound beside them instead of taking them
/// over, or took fewer than were handed (see `ListenerHandover`).
enum TakeoverMigration {
    static let path = "/proc/sys/net/ipv4/tcp_migrate_req"

    /// The file's first line, or nil when it cannot be read.
    static func setting() -> String? {
        guard let fd = try? FileDescriptor.open(FilePath(path), .readOnly) else { return nil }
        defer { try? fd.close() }
        var bytes = [UInt8](repeating: 0, count: 16)
        guard let n = try? bytes.withUnsafeMutableBytes({ try fd.read(into: $0) }) else { return nil }
        return String(decoding: bytes[0..<n], as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
    }

    /// Logs the setting in force and what it means for the clients of sockets bound beside.
    static func note(logger: Logger) {
        guard let value = setting() else {
            logger.warning("takeover: cannot read \(path) (a kernel before 5.14?): clients queued in the old convey's own listening sockets when it stops are reset")
            return
        }
        if value == "1" {
            logger.info("takeover: net.ipv4.tcp_migrate_req is 1: clients queued in the old convey's own listening sockets when it stops come to this one")
        } else {
            logger.warning("takeover: net.ipv4.tcp_migrate_req is 0: clients whose handshake completes as the old convey closes its own listening sockets are reset; sysctl -w net.ipv4.tcp_migrate_req=1 hands them to this one")
        }
    }
}
