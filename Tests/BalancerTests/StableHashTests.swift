import Balancer
import Testing

/// Placement must not depend on the process: these pin the hash to published and golden values.
@Suite("Stable hash")
struct StableHashTests {
    /// Reference SipHash-2-4 key 00 01 .. 0f, as two little-endian words.
    let referenceKey = (k0: UInt64(0x0706_0504_0302_0100), k1: UInt64(0x0f0e_0d0c_0b0a_0908))

    @Test("matches the published SipHash-2-4 test vectors, byte by byte and word by word")
    func publishedVectors() {
        // From the SipHash reference implementation: message = 00 01 02 ... (len - 1).
        let expected: [Int: UInt64] = [
            0: 0x726f_db47_dd0e_0e31, 7: 0xab02_00f5_8b01_d137, 8: 0x93f5_f579_9a93_2462,
            15: 0xa129_ca61_49be_45e5, 16: 0x3f2a_cc7f_57c2_9bdb,
        ]
        for (length, value) in expected {
            var bytewise = SipHasher24(k0: referenceKey.k0, k1: referenceKey.k1)
            bytewise.combine(bytes: (0..<length).map { UInt8($0) })
            #expect(bytewise.finalize() == value, "length \(length)")
        }
        var wordwise = SipHasher24(k0: referenceKey.k0, k1: referenceKey.k1)
        wordwise.combine(0x0706_0504_0302_0100)
        wordwise.combine(0x0f0e_0d0c_0b0a_0908)
        #expect(wordwise.finalize() == 0x3f2a_cc7f_57c2_9bdb)

        // A word after an odd number of bytes lands at the right byte offsets.
        var mixed = SipHasher24(k0: referenceKey.k0, k1: referenceKey.k1)
        mixed.combine(bytes: [0, 1, 2])
        mixed.combine(0x0a09_0807_0605_0403)
        mixed.combine(bytes: [11, 12, 13, 14])
        #expect(mixed.finalize() == 0xa129_ca61_49be_45e5)
    }

    @Test("a connection hashes to the same golden value in every process")
    func goldenFlowHash() {
        let key = FlowKey(client: try! Endpoint(parsing: "10.77.0.1:40000"),
                          vip: try! Endpoint(parsing: "10.77.0.100:80"))
        #expect(key.hash == GoldenHashes.flow)
        #expect(key.sourceHash == GoldenHashes.source)
        #expect(StableHash.flowV4(client: 0x0A4D_0001, clientPort: 40000, vip: 0x0A4D_0064, vipPort: 80)
                == GoldenHashes.flow)
    }

    @Test("an IPv4 client hashes alike as a.b.c.d and as ::ffff:a.b.c.d")
    func mappedAddressesAgree() throws {
        let plain = FlowKey(client: try Endpoint(parsing: "10.77.0.1:40000"),
                            vip: try Endpoint(parsing: "10.77.0.100:80"))
        let mapped = FlowKey(client: try Endpoint(parsing: "[::ffff:10.77.0.1]:40000"),
                             vip: try Endpoint(parsing: "[::ffff:10.77.0.100]:80"))
        #expect(plain.hash == mapped.hash)
        #expect(plain.sourceHash == mapped.sourceHash)
    }

    @Test("every field of the 5-tuple changes the hash; only the client address changes the source hash")
    func everyFieldCounts() throws {
        let base = FlowKey(client: try Endpoint(parsing: "10.77.0.1:40000"),
                           vip: try Endpoint(parsing: "10.77.0.100:80"))
        var otherPort = base; otherPort.client.port = 40001
        var otherClient = base; otherClient.client.address = .v4(0x0A4D_0002)
        var otherVIP = base; otherVIP.vip.address = .v4(0x0A4D_0065)
        var otherVIPPort = base; otherVIPPort.vip.port = 443
        let v6 = FlowKey(client: try Endpoint(parsing: "[2001:db8::1]:40000"), vip: base.vip)
        let hashes = [base, otherPort, otherClient, otherVIP, otherVIPPort, v6].map(\.hash)
        #expect(Set(hashes).count == hashes.count)

        #expect(otherPort.sourceHash == base.sourceHash)
        #expect(otherVIP.sourceHash == base.sourceHash)
        #expect(otherClient.sourceHash != base.sourceHash)
        #expect(v6.sourceHash != base.sourceHash)
    }
}

/// Values computed once by this implementation and frozen: if one changes, every deployed
/// balancer would place connections differently from an upgraded one.
enum GoldenHashes {
    /// 10.77.0.1:40000 → 10.77.0.100:80, TCP.
    static let flow: UInt64 = 15_548_928_064_579_130_275
    /// Client 10.77.0.1.
    static let source: UInt64 = 5_787_556_080_214_051_407
}
