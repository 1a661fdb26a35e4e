import Foundation
import Glibc
import LabSupport

/// A blocking TCP client for lab tests, created inside a host's namespace (its socket stays
/// there whichever thread uses it later). Every call is bounded by the socket's timeouts.
final class LabClient: @unchecked Sendable {
    let fd: Int32

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Connects to `host:port` (IPv4, or IPv6 when `host` has a colon) within `timeout` seconds.
    init(to host: String, port: UInt16, timeout: Double = 3) throws {
        let v6 = host.contains(":")
        // Close-on-exec: a daemon the test starts meanwhile must not inherit it (a copy held
        // open there keeps the connection from ever closing).
        fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        func connect<Address>(_ address: Address) -> Int32 {
            withUnsafePointer(to: address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<Address>.size)) }
            }
        }
        let rc: Int32
        if v6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            inet_pton(AF_INET6, host, &address.sin6_addr)
            rc = connect(address)
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &address.sin_addr)
            rc = connect(address)
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw Failure(description: "connect \(host):\(port): \(String(cString: strerror(e)))")
        }
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: \(String(cString: strerror(errno)))") }
            offset += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// The local (client) port of the connection (IPv4).
    var localPort: UInt16 {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return UInt16(bigEndian: address.sin_port)
    }

    /// Half-closes: the peer reads EOF, we can still read.
    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// One `recv` of at most `count` bytes (empty at EOF); throws when the timeout passes first.
    func receive(upTo count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n >= 0 else { throw Failure(description: "recv: \(String(cString: strerror(errno)))") }
        return Array(buffer[0..<n])
    }

    /// Sends `bytes` on a connection in `ECHO` mode and reads them back: true when they all
    /// came back unchanged, false on a short read, a close or an error.
    func echoes(_ bytes: [UInt8]) -> Bool {
        guard (try? send(bytes)) != nil else { return false }
        var got: [UInt8] = []
        while got.count < bytes.count {
            guard let part = try? receive(upTo: bytes.count - got.count), !part.isEmpty else { return false }
            got += part
        }
        return got == bytes
    }

    /// Reads until EOF (or `limit` bytes).
    func readToEnd(limit: Int = 1 << 26) throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while out.count < limit {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw Failure(description: "recv after \(out.count) bytes: \(String(cString: strerror(errno)))") }
            out += buffer[0..<n]
        }
        return out
    }

    /// One `WHO` exchange: the backend's name and the address it saw us from.
    static func who(_ host: String = "10.77.0.100", port: UInt16 = 80, timeout: Double = 3) throws -> (name: String, peer: String) {
        let client = try LabClient(to: host, port: port, timeout: timeout)
        try client.send("WHO\n")
        let words = String(decoding: try client.readToEnd(limit: 256), as: UTF8.self).split(separator: " ")
        guard words.count == 3 else { throw Failure(description: "unexpected WHO answer: \(words)") }
        return (String(words[0]), String(words[1]))
    }

    /// A connection held open: `ECHO` and `text` sent, the echo's first bytes read (so the
    /// connection is established through to a server), the rest left to the caller.
    static func holding(_ text: String, host: String = "10.77.0.100", port: UInt16 = 80, timeout: Double = 5) throws -> LabClient {
        let client = try LabClient(to: host, port: port, timeout: timeout)
        try client.send("ECHO\n" + text)
        _ = try client.receive(upTo: text.utf8.count)
        return client
    }

    /// Sends `payload` after `ECHO`, half-closes, and returns what came back.
    static func echo(_ payload: [UInt8], host: String = "10.77.0.100", port: UInt16 = 80, timeout: Double = 5) throws -> [UInt8] {
        let client = try LabClient(to: host, port: port, timeout: timeout)
        try client.send("ECHO\n")
        // Write and read at once: the echo comes back while we still send.
        let reader = ReadAll(client)
        try client.send(payload)
        client.shutdownWrite()
        return try reader.result()
    }
}

/// Reads a client to EOF on a thread of its own (so a sender never deadlocks on full buffers).
final class ReadAll: @unchecked Sendable {
    private var value: Result<[UInt8], Error>?
    private let done = DispatchSemaphore(value: 0)

    init(_ client: LabClient) {
        Thread { [self] in
            value = Result { try client.readToEnd() }
            done.signal()
        }.start()
    }

    func result() throws -> [UInt8] {
        done.wait()
        return try value!.get()
    }
}

/// Pseudo-random bytes (deterministic per seed; SplitMix64).
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        for b in 0..<8 where i < count {
            out[i] = UInt8(truncatingIfNeeded: z >> (8 * UInt64(b)))
            i += 1
        }
    }
    return out
}
