/// SipHash-2-4 (Aumasson and Bernstein) with a caller-chosen key, over a stream of 64-bit words
/// and bytes.
///
/// Why not Swift's `Hasher`: it is seeded randomly per process, so two balancers (or one
/// balancer before and after a restart) would place the same connection on different servers.
/// Placement must be a pure function of the configuration and the packet, which is what lets
/// ECMP spread clients over several Convey instances in DSR mode without breaking flows. This
/// hasher is that pure function: same key + same input = same value, on every machine.
///
/// Input is a byte stream. `combine(_: UInt64)` appends the word's 8 bytes little-endian, so a
/// word-aligned stream costs one compression per word and needs no buffer. The result equals
/// the reference SipHash-2-4 of the same bytes (checked against the published test vectors).
/// The type is a plain value: no allocation, no reference counting, usable on any hot path.
public struct SipHasher24: Sendable {
    @usableFromInline var v0: UInt64
    @usableFromInline var v1: UInt64
    @usableFromInline var v2: UInt64
    @usableFromInline var v3: UInt64
    /// Bytes not yet compressed (fewer than 8), packed little-endian.
    @usableFromInline var tail: UInt64 = 0
    /// Total bytes fed; its low 8 bits go into the final block as SipHash specifies.
    @usableFromInline var byteCount: UInt64 = 0

    /// A hasher keyed by the 128-bit key `(k0, k1)`; `k0` holds key bytes 0-7 little-endian.
    @inlinable
    public init(k0: UInt64, k1: UInt64) {
        v0 = k0 ^ 0x736f_6d65_7073_6575
        v1 = k1 ^ 0x646f_7261_6e64_6f6d
        v2 = k0 ^ 0x6c79_6765_6e65_7261
        v3 = k1 ^ 0x7465_6462_7974_6573
    }

    @inlinable @inline(__always)
    mutating func round() {
        v0 &+= v1; v1 = v1.rotl(13); v1 ^= v0; v0 = v0.rotl(32)
        v2 &+= v3; v3 = v3.rotl(16); v3 ^= v2
        v0 &+= v3; v3 = v3.rotl(21); v3 ^= v0
        v2 &+= v1; v1 = v1.rotl(17); v1 ^= v2; v2 = v2.rotl(32)
    }

    @inlinable @inline(__always)
    mutating func compress(_ m: UInt64) {
        v3 ^= m
        round()
        round()
        v0 ^= m
    }

    /// Appends the 8 bytes of `word`, least significant first.
    @inlinable @inline(__always)
    public mutating func combine(_ word: UInt64) {
        let shift = (byteCount & 7) * 8
        byteCount &+= 8
        if shift == 0 {
            compress(word)
        } else {
            compress(tail | word << shift)
            tail = word >> (64 - shift)
        }
    }

    /// Appends one byte.
    @inlinable
    public mutating func combine(byte: UInt8) {
        tail |= UInt64(byte) << ((byteCount & 7) * 8)
        byteCount &+= 1
        if byteCount & 7 == 0 {
            compress(tail)
            tail = 0
        }
    }

    /// Appends every byte of `bytes` in order.
    @inlinable
    public mutating func combine<S: Sequence>(bytes: S) where S.Element == UInt8 {
        for b in bytes { combine(byte: b) }
    }

