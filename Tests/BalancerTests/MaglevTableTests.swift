import Balancer
import Testing

@Suite("Maglev table")
struct MaglevTableTests {
    /// Backends keyed like the runtime keys them ("ip:port"), all of weight 1.
    func backends(_ count: Int, weight: Int = 1) -> [(key: String, weight: Int)] {
        (0..<count).map { i in ("10.77.\(i / 250 + 1).\(i % 250 + 1):80", weight) }
    }

    @Test("100 equal backends each own their M/N share of the slots within 1%")
    func evenShares() {
        let n = 100
        let table = MaglevTable(backends: backends(n))
        #expect(table.size == MaglevTable.defaultSize)
        #expect(!table.entries.contains(-1))
        let ideal = Double(table.size) / Double(n)
        for (backend, slots) in table.slotCounts().enumerated() {
            #expect(abs(Double(slots) - ideal) <= ideal * 0.01, "backend \(backend) owns \(slots) slots")
        }
    }

    @Test("removing one of N backends moves at most 1/N + 1% of the slots", arguments: [10, 100, 1000])
    func removalDisruptsLittle(n: Int) {
        let all = backends(n)
        let before = MaglevTable(backends: all)
        for removed in [0, n / 2, n - 1] {
            var remaining = all
            remaining.remove(at: removed)
            let after = MaglevTable(backends: remaining)
            // Compare owners by key: indices shift after the removed one.
            let changed = zip(before.entries, after.entries).filter { old, new in
                all[Int(old)].key != remaining[Int(new)].key
            }.count
            let bound = (1.0 / Double(n) + 0.01) * Double(before.size)
            #expect(Double(changed) <= bound,
                    "removing backend \(removed) of \(n) moved \(changed) of \(before.size) slots")
            // The removed backend's own slots all moved; nobody else's would have to.
            #expect(changed >= before.slotCounts()[removed])
        }
    }

    @Test("weights give each backend a share of the slots in proportion, within 1%")
    func weightedShares() {
        let weights = [1, 2, 3, 4, 10, 0]
        let table = MaglevTable(backends: weights.enumerated().map { ("10.77.1.\($0 + 1):80", $1) })
        let total = Double(weights.reduce(0, +))
        for (backend, slots) in table.slotCounts().enumerated() {
            let ideal = Double(table.size) * Double(weights[backend]) / total
            #expect(abs(Double(slots) - ideal) <= Double(table.size) * 0.01,
                    "backend \(backend) of weight \(weights[backend]) owns \(slots) slots, ideal \(ideal)")
        }
        #expect(table.slotCounts().last == 0, "weight 0 owns no slot")
    }

    @Test("two tables built from the same servers are identical")
    func deterministicWithinProcess() {
        let input = backends(257)
        #expect(MaglevTable(backends: input) == MaglevTable(backends: input))
        #expect(MaglevTable(backends: input, size: 1009) == MaglevTable(backends: input, size: 1009))
    }

    @Test("the table is the same in every process (golden checksum for a fixed pool)")
    func deterministicAcrossProcesses() {
        let table = MaglevTable(backends: [("10.77.1.1:80", 1), ("10.77.1.2:80", 2), ("10.77.1.3:80", 1),
                                           ("[2001:db8::7]:8080", 3), ("10.77.1.5:80", 1)])
        #expect(Array(table.entries.prefix(16)) == GoldenMaglev.first16)
        #expect(checksum(table.entries) == GoldenMaglev.checksum)
    }

    /// An order-sensitive checksum of the table (FNV-1a over the entries).
    func checksum(_ entries: [Int32]) -> UInt64 {
        entries.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64(UInt32(bitPattern: $1))) &* 0x100_0000_01b3 }
    }

    @Test("a lookup reads the slot of hash mod M")
    func lookupIsHashModM() {
        let table = MaglevTable(backends: backends(7), size: 1009)
        for hash: UInt64 in [0, 1, 1008, 1009, 123_456_789, .max] {
            #expect(table.lookup(hash) == Int(table.entries[Int(hash % 1009)]))
        }
    }

    @Test("a table with no backend, or only weight-0 ones, places nothing")
    func emptyTable() {
        #expect(MaglevTable(backends: [], size: 13).lookup(42) == nil)
        let drained = MaglevTable(backends: [("10.77.1.1:80", 0)], size: 13)
        #expect(drained.entries == Array(repeating: -1, count: 13))
        #expect(drained.lookup(42) == nil)
    }

    @Test("table sizes must be prime")
    func sizeMustBePrime() {
        #expect(MaglevTable.isValidSize(MaglevTable.defaultSize))
        #expect(MaglevTable.isValidSize(2) && MaglevTable.isValidSize(1009) && MaglevTable.isValidSize(655_373))
        #expect(!MaglevTable.isValidSize(65_536) && !MaglevTable.isValidSize(1) && !MaglevTable.isValidSize(0))
        #expect(!MaglevTable.isValidSize(65_535) && !MaglevTable.isValidSize(25) && !MaglevTable.isValidSize(49))
    }

    @Test("building a table of non-prime size stops the process with a message")
    func nonPrimeSizeStops() async {
        await #expect(processExitsWith: .failure) {
            _ = MaglevTable(backends: [("10.77.1.1:80", 1)], size: 65_536)
        }
    }
}

/// Computed once by this implementation and frozen: a change means two Convey versions would
/// place DSR flows differently.
enum GoldenMaglev {
    static let first16: [Int32] = [4, 2, 3, 3, 3, 0, 0, 4, 2, 1, 3, 3, 3, 4, 4, 3]
    static let checksum: UInt64 = 11_866_152_533_191_823_494
}
