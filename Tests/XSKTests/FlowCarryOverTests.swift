#if canImport(Glibc)
import Glibc
#endif
import Balancer
import Testing
@testable import XSK

/// A takeover's flow hand-over at the forwarder level: the flows one worker exports, entered
/// into a fresh worker of another "process" (its own routes publisher, whose backend slots are
/// numbered differently, its own reverse map), go on exactly as before: the same bytes out for
/// the same bytes in, both ways.
@Suite("Flow carry-over: exported flows go on in a new forwarder byte for byte")
struct FlowCarryOverTests {
    static let nat: UInt32 = 0x0A4D_0002

    /// A fixture for the same configuration whose routes number the backends the other way
    /// round (the servers were first published in reverse order), as a new process may.
    /// A fixture for the same configuration whose routes number the backends differently, as
    /// a new process's may.
    static func renumberedFixture(balance: BalanceAlgorithm, count: Int) -> RoutesFixture {
        RoutesFixture(balance: balance, count: count, decoys: 5)
    }

    static func passthrough(_ fixture: RoutesFixture, worker: Int = 0, of count: Int = 1,
                            map: NATReverseMap = NATReverseMap()) -> PassthroughForwarder {
        var f = PassthroughForwarder(settings: ForwarderSettings(capacity: 1024, natAddress: .v4(nat), natPorts: 61000...61999,
                                                                 workerIndex: worker, workerCount: count),
                                     routes: fixture.publisher, reverseMap: map)
        f.beginBatch(now: second)
        return f
    }

    /// Opens `clients` connections through `pt` (SYN, the backend's SYN-ACK, the client's
    /// ACK) and returns, per connection, the client port, its NAT port and backend address.
    static func open(_ clients: Int, through pt: inout PassthroughForwarder) -> [(port: UInt16, nat: UInt16, backend: UInt32)] {
        (0..<clients).map { n in
            let port = UInt16(40_000 + n)
            var syn = clientFrame(port: port, flags: TCPHeader.syn, seq: 5000)
            #expect(withFrame(&syn) { pt.handle($0) } == .transmit)
            let o = TestFrames.fields(syn)
            var synAck = TestFrames.ipv4TCP(src: o.dst, dst: nat, sport: o.dport, dport: o.sport,
                                            flags: TCPHeader.syn | TCPHeader.ack)
            #expect(withFrame(&synAck) { pt.handle($0) } == .transmit)
            var ack = clientFrame(port: port, flags: TCPHeader.ack, seq: 5001)
            #expect(withFrame(&ack) { pt.handle($0) } == .transmit)
            return (port, o.sport, o.dst)
        }
    }

    @Test("passthrough: both directions of every carried flow come out byte for byte as before, on renumbered slots")
    func passthroughFlowsGoOnByteForByte() {
        let before = RoutesFixture(balance: .wrr, count: 3)
        var old = Self.passthrough(before)
        let flows = Self.open(24, through: &old)
        let records = old.exportFlows()
        #expect(records.count == 24)
        #expect(Set(records.map(\.natPort)) == Set(flows.map(\.nat)))
        #expect(records.allSatisfy { $0.state == .established && $0.clientMAC == TestFrames.clientMAC })

        let after = Self.renumberedFixture(balance: .wrr, count: 3)
        let s1 = ServerID(pool: "pool", name: "s1")
        #expect(before.publisher.current().routes.slot(of: s1) != after.publisher.current().routes.slot(of: s1),
                "the new routes number the servers differently")
        var new = Self.passthrough(after)
        let freeBefore = new.freeNATPorts
        let result = new.importFlows(records, freeNATPorts: old.exportFreeNATPorts(), now: 2 * second)
        #expect(result.imported == 24 && result.leftOut == 0)
        #expect(new.flowCount == 24 && new.freeNATPorts == freeBefore - 24)
        #expect(new.exportFreeNATPorts() == old.exportFreeNATPorts(), "the free ports keep their order: the longest-free first")
        // Without the queue (or with one that does not fit), the held ports are taken out of the new one's.
        var plain = Self.passthrough(Self.renumberedFixture(balance: .wrr, count: 3))
        #expect(plain.importFlows(records, freeNATPorts: [61_000, 61_000], now: 2 * second).imported == 24)
        #expect(plain.freeNATPorts == freeBefore - 24 && Set(plain.exportFreeNATPorts()).isDisjoint(with: flows.map(\.nat)))

