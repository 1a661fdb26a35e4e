import Testing
@testable import XSK

@Suite("HalfOpenPorts: the oldest half-open flow's port first; a full queue keeps its live entries")
struct HalfOpenPortsTests {
    /// The review's case: stale entries behind a live one must not push the live one out.
    @Test("compacting a full queue keeps the live ports in order, oldest first, and frees the rest")
    func compactKeepsLiveOnes() {
        let storage = HalfOpenPortsStorage(ports: 2)  // 4 entries
        var queue = HalfOpenPorts(storage: storage)
        for port: UInt16 in [61000, 61001, 61001, 61002] { queue.push(port) }
        #expect(queue.isFull)
        // 61000 (flow A) and 61001 (a later flow on a reused port) are half-open; 61002 was
        // established since. (A port queued twice is kept once here; keeping both is harmless:
        // the second pop finds no half-open flow and is skipped.)
        var live: Set<UInt16> = [61000, 61001]
        queue.compact { port in live.remove(port) != nil }
        #expect(queue.count == 2 && !queue.isFull)
        queue.push(61003)
        #expect(queue.popOldest() == 61000)
        #expect(queue.popOldest() == 61001)
        queue.restoreOldest(61001)
        #expect(queue.popOldest() == 61001)
        #expect(queue.popOldest() == 61003)
        #expect(queue.popOldest() == nil)
    }

    @Test("the ring wraps around")
    func wraps() {
        let storage = HalfOpenPortsStorage(ports: 1)  // 2 entries
        var queue = HalfOpenPorts(storage: storage)
        for round: UInt16 in 0..<5 {
            queue.push(100 + round)
            queue.push(200 + round)
            queue.compact { $0 >= 200 }
            #expect(queue.count == 1)
            #expect(queue.popOldest() == 200 + round)
        }
    }
}
