import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One rtnetlink dump request (`NLM_F_DUMP`) and its replies, message by message: what the
/// neighbour-table and address readers share. Runs in the calling thread's network namespace.
///
/// Hand-written rather than through a netlink library: two small read-only dumps, and libnl
/// would add a dependency for them.
enum RouteNetlink {
    /// Why a dump failed: the step (`socket`, `send`, `recv`) and the kernel's errno.
    struct Failure: Error {
        var step: String
        var errno: Errno
    }

    /// Sends `type` with a family header of `headerSize` bytes whose first byte is `family`,
    /// and calls `body` with each reply message of type `replyType` (the bytes after the
    /// netlink header) until the dump is done.
    static func dump(_ type: Int, family: UInt8, headerSize: Int, replyType: Int,
                     _ body: (UnsafeRawBufferPointer) -> Void) throws(Failure) {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), NETLINK_ROUTE)
        guard fd >= 0 else { throw Failure(step: "socket", errno: Errno(rawValue: errno)) }
        defer { close(fd) }

        let size = 16 + headerSize
        var request = [UInt8](repeating: 0, count: size)
        request.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(size), toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: UInt16(type), toByteOffset: 4, as: UInt16.self)
            raw.storeBytes(of: UInt16(NLM_F_REQUEST | NLM_F_DUMP), toByteOffset: 6, as: UInt16.self)
            raw.storeBytes(of: UInt32(1), toByteOffset: 8, as: UInt32.self)  // sequence
            raw.storeBytes(of: family, toByteOffset: 16, as: UInt8.self)
        }
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == request.count else { throw Failure(step: "send", errno: Errno(rawValue: errno)) }

        var buffer = [UInt8](repeating: 0, count: 32 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(step: "recv", errno: Errno(rawValue: errno))
            }
            let done = buffer.withUnsafeBytes { raw in
                messages(UnsafeRawBufferPointer(rebasing: raw[0..<n]), replyType: replyType, minimumBody: headerSize, body)
            }
            if done { return }
        }
    }

    /// Walks one datagram of a dump; returns true at `NLMSG_DONE` or an error message.
    static func messages(_ data: UnsafeRawBufferPointer, replyType: Int, minimumBody: Int,
                         _ body: (UnsafeRawBufferPointer) -> Void) -> Bool {
        var offset = 0
        while offset + 16 <= data.count {
            let length = Int(data.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            let type = data.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self)
            guard length >= 16, offset + length <= data.count else { return true }
            if type == UInt16(NLMSG_DONE) || type == UInt16(NLMSG_ERROR) { return true }
            if type == UInt16(replyType), length >= 16 + minimumBody {
                body(UnsafeRawBufferPointer(rebasing: data[(offset + 16)..<(offset + length)]))
            }
            offset += align4(length)
        }
        return false
    }

    /// Calls `body` with each route attribute (type, payload) found from `offset` on.
    static func attributes(_ data: UnsafeRawBufferPointer, from offset: Int,
                           _ body: (UInt16, UnsafeRawBufferPointer) -> Void) {
        var offset = offset
        while offset + 4 <= data.count {
            let length = Int(data.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            let type = data.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self)
            guard length >= 4, offset + length <= data.count else { return }
            body(type, UnsafeRawBufferPointer(rebasing: data[(offset + 4)..<(offset + length)]))
            offset += align4(length)
        }
    }

    static func align4(_ n: Int) -> Int { (n + 3) & ~3 }
}