        for (n, flow) in flows.enumerated() {
            let payload = Array("request \(n)".utf8)
            var a = clientFrame(port: flow.port, flags: TCPHeader.ack | 0x08, payload: payload, seq: 5001)
            var b = a
            #expect(withFrame(&a) { old.handle($0) } == .transmit)
            #expect(withFrame(&b) { new.handle($0) } == .transmit)
            #expect(a == b, "client segment of flow \(n)")
            var ra = TestFrames.ipv4TCP(src: flow.backend, dst: Self.nat, sport: 8080, dport: flow.nat,
                                        flags: TCPHeader.ack | 0x08, srcMAC: RoutesFixture.backendMAC(1),
                                        payload: Array("reply \(n)".utf8))
            var rb = ra
            #expect(withFrame(&ra) { old.handle($0) } == .transmit)
            #expect(withFrame(&rb) { new.handle($0) } == .transmit)
            #expect(ra == rb, "backend reply of flow \(n)")
            #expect(TestFrames.fields(rb).dst == 0x0A4D_000A && TestFrames.fields(rb).dport == flow.port)
        }
        // The servers' open counts came along: each server holds its 8 flows.
        for i in 1...3 {
            let id = ServerID(pool: "pool", name: "s\(i)")
            let slot = after.publisher.current().routes.slot(of: id)!
            #expect(after.publisher.openFlows.open(slot) == 8, "\(id)")
        }
        // A new connection gets a port no carried flow holds.
        var syn = clientFrame(port: 50_000, flags: TCPHeader.syn)
        #expect(withFrame(&syn) { new.handle($0) } == .transmit)
        #expect(!flows.map(\.nat).contains(TestFrames.fields(syn).sport))
    }

    @Test("passthrough: a backend's FIN before the takeover still closes the flow after the client's FIN")
    func serverCloseIsCarried() {
        let fixture = RoutesFixture(balance: .wrr, count: 1)
        var old = Self.passthrough(fixture)
        let flow = Self.open(1, through: &old)[0]
        var fin = TestFrames.ipv4TCP(src: flow.backend, dst: Self.nat, sport: 8080, dport: flow.nat,
                                     flags: TCPHeader.fin | TCPHeader.ack, srcMAC: RoutesFixture.backendMAC(1))
        #expect(withFrame(&fin) { old.handle($0) } == .transmit)
        let records = old.exportFlows()
        #expect(records.first?.serverClosed == .finished)

        var new = Self.passthrough(RoutesFixture(balance: .wrr, count: 1))
        #expect(new.importFlows(records, now: 2 * second).imported == 1)
        var clientFin = clientFrame(port: flow.port, flags: TCPHeader.fin | TCPHeader.ack, seq: 5001)
        #expect(withFrame(&clientFin) { new.handle($0) } == .transmit)
        new.beginBatch(now: 3 * second)
        #expect(new.exportFlows().first?.state == .closing, "both sides have sent FIN: the flow is closing")
    }

    @Test("records that cannot go on are left out and counted: unknown VIP, server gone or moved, a NAT port not this worker's")
    func unfitRecordsAreCounted() {
        let fixture = RoutesFixture(balance: .wrr, count: 2)
        var old = Self.passthrough(fixture)
        _ = Self.open(4, through: &old)
        var records = old.exportFlows()
        #expect(records.count == 4)
        records[0].vipPort = 81
        records[1].server = ServerID(pool: "pool", name: "gone")
        records[2].backendPort = 9090
        var foreign = records[3]
        foreign.clientPort &+= 1
        foreign.natPort = 61900  // worker 1's slice of two
        records.append(foreign)

        var worker0 = Self.passthrough(RoutesFixture(balance: .wrr, count: 2), worker: 0, of: 2)
        let result = worker0.importFlows(records, now: 2 * second)
        #expect(result.noFrontend == 1 && result.noServer == 2 && result.natPortUnavailable == 1)
        #expect(result.imported == 1 && worker0.flowCount == 1)
    }

    @Test("a record given twice is entered once (the second is left out as finding no room), in DSR and passthrough")
    func repeatedRecordsAreEnteredOnce() {
        let fixture = RoutesFixture(balance: .wrr, count: 2)
        var dsr = DSRForwarder(settings: ForwarderSettings(capacity: 1024), routes: fixture.publisher)
        dsr.beginBatch(now: second)
        for n in 0..<40 {
            var syn = clientFrame(port: UInt16(40_000 + n), flags: TCPHeader.syn, seq: 7000)
            #expect(withFrame(&syn) { dsr.handle($0) } == .transmit)
        }
        var records = dsr.exportFlows()
        records += records.suffix(3) + records.prefix(2)
        var next = DSRForwarder(settings: ForwarderSettings(capacity: 1024), routes: fixture.publisher)
        let result = next.importFlows(records, now: 2 * second)
        #expect(result.imported == 40 && result.tableFull == 5 && next.exportFlows().count == 40, "\(result)")

        var old = Self.passthrough(fixture)
        _ = Self.open(6, through: &old)
        var natRecords = old.exportFlows()
        var again = natRecords[2]
        again.natPort = natRecords[2].natPort == 61_000 ? 61_001 : 61_000  // the same flow on another port
        natRecords.append(again)
        var new = Self.passthrough(RoutesFixture(balance: .wrr, count: 2))
        let natResult = new.importFlows(natRecords, now: 2 * second)
        #expect(natResult.imported == 6 && natResult.leftOut == 1 && new.flowCount == 6, "\(natResult)")
    }

    @Test("DSR: a flow keeps its server across the takeover, though the new forwarder's own choice differs")
    func dsrFlowsKeepTheirServers() {
        let fixture = RoutesFixture(balance: .wrr, count: 3)
        var old = DSRForwarder(settings: ForwarderSettings(capacity: 1024), routes: fixture.publisher)
        old.beginBatch(now: second)
        var macs: [UInt16: UInt64] = [:]
        for n in 0..<30 {
            let port = UInt16(40_000 + n)
            var syn = clientFrame(port: port, flags: TCPHeader.syn, seq: 7000)
            #expect(withFrame(&syn) { old.handle($0) } == .transmit)
            macs[port] = TestFrames.fields(syn).dstMAC
        }
        let records = old.exportFlows()
        #expect(records.count == 30 && records.allSatisfy { $0.state == .syn && $0.natPort == 0 })

        let after = Self.renumberedFixture(balance: .wrr, count: 3)
        var new = DSRForwarder(settings: ForwarderSettings(capacity: 1024, workerIndex: 1, workerCount: 2),
                               routes: after.publisher)
        #expect(new.importFlows(records, now: 2 * second).imported == 30)
        var moved = 0
        var fresh = DSRForwarder(settings: ForwarderSettings(capacity: 1024, workerIndex: 1, workerCount: 2),
                                 routes: after.publisher)
        fresh.beginBatch(now: 2 * second)
        for n in 0..<30 {
            let port = UInt16(40_000 + n)
            var ack = clientFrame(port: port, flags: TCPHeader.ack, payload: [1], seq: 7001)
            #expect(withFrame(&ack) { new.handle($0) } == .transmit)
            #expect(TestFrames.fields(ack).dstMAC == macs[port], "client port \(port)")
            var syn = clientFrame(port: port, flags: TCPHeader.syn, seq: 7000)
            _ = withFrame(&syn) { fresh.handle($0) }
            if TestFrames.fields(syn).dstMAC != macs[port] { moved += 1 }
        }
        #expect(moved > 0, "without the records, the new forwarder would place some of these flows elsewhere")
    }
}

