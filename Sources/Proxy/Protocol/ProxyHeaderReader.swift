import Balancer

/// Reads the PROXY protocol header (HAProxy's spec, versions 1 and 2) that a balancer in front
/// of convey sends first on each connection (`accept_proxy_protocol`): the real client's
/// address, which convey then uses as the client's (allow/deny, scheduling, logs, `/flows`,
/// and the header it sends on to its servers).
///
/// A pure function over the bytes received so far (peeked, not consumed): the caller consumes
/// exactly `length` bytes once a header is complete, leaving the client's own bytes queued.
enum ProxyHeaderReader {
    /// The longest header taken: v1 is at most 107 bytes; v2 carries TLVs after the addresses
    /// (a cloud balancer's endpoint ids, TLS facts), which are skipped, up to this.
    static let maximumLength = 4096

    enum Result: Equatable {
        /// Too few bytes yet to tell: read again when more arrive.
        case incomplete
        /// A whole header of `length` bytes. `source`: the client it names, `destination`: the
        /// address that client connected to (at the balancer); both nil for v2 `LOCAL`, v1
        /// `UNKNOWN` or an address family other than TCP over IPv4 or IPv6 (the connection's
        /// own ends then stand, as the spec says).
        case header(length: Int, source: Endpoint?, destination: Endpoint?)
        /// Not a header this reads: the reason, for the log.
        case invalid(String)
    }

    private static let v1Prefix = Array("PROXY ".utf8)

    static func read(_ bytes: UnsafeRawBufferPointer) -> Result {
        let signature = ProxyProtocolHeader.v2Signature
        if startsLike(bytes, signature) {
            return bytes.count < signature.count ? .incomplete : readV2(bytes)
        }
        if startsLike(bytes, v1Prefix) {
            return bytes.count < v1Prefix.count ? .incomplete : readV1(bytes)
        }
        return .invalid("no PROXY protocol header (the first bytes are neither \"PROXY \" nor the v2 signature)")
    }

    /// Whether the bytes so far agree with `prefix` (as far as either goes).
    private static func startsLike(_ bytes: UnsafeRawBufferPointer, _ prefix: [UInt8]) -> Bool {
        for i in 0..<min(bytes.count, prefix.count) where bytes[i] != prefix[i] { return false }
        return true
    }

    /// `PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT\r\n`, or `PROXY UNKNOWN...\r\n`.
    private static func readV1(_ bytes: UnsafeRawBufferPointer) -> Result {
        let longest = 107
        var end = -1
        for i in 1..<min(bytes.count, longest) where bytes[i - 1] == 0x0D && bytes[i] == 0x0A {
            end = i + 1
            break
        }
        guard end > 0 else {
            return bytes.count >= longest ? .invalid("a v1 header without its CRLF in \(longest) bytes") : .incomplete
        }
        let line = String(decoding: bytes[v1Prefix.count..<(end - 2)], as: UTF8.self)
        let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        if fields.first == "UNKNOWN" { return .header(length: end, source: nil, destination: nil) }
        guard fields.count == 5, fields[0] == "TCP4" || fields[0] == "TCP6" else {
            return .invalid("a v1 header that is not 'TCP4|TCP6 SOURCE DESTINATION SPORT DPORT': '\(printable(line.prefix(60)))'")
        }
        // The family is the text's: TCP6 may carry IPv4-mapped addresses (a dual-stack
        // listener's IPv4 clients), which are the IPv4 addresses (see `IPAddress`).
        let six = fields[0] == "TCP6"
        guard fields[1].contains(":") == six, fields[2].contains(":") == six,
              let source = IPAddress(fields[1]), let destination = IPAddress(fields[2]) else {
            return .invalid("a v1 header whose addresses are not \(fields[0]) addresses: '\(printable(line.prefix(80)))'")
        }
        guard let sourcePort = decimalPort(fields[3]), let destinationPort = decimalPort(fields[4]) else {
            return .invalid("a v1 header whose ports are not 0-65535: '\(printable(line.prefix(80)))'")
        }
        return .header(length: end, source: Endpoint(address: source, port: sourcePort),
                       destination: Endpoint(address: destination, port: destinationPort))
    }

    /// `text` with every byte outside printable ASCII as `\xNN`: header bytes are the
    /// client's, and go into log lines.
    static func printable(_ text: Substring) -> String {
        var out = ""
        for byte in text.utf8 {
            if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "\\x" + (byte < 0x10 ? "0" : "") + String(byte, radix: 16)
            }
        }
        return out
    }

    /// A port as v1 writes it: 1-5 ASCII digits, at most 65535.
    private static func decimalPort(_ text: String) -> UInt16? {
        guard (1...5).contains(text.utf8.count), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return UInt16(text)
    }

    /// The signature, version and command, family and protocol, a 16-bit length, the addresses.
    private static func readV2(_ bytes: UnsafeRawBufferPointer) -> Result {
        guard bytes.count >= 16 else { return .incomplete }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid("a v2 header of version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("a v2 header with command \(command) (neither LOCAL nor PROXY)") }
        let length = 16 + (Int(bytes[14]) << 8 | Int(bytes[15]))
        guard length <= maximumLength else {
            return .invalid("a v2 header of \(length) bytes, more than the \(maximumLength) taken")
        }
        guard bytes.count >= length else { return .incomplete }
        // LOCAL: the balancer's own connection (its health check): the peer is the client.
        guard command == 1 else { return .header(length: length, source: nil, destination: nil) }
        let block = bytes[16..<length]
        func byte(_ offset: Int) -> UInt8 { block[block.startIndex + offset] }
        func port(at offset: Int) -> UInt16 { UInt16(byte(offset)) << 8 | UInt16(byte(offset + 1)) }
        func ipv6(at offset: Int) -> IPAddress {
            IPAddress(ipv6NetworkBytes: (0..<16).map { byte(offset + $0) }).unmapped
        }
        switch bytes[13] {
        case 0x11:  // TCP over IPv4
            guard block.count >= 12 else { return .invalid("a v2 TCP4 header with a \(block.count)-byte address block") }
            func ipv4(at offset: Int) -> IPAddress { .v4((0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(byte(offset + $1)) }) }
            return .header(length: length, source: Endpoint(address: ipv4(at: 0), port: port(at: 8)),
                           destination: Endpoint(address: ipv4(at: 4), port: port(at: 10)))
        case 0x21:  // TCP over IPv6
            guard block.count >= 36 else { return .invalid("a v2 TCP6 header with a \(block.count)-byte address block") }
            return .header(length: length, source: Endpoint(address: ipv6(at: 0), port: port(at: 32)),
                           destination: Endpoint(address: ipv6(at: 16), port: port(at: 34)))
        default:
            // Unspecified, UDP, Unix sockets: no TCP address to take, the connection's own ends
            // stand (as HAProxy does for what it does not support).
            return .header(length: length, source: nil, destination: nil)
        }
    }
}
