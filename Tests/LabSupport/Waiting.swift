import Foundation

/// Polls `condition` every 20 ms for at most `seconds`; true when it held.
public func waitUntil(seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if try condition() { return true }
        usleep(20_000)
    }
    return try condition()
}

/// True when the lab may run; otherwise prints why the test is skipped (and, with CI=true,
/// `Lab.requireRoot()` throws instead, so CI never skips).
public func labAvailable(_ test: String) throws -> Bool {
    if try Lab.requireRoot() { return true }
    print("SKIPPED \(test): needs root for network namespaces and XDP (CI=true makes this a failure)")
    return false
}
