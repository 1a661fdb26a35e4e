import Balancer

/// The PROXY protocol header (HAProxy's spec, versions 1 and 2) that tells a server the real
/// client address of a proxied TCP connection, since the server itself sees the proxy's.
///
/// Sent once, as the first bytes on the server connection, before any client byte.
public enum ProxyProtocolHeader {
    /// The longest header this encoder produces (v1 with two full IPv6 addresses is 104 bytes;
    /// v2 for IPv6 is 52).
    public static let maximumLength = 108

    /// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// The header announcing a connection from `source` to `destination` (the address the
    /// client connected to), or an empty array for `.none`.
    ///
    /// Both endpoints must be of one family (listeners are bound `IPV6_V6ONLY`, so an accepted
    /// connection's two ends always are); otherwise v1 says `UNKNOWN` and v2 `LOCAL`, which the
    /// spec defines for "the proxy cannot tell", and the server then uses the real peer.
    public static func encode(_ version: ProxyProtocolVersion, source: Endpoint, destination: Endpoint) -> [UInt8] {
        let sameFamily = source.address.isIPv4 == destination.address.isIPv4
        switch version {
        case .none:
            return []
        case .v1:
            guard sameFamily else { return Array("PROXY UNKNOWN\r\n".utf8) }
            let family = source.address.isIPv4 ? "TCP4" : "TCP6"
            let line = "PROXY \(family) \(source.address) \(destination.address) \(source.port) \(destination.port)\r\n"
            return Array(line.utf8)
        case .v2:
            var out = v2Signature
            guard sameFamily else {
                out += [0x20, 0x00, 0x00, 0x00]  // version 2, LOCAL; no address block
                return out
            }
            let ipv4 = source.address.isIPv4
            let addressLength: UInt16 = ipv4 ? 12 : 36
            out.append(0x21)                      // version 2, PROXY command
            out.append(ipv4 ? 0x11 : 0x21)        // AF_INET / AF_INET6, STREAM
            out.append(UInt8(addressLength >> 8))
            out.append(UInt8(addressLength & 0xFF))
            out += source.address.networkBytes
            out += destination.address.networkBytes
            out += [UInt8(source.port >> 8), UInt8(source.port & 0xFF)]
            out += [UInt8(destination.port >> 8), UInt8(destination.port & 0xFF)]
            return out
        }
    }
}
