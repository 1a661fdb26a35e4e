import Foundation
import LabSupport
import Testing

/// lab/lab.sh builds what its contract says and leaves nothing behind.
@Suite(.serialized)
struct LabTests {
    @Test("A lab has its hosts and addresses, and `down` (twice) leaves no namespace with its prefix")
    func labUpAndDownIsClean() throws {
        guard try labAvailable("lab") else { return }
        var prefix = ""
        try Lab.with(backends: 2) { (lab: Lab) throws -> Void in
            prefix = lab.prefix
            #expect(lab.remainingNamespaces() == ["br", "b1", "b2", "client", "lb"].map { lab.namespace($0) }.sorted())
            #expect(try lab.check("b2", ["ip", "-o", "addr", "show", "dev", "lo"]).contains("10.77.0.100/32"))
            #expect(try lab.check("client", ["ip", "route", "get", "10.77.0.100"]).contains("via 10.77.0.2"))
            #expect(try lab.check("client", ["python3", "-c", Scripts.ping, "10.77.0.22"]) == "reply\n")
            lab.down()
            lab.down()
            #expect(lab.remainingNamespaces().isEmpty)
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns")) ?? []
        #expect(!names.contains { $0.hasPrefix(prefix + "-") })
    }
}
