import Balancer
import Glibc

/// A listener whose accept queue is full and never drained: the kernel drops further SYNs,
/// so a connect to it hangs (a server that stopped answering).
final class FullListener: @unchecked Sendable {
    let fd: Int32
    let endpoint: Endpoint
    private var fillers: [TestSocket] = []

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0, listen(fd, 0) == 0 else { throw TestError.timeout("a listener to bind") }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        endpoint = Endpoint(address: .v4(0x7F00_0001), port: UInt16(bigEndian: addr.sin_port))
        // A backlog of 0 queues one connection; a second may complete before the check.
        for _ in 0..<2 { if let s = try? TestSocket.connect(to: endpoint, timeout: 0.5) { fillers.append(s) } }
    }

    func close() {
        for s in fillers { s.close() }
        _ = Glibc.close(fd)
    }
}
