import Balancer
import Foundation
import LabSupport
import Testing
import XSK

let vip4 = Endpoint(address: IPAddress("10.77.0.100")!, port: 80)
let vip6 = Endpoint(address: IPAddress("fd77::100")!, port: 80)

extension Lab {
    /// A started data path on the lb's veth0 that steers TCP to `vip4` and `vip6` into
    /// `SYNCounter` workers (unpinned). Stop it when done.
    func startSYNCounter() throws -> XSKDataPath<SYNCounter> {
        try inNamespace("lb") {
            let path = try XSKDataPath<SYNCounter>(interface: "veth0", config: XDPConfig(), pinThreads: false,
                                                   vips: [(vip4, .tcp), (vip6, .tcp)]) { _ in SYNCounter() }
            try path.start()
            return path
        }
    }

    /// `ip link show veth0` in `host`.
    func link(_ host: String) throws -> String {
        try check(host, ["ip", "link", "show", "veth0"])
    }

    /// The XDP program name on `host`'s veth0 (nil when none).
    func xdpProgramName(_ host: String) throws -> String? {
        let text = try link(host)
        guard let range = text.range(of: "prog/xdp id ") else { return nil }
        let rest = text[range.upperBound...].split(separator: " ")
        guard let nameIndex = rest.firstIndex(of: "name"), nameIndex + 1 < rest.count else { return "?" }
        return String(rest[nameIndex + 1])
    }

    /// The id of the XDP program on `host`'s veth0, if any.
    func xdpProgramID(_ host: String) throws -> Int? {
        let text = try link(host)
        guard let range = text.range(of: "prog/xdp id ") else { return nil }
        return text[range.upperBound...].split(separator: " ").first.flatMap { Int($0) }
    }

    /// The built XSKReflect binary (built by `swift build --build-tests` with the package).
    static var reflectBinary: String { packageRoot + "/.build/debug/XSKReflect" }
    /// The built convey binary (likewise).
    static var conveyBinary: String { packageRoot + "/.build/debug/convey" }
}
