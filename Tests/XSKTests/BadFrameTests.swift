import Balancer
import LabSupport
import Testing
import XSK

/// Frames that are truncated, fragmented, tagged or carry options or extension headers: the
/// program passes or counts them, and neither it nor the worker falls over.
@Suite(.serialized)
struct BadFrameTests {
    @Test("Bad and unusual frames are passed or counted, never a crash; the worker keeps working")
    func badFramesArePassedOrCounted() throws {
        guard try labAvailable("bad frames") else { return }
        try Lab.with(backends: 0) { lab in
            let lbMAC = try lab.inNamespace("lb") { try NetworkInterface(named: "veth0").mac }
            let clientMAC = try lab.inNamespace("client") { try NetworkInterface(named: "veth0").mac }
            let path = try lab.startSYNCounter()
            defer { path.stop() }

            func send(_ kind: String) throws -> SteeringVerdicts {
                let before = try path.program.verdicts()
                _ = try lab.check("client", ["python3", "-c", Scripts.badFrames, "\(lbMAC)", "\(clientMAC)", kind, "3"])
                _ = waitUntil(seconds: 0.3) { false }
                let after = try path.program.verdicts()
                var d = SteeringVerdicts()
                d.passedNotIP = after.passedNotIP - before.passedNotIP
                d.passedNotSteered = after.passedNotSteered - before.passedNotSteered
                d.passedVLAN = after.passedVLAN - before.passedVLAN
                d.passedFragment = after.passedFragment - before.passedFragment
                d.passedExtensionHeader = after.passedExtensionHeader - before.passedExtensionHeader
                d.redirectedVIP = after.redirectedVIP - before.redirectedVIP
                d.malformed = after.malformed - before.malformed
                return d
            }

            do {
                let d = try send("short-ip4")
                #expect(d.malformed == 3, "\(d)")
            }
            do {
                let d = try send("bad-ihl")
                #expect(d.malformed == 3, "\(d)")
            }
            do {
                let d = try send("long-ihl")
                #expect(d.malformed == 3, "\(d)")
            }
            do {
                let d = try send("short-tcp")
                #expect(d.malformed == 3, "\(d)")
            }
            do {
                let d = try send("short-ip6")
                #expect(d.malformed == 3, "\(d)")
            }
            do {
                let d = try send("fragment")
                #expect(d.passedFragment == 3, "\(d)")
            }
            do {
                let d = try send("later-fragment")
                #expect(d.passedFragment == 3, "\(d)")
            }
            // Tagged frames reach the program untagged here: the bridge namespace's receive path
            // moves the tag into skb metadata (skb_vlan_untag) and veth's XDP sees the bare
            // frame, so the program cannot tell. Counted as what the bare frame is.
            let vlan = try send("vlan")
            #expect(vlan.passedVLAN + vlan.redirectedVIP == 3)
            withKnownIssue("VLAN tags moved to metadata before XDP are invisible to the program (needs bpf_xdp_metadata_rx_vlan_tag)") {
                #expect(vlan.passedVLAN == 3)
            }
            do {
                let d = try send("ext6")
                #expect(d.passedExtensionHeader == 3, "\(d)")
            }
            let withOptions = try send("options")
            #expect(withOptions.redirectedVIP == 3, "IP options are valid: the frame is steered")
            let broadcast = try send("broadcast-syn4")
            // At least: the lab's own group-addressed frames (IPv6 neighbour discovery, MLD) may
            // arrive in the same window and are counted there too.
            #expect(broadcast.redirectedVIP == 0 && broadcast.passedNotSteered >= 3, "a group-addressed frame is the kernel's: \(broadcast)")
            #expect(try send("syn4").redirectedVIP == 3, "the worker still takes SYNs")
            #expect(waitUntil(seconds: 3) { path.stats().totals.rxPackets >= 6 })

            path.stop()
            let handlers = path.allWorkers.map(\.finalHandler)
            #expect(handlers.reduce(0) { $0 + $1.synV4WithOptions } == 3)
            #expect(handlers.reduce(0) { $0 + $1.synV4 } == 6 + vlan.redirectedVIP)
        }
    }
}
