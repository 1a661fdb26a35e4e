/// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
///
/// Forwarders never recompute a checksum over a packet: when they rewrite an address or a port
/// they adjust the stored checksum by the difference (RFC 1624, equation 3:
/// `HC' = ~(~HC + ~m + m')` in ones'-complement arithmetic), which costs a few additions
/// whatever the packet's length. The full computation exists for tests and diagnostics.
public enum Checksum {
    /// The ones'-complement sum of `bytes` taken as big-endian 16-bit words (an odd last byte
    /// is padded with zero), added to `initial`, not yet folded or complemented.
    public static func sum(_ bytes: UnsafeRawBufferPointer, initial: UInt64 = 0) -> UInt64 {
        var total = initial
        var i = 0
        let n = bytes.count
        while i + 1 < n {
            total &+= UInt64(bytes[i]) << 8 | UInt64(bytes[i + 1])
            i += 2
        }
        if i < n { total &+= UInt64(bytes[i]) << 8 }
        return total
    }

    /// Folds a wide ones'-complement sum to 16 bits (end-around carry).
    @inlinable @inline(__always)
    public static func fold(_ sum: UInt64) -> UInt16 {
        var s = (sum & 0xffff_ffff) &+ (sum >> 32)
        s = (s & 0xffff) &+ (s >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        return UInt16(truncatingIfNeeded: s)
    }

    /// The checksum field value for data whose ones'-complement sum is `sum`.
    @inlinable @inline(__always)
    public static func finish(_ sum: UInt64) -> UInt16 { ~fold(sum) }

    /// The sum of a 32-bit value as two 16-bit words.
    @inlinable @inline(__always)
    public static func words(_ v: UInt32) -> UInt64 { UInt64(v >> 16) &+ UInt64(v & 0xffff) }

    /// The sum of a 64-bit value as four 16-bit words.
    @inlinable @inline(__always)
    public static func words(_ v: UInt64) -> UInt64 {
        (v >> 48) &+ (v >> 32 & 0xffff) &+ (v >> 16 & 0xffff) &+ (v & 0xffff)
    }

    /// RFC 1624 eq. 3 given the precomputed `~old + new` difference sum (`delta`): the new checksum.
    @inlinable @inline(__always)
    public static func adjust(_ checksum: UInt16, delta: UInt64) -> UInt16 {
        ~fold(UInt64(~checksum) &+ delta)
    }

    /// The difference term for one 16-bit field changing from `old` to `new`.
    @inlinable @inline(__always)
    public static func delta(_ old: UInt16, _ new: UInt16) -> UInt64 { UInt64(~old) &+ UInt64(new) }

    /// The difference term for one 32-bit field (an IPv4 address) changing from `old` to `new`.
    @inlinable @inline(__always)
    public static func delta(_ old: UInt32, _ new: UInt32) -> UInt64 { words(~old) &+ words(new) }

    /// The difference term for one 64-bit field (half an IPv6 address) changing.
    @inlinable @inline(__always)
    public static func delta(_ old: UInt64, _ new: UInt64) -> UInt64 { words(~old) &+ words(new) }

    /// A difference term folded to 16 bits and put in memory (wire) order, for `adjustStored`:
    /// computed once per flow, since a flow's rewrite changes the same fields to the same
    /// values in every packet.
    @inlinable @inline(__always)
    public static func storedDelta(_ delta: UInt64) -> UInt16 { fold(delta).bigEndian }

    /// RFC 1624 eq. 3 on a checksum as it lies in memory (`stored`, loaded without swapping)
    /// with a `storedDelta`: the new checksum, in memory order. Ones'-complement sums commute
    /// with byte swapping (RFC 1071 §2B), so neither value is swapped.
    ///
    /// Eq. 3, `~(~stored + delta)` with one end-around carry, equals `stored - delta` when
    /// `stored >= delta` and `stored - delta + 0xffff` otherwise (the same value, including
    /// which of the two zeros it gives), which costs two instructions fewer per checksum: the
    /// borrow shows as the high half of the 32-bit difference, 0xffff, and adding it
    /// subtracts one in the low half.
    @inlinable @inline(__always)
    public static func adjustStored(_ stored: UInt16, storedDelta: UInt16) -> UInt16 {
        let d = UInt32(stored) &- UInt32(storedDelta)
        return UInt16(truncatingIfNeeded: d &+ (d >> 16))
    }

    /// The checksum after one 16-bit field changed from `old` to `new`.
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        adjust(checksum, delta: delta(old, new))
    }

    /// The checksum after one 32-bit field changed from `old` to `new`.
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        adjust(checksum, delta: delta(old, new))
    }
}
