/// Decoding of the BPF objects that the BPFEmbed plugin compiled into this module
/// (`steerBPFObject`, generated from `steer.bpf.c` during the build).
enum EmbeddedBPFObject {
    /// The steering program's ELF object bytes.
    static var steer: [UInt8] { bytes(steerBPFObject) }

    /// Hexadecimal text → bytes (the generator writes lowercase digit pairs only).
    static func bytes(_ hex: StaticString) -> [UInt8] {
        hex.withUTF8Buffer { text in
            var out = [UInt8]()
            out.reserveCapacity(text.count / 2)
            var i = 0
            while i + 1 < text.count {
                out.append(nibble(text[i]) << 4 | nibble(text[i + 1]))
                i += 2
            }
            return out
        }
    }

    private static func nibble(_ c: UInt8) -> UInt8 {
        c >= UInt8(ascii: "a") ? c - UInt8(ascii: "a") + 10 : c - UInt8(ascii: "0")
    }
}
