import Foundation
import Glibc
import LabSupport
import Testing

extension EndToEndLabTests {
    @Test("DSR, deny: the client's SYNs are dropped (counted as denied, per worker and for the frontend) and it reaches no backend; a reload that lifts the list lets it in")
    func dsrDeniedClient() throws {
        guard try labAvailable("dsrDeniedClient") else { return }
        let base = labConfig(backends: 1)
        let denied = base.replacingOccurrences(of: "balance = \"maglev\"\n", with: "balance = \"maglev\"\ndeny = \"10.77.0.10\"\n")
        #expect(denied != base)
        try ConveyLab.with(mode: "dsr", backends: 1, config: denied) { lab in
            #expect((try? lab.fromClient { try LabClient.who(timeout: 1) }) == nil, "the denied client gets no connection")
            #expect(waitUntil(seconds: 5) { ((try? lab.drops("denied")) ?? 0) >= 1 }, "\(String(describing: try? lab.forwarderTotals()))")
            #expect(waitUntil(seconds: 5) { (lab.frontendFigure("web", "denied") ?? 0) >= 1 })
            try lab.rewriteConfig(base)
            var answer: (name: String, peer: String)?
            #expect(waitUntil(seconds: 10) {
                answer = try? lab.fromClient { try LabClient.who(timeout: 1) }
                return answer != nil
            }, "served once the list is gone")
            #expect(answer?.name == "b1" && answer?.peer == "10.77.0.10", "DSR: the backend sees the client: \(String(describing: answer))")
        }
    }
}
