import Balancer
import Foundation
import LabSupport
import Testing

let vip4 = Endpoint(address: IPAddress("10.77.0.100")!, port: 80)
let vip6 = Endpoint(address: IPAddress("fd77::100")!, port: 80)

/// Polls `condition` every 20 ms for at most `seconds`; true when it held.
func waitUntil(seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if try condition() { return true }
        usleep(20_000)
    }
    return try condition()
}

/// True when the lab may run; otherwise prints why the test is skipped (and, with CI=true,
/// `Lab.requireRoot()` throws instead, so CI never skips).
func labAvailable(_ test: String) throws -> Bool {
    if try Lab.requireRoot() { return true }
    print("SKIPPED \(test): needs root for network namespaces and XDP (CI=true makes this a failure)")
    return false
}

extension Lab {
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

    /// The built XSKReflect binary (built by `swift build --build-tests` with the package).
    static var reflectBinary: String { packageRoot + "/.build/debug/XSKReflect" }
}