    /// The 64-bit hash of everything appended so far.
    @inlinable
    public consuming func finalize() -> UInt64 {
        compress(tail | (byteCount & 0xff) << 56)
        v2 ^= 0xff
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}

extension UInt64 {
    @inlinable @inline(__always)
    func rotl(_ n: UInt64) -> UInt64 { self << n | self >> (64 &- n) }
}

/// The hashes that decide placement: fixed keys, a fixed encoding of each input, so every
/// Convey instance computes the same values for the same connection.
///
/// Changing a key or an encoding below moves almost every flow to another server on upgrade:
/// treat them as part of the wire contract. The encodings feed whole 64-bit words (no byte
/// array is built); an address is first widened to 128 bits, IPv4 as the IPv4-mapped IPv6
/// address `::ffff:a.b.c.d`, so an IPv4 client is placed alike whichever form it arrives in.
public enum StableHash {
    /// Key of the connection hashes (`flow`, `source`): the ASCII of "convey-f" and "lowkey\0\0"
    /// read as little-endian words. Computed properties so inlined callers see constants.
    @inlinable public static var flowKey: (k0: UInt64, k1: UInt64) {
        (0x662d_7965_766e_6f63, 0x0000_7965_6b77_6f6c)
    }
    /// Key of the backend-name hash Maglev derives a backend's offset from ("maglev-o", "offset").
    @inlinable public static var maglevOffsetKey: (k0: UInt64, k1: UInt64) {
        (0x6f2d_7665_6c67_616d, 0x0000_7465_7366_666f)
    }
    /// Key of the backend-name hash Maglev derives a backend's skip from ("maglev-s", "skip"):
    /// independent of the offset hash, as the Maglev paper requires.
    @inlinable public static var maglevSkipKey: (k0: UInt64, k1: UInt64) {
        (0x732d_7665_6c67_616d, 0x0000_0000_7069_6b73)
    }

    /// Protocol number mixed into every connection hash (TCP; Convey balances TCP only).
    @inlinable public static var tcp: UInt64 { 6 }

    /// The high and low 64 bits of `address` in IPv6 form (IPv4 becomes `::ffff:a.b.c.d`).
    @inlinable @inline(__always)
    public static func widened(_ address: IPAddress) -> (hi: UInt64, lo: UInt64) {
        switch address {
        case .v4(let a): return (0, 0x0000_ffff_0000_0000 | UInt64(a))
        case .v6(let hi, let lo): return (hi, lo)
        }
    }

    /// The 5-tuple hash of a TCP connection from `client` to `vip`: SipHash-2-4 under
    /// `flowKey` of the words [client hi, client lo, vip hi, vip lo,
    /// clientPort << 32 | vipPort << 16 | 6].
    @inlinable
    public static func flow(clientHi: UInt64, clientLo: UInt64, clientPort: UInt16,
                            vipHi: UInt64, vipLo: UInt64, vipPort: UInt16) -> UInt64 {
        var h = SipHasher24(k0: flowKey.k0, k1: flowKey.k1)
        h.combine(clientHi)
        h.combine(clientLo)
        h.combine(vipHi)
        h.combine(vipLo)
        h.combine(UInt64(clientPort) << 32 | UInt64(vipPort) << 16 | tcp)
        return h.finalize()
    }

    /// `flow` for IPv4 addresses in host byte order, as packet code reads them.
    @inlinable
    public static func flowV4(client: UInt32, clientPort: UInt16, vip: UInt32, vipPort: UInt16) -> UInt64 {
        flow(clientHi: 0, clientLo: 0x0000_ffff_0000_0000 | UInt64(client), clientPort: clientPort,
             vipHi: 0, vipLo: 0x0000_ffff_0000_0000 | UInt64(vip), vipPort: vipPort)
    }

    /// The client-address hash of the `source` algorithm: SipHash-2-4 under `flowKey` of the
    /// words [client hi, client lo]. Ports and VIP are left out so one client keeps one server
    /// across all its connections.
    @inlinable
    public static func source(clientHi: UInt64, clientLo: UInt64) -> UInt64 {
        var h = SipHasher24(k0: flowKey.k0, k1: flowKey.k1)
        h.combine(clientHi)
        h.combine(clientLo)
        return h.finalize()
    }

    /// SipHash-2-4 of the UTF-8 bytes of `text` under `key`: names backends in the Maglev table.
    public static func text(_ text: String, key: (k0: UInt64, k1: UInt64)) -> UInt64 {
        var h = SipHasher24(k0: key.k0, k1: key.k1)
        h.combine(bytes: text.utf8)
        return h.finalize()
    }
}
