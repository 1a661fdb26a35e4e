/// Small Python programs the lab tests run inside namespaces (python3 is part of the lab's
/// dependencies). Each is bounded in count and time.
enum Scripts {
    /// argv: host port. Serves one line "kernel <port>" to each of up to 5 connections.
    static let tcpServer = """
        import socket, sys
        fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
        s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16); s.settimeout(30)
        for _ in range(5):
            c, a = s.accept(); c.sendall(b'kernel ' + sys.argv[2].encode()); c.close()
        """

    /// argv: host port. Connects (1 s timeout) and prints what the server sent, or "timeout".
    static let tcpClient = """
        import socket, sys
        fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
        s = socket.socket(fam); s.settimeout(1.0)
        try:
            s.connect((sys.argv[1], int(sys.argv[2]))); print(s.recv(100).decode())
        except (socket.timeout, OSError) as e:
            print('timeout' if isinstance(e, socket.timeout) else 'error ' + str(e))
        """

    /// argv: host. One ICMP echo (raw socket) with a 2 s timeout; prints "reply" or "none".
    static let ping = """
        import socket, struct, sys, time
        def csum(b):
            if len(b) % 2: b += b'\\0'
            s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
            return ~s & 0xffff
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(2)
        hdr = struct.pack('!BBHHH', 8, 0, 0, 0x4242, 1) + b'convey'
        pkt = struct.pack('!BBHHH', 8, 0, csum(hdr), 0x4242, 1) + b'convey'
        s.sendto(pkt, (sys.argv[1], 0))
        end = time.time() + 2
        while time.time() < end:
            try: data, a = s.recvfrom(200)
            except socket.timeout: break
            if a[0] == sys.argv[1] and data[20] == 0: print('reply'); sys.exit(0)
        print('none')
        """

    /// argv: host port payload. Sends one UDP datagram from port 40000 and prints the reply as
    /// "<source host> <source port> <payload>", or "none" after 2 s.
    static let udpEcho = """
        import socket, sys
        fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(2); s.bind(('', 40000))
        s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
        try:
            d, a = s.recvfrom(2000); print(a[0], a[1], d.decode())
        except socket.timeout:
            print('none')
        """

    /// argv: host port count seconds. Sends up to `count` 64-byte UDP datagrams within
    /// `seconds` (paced in bursts of 64), then exits.
    static let udpFlood = """
        import socket, sys, time
        fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM); s.bind(('', 40001))
        dst = (sys.argv[1], int(sys.argv[2])); n = int(sys.argv[3]); end = time.time() + float(sys.argv[4])
        sent = 0
        while sent < n and time.time() < end:
            for _ in range(64):
                s.sendto(b'x' * 22, dst); sent += 1
            time.sleep(0.001)
        """

    /// argv: dst-mac src-mac kind count. Sends `count` crafted frames of one kind from veth0
    /// with an AF_PACKET socket; prints the frame length.
    static let badFrames = """
        import socket, struct, sys
        dst = bytes.fromhex(sys.argv[1].replace(':', '')); src = bytes.fromhex(sys.argv[2].replace(':', ''))
        kind = sys.argv[3]; count = int(sys.argv[4])
        vip4 = socket.inet_aton('10.77.0.100'); cli4 = socket.inet_aton('10.77.0.10')
        vip6 = socket.inet_pton(socket.AF_INET6, 'fd77::100'); cli6 = socket.inet_pton(socket.AF_INET6, 'fd77::10')
        def csum(b):
            if len(b) % 2: b += b'\\0'
            s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
            return ~s & 0xffff
        syn = struct.pack('!HHIIBBHHH', 40000, 80, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
        def ip4(payload, ihl=5, frag=0, options=b'', proto=6, total=None):
            tl = total if total is not None else 20 + len(options) + len(payload)
            h = struct.pack('!BBHHHBBH4s4s', 0x40 | ihl, 0, tl, 1, frag, 64, proto, 0, cli4, vip4) + options
            h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
            return h + payload
        eth4 = dst + src + b'\\x08\\x00'
        eth6 = dst + src + b'\\x86\\xdd'
        if kind == 'runt':
            frame = dst + src
        elif kind == 'short-ip4':
            frame = eth4 + ip4(syn)[:10]
        elif kind == 'bad-ihl':
            frame = eth4 + ip4(syn, ihl=3)
        elif kind == 'long-ihl':
            frame = eth4 + ip4(b'', ihl=15)
        elif kind == 'short-tcp':
            frame = eth4 + ip4(syn[:2])
        elif kind == 'options':
            frame = eth4 + ip4(syn, ihl=6, options=b'\\x01\\x01\\x01\\x00')
        elif kind == 'fragment':
            frame = eth4 + ip4(syn, frag=0x2000)
        elif kind == 'later-fragment':
            frame = eth4 + ip4(syn, frag=0x0010)
        elif kind == 'vlan':
            frame = dst + src + b'\\x81\\x00' + struct.pack('!H', 7) + b'\\x08\\x00' + ip4(syn)
        elif kind == 'ext6':
            hbh = struct.pack('!BB', 6, 0) + b'\\x01\\x04\\0\\0\\0\\0'
            frame = eth6 + struct.pack('!IHBB', 0x60000000, len(hbh) + len(syn), 0, 64) + cli6 + vip6 + hbh + syn
        elif kind == 'short-ip6':
            frame = eth6 + b'\\x60\\0\\0\\0\\0\\x14'
        elif kind == 'syn4':
            frame = eth4 + ip4(syn)
        elif kind == 'broadcast-syn4':
            frame = b'\\xff' * 6 + src + b'\\x08\\x00' + ip4(syn)
        else:
            sys.exit('unknown kind ' + kind)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(('veth0', 0))
        for _ in range(count):
            s.send(frame)
        print(len(frame))
        """
}
