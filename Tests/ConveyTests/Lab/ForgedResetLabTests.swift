import LabSupport
import Testing

/// Forged resets in the AF_XDP modes: real kernel TCP, segments forged from the client's own
/// address and port with sequence numbers far from the connection's.
extension EndToEndLabTests {
    @Test("DSR and passthrough: a RST, a RST+ACK and a FIN+ACK forged with sequence numbers far from the connection's are counted (closes_out_of_window) and leave its flow open: after closing_timeout of silence the connection still works")
    func forgedResetsLeaveTheConnection() throws {
        guard try labAvailable("forgedResetsLeaveTheConnection") else { return }
        for mode in ["dsr", "passthrough"] {
            // wrr: DSR cannot take up a lost flow by hashing, so a flow the forgery had closed
            // would be answered with a reset once closing_timeout (2 s) had passed.
            try ConveyLab.with(mode: mode, backends: 2, config: labConfig(backends: 2, balance: "wrr")) { lab in
                #expect(waitUntil(seconds: 10) { (try? lab.fromClient { try LabClient.who(timeout: 1) }) != nil })
                let script = Lab.packageRoot + "/lab/forged_reset.py"
                let result = try lab.lab.run("client", ["/usr/bin/python3", script, "10.77.0.100", "80", "3.5"], timeout: 20)
                #expect(result.status == 0 && result.stdout.contains("ok"), "\(mode): \(result.stdout) \(result.stderr)")
                #expect(waitUntil(seconds: 5) {
                    ((try? lab.forwarderTotals()["closes_out_of_window"]) as? Int ?? 0) == 3
                }, "\(mode): \(String(describing: try? lab.forwarderTotals()))")
                #expect(lab.stopConvey() == 0)
            }
        }
    }
}