@Suite("Takeover documents: flows and worker hand-overs read back as written; damaged ones are refused")
struct HandoverCodingTests {
    @Test func flowRecordsRoundTrip() throws {
        let fixture = RoutesFixture(balance: .wrr, count: 3)
        var pt = FlowCarryOverTests.passthrough(fixture)
        _ = FlowCarryOverTests.open(20, through: &pt)
        var records = pt.exportFlows()
        records[0].serverClosed = .reset
        records[1].clientFinished = true
        records[2].state = .closing
        records[3].server = ServerID(pool: "pöol with spaces", name: "")
        let bytes = FlowRecord.encode(records)
        #expect(try FlowRecord.decode(bytes) == records)
        #expect(try FlowRecord.decode(FlowRecord.encode([])) == [])
        for cut in [0, 3, 4, 20, bytes.count / 2, bytes.count - 1] {
            #expect(throws: HandoverFormatError.self, "cut at \(cut)") { try FlowRecord.decode(Array(bytes[0..<cut])) }
        }
        var badState = bytes
        // The last record's state byte: 83-byte records, the state 58 bytes into each.
        badState[bytes.count - 83 + 58] = 9
        #expect(throws: HandoverFormatError.self) { try FlowRecord.decode(badState) }
        var badServer = bytes
        badServer[bytes.count - 83 + 36] = 200  // an index past the part's server list
        #expect(throws: HandoverFormatError.self) { try FlowRecord.decode(badServer) }
        var badClose = bytes
        badClose[bytes.count - 1] = 7  // no such way to close
        #expect(throws: HandoverFormatError.self) { try FlowRecord.decode(badClose) }
        #expect(throws: HandoverFormatError.self) { try FlowRecord.decode(bytes + [0]) }
        #expect(throws: HandoverFormatError.self, "a range past the document") {
            try FlowPart(validating: bytes, range: 0..<(bytes.count + 83))
        }
    }

    /// Conveys of different builds read each other's documents, so the record layout is the
    /// format's, not the code's: every field at its offset, little-endian (format 1).
    @Test func flowRecordBytesAreFormatOne() throws {
        let record = FlowRecord(clientHi: 0x0102_0304_0506_0708, clientLo: 0x1112_1314_1516_1718, clientPort: 0x2122,
                                vipHi: 0x3132_3334_3536_3738, vipLo: 0x4142_4344_4546_4748, vipPort: 0x5152,
                                server: ServerID(pool: "p", name: "s1"), backendHi: 0x6162_6364_6566_6768,
                                backendLo: 0x7172_7374_7576_7778, backendPort: 0x8182, state: .closing,
                                lastSeen: 0x9192_9394_9596_9798, clientFinished: true, clientSequence: 0xA1A2_A3A4,
                                natPort: 0xB1B2, clientMAC: 0xC1C2_C3C4_C5C6_C7C8, serverClosed: .reset)
        let bytes = FlowRecord.encode([record])
        func le(_ value: UInt64, _ size: Int) -> [UInt8] { (0..<size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        // version 1, one server ("p", "s1"), one record
        var expected = le(1, 4) + le(1, 4) + le(1, 4) + Array("p".utf8) + le(2, 4) + Array("s1".utf8) + le(1, 4)
        expected += le(0x0102_0304_0506_0708, 8) + le(0x1112_1314_1516_1718, 8) + le(0x2122, 2)
        expected += le(0x3132_3334_3536_3738, 8) + le(0x4142_4344_4546_4748, 8) + le(0x5152, 2)
        expected += le(0, 4)  // the server's index
        expected += le(0x6162_6364_6566_6768, 8) + le(0x7172_7374_7576_7778, 8) + le(0x8182, 2)
        expected += [FlowState.closing.rawValue] + le(0x9192_9394_9596_9798, 8) + [1] + le(0xA1A2_A3A4, 4)
        expected += le(0xB1B2, 2) + le(0xC1C2_C3C4_C5C6_C7C8, 8) + [FlowRecord.ServerClosed.reset.rawValue]
        #expect(bytes == expected)
        #expect(try FlowRecord.decode(expected) == [record])
    }

    @Test func workerHandoverRoundTrips() throws {
        let worker = XSKWorkerHandover(queue: 3, frameCount: 8, frameSize: 2048, fillSize: 4, completionSize: 4, rxSize: 4,
                                       txSize: 4, freeFrames: [0, 2048, 6144], txOutstanding: 2)
        #expect(try XSKWorkerHandover(decoding: worker.encoded()) == worker)
        var outside = worker
        outside.freeFrames = [8 * 2048]
        #expect(throws: HandoverFormatError.self) { try XSKWorkerHandover(decoding: outside.encoded()) }
        var unaligned = worker
        unaligned.freeFrames = [100]
        #expect(throws: HandoverFormatError.self) { try XSKWorkerHandover(decoding: unaligned.encoded()) }
        #expect(throws: HandoverFormatError.self) { try XSKWorkerHandover(decoding: Array(worker.encoded().dropLast())) }

        let forwarder = ForwarderHandover(flows: [], freeNATPorts: [61_003, 61_001, 61_002])
        let document = WorkerDocument.encode(worker, forwarder)
        let (w, f) = try WorkerDocument.decode(document)
        #expect(w == worker && f == forwarder)
        #expect(throws: HandoverFormatError.self) { try WorkerDocument.decode(Array(document.dropLast())) }
        #expect(throws: HandoverFormatError.self) { try WorkerDocument.decode(document + [0]) }
    }

    /// What a takeover sends: the document written into a memfd in its pieces reads back as
    /// the joined document, flows included.
    @Test func workerDocumentGoesThroughAMemfd() throws {
        let fixture = RoutesFixture(balance: .wrr, count: 3)
        var pt = FlowCarryOverTests.passthrough(fixture)
        _ = FlowCarryOverTests.open(20, through: &pt)
        let worker = XSKWorkerHandover(queue: 0, frameCount: 8, frameSize: 2048, fillSize: 4, completionSize: 4, rxSize: 4,
                                       txSize: 4, freeFrames: [0, 2048], txOutstanding: 0)
        let handover = pt.exportHandover()
        #expect(handover.flows.count == 20 && !handover.freeNATPorts.isEmpty)
        let memfd = try WorkerDocument.write(worker, handover)
        defer { close(memfd) }
        let bytes = try WorkerDocument.read(memfd: memfd)
        #expect(bytes == WorkerDocument.encode(worker, handover))
        let (w, f) = try WorkerDocument.decode(bytes)
        #expect(w == worker && f == handover && f.flows.records == pt.exportFlows())
    }
}
