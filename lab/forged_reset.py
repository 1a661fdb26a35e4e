#!/usr/bin/env python3
"""A connection that outlives forged resets: run as root in the lab's client namespace.

    lab/forged_reset.py VIP PORT IDLE_SECONDS

Connects to VIP:PORT (a lab backend behind convey), sends "ECHO\\nhold" and reads the echo,
learning its own next sequence number from the segments it sends (an AF_PACKET socket sees
them leave). Then it forges, from its own address and port, a RST, a RST+ACK and a FIN+ACK
whose sequence numbers are 2^30 away from the connection's (what an off-path attacker who
knows the addresses and ports would send), stays silent IDLE_SECONDS, and sends "again":
prints "ok" if the echo comes back, else fails naming what happened.
"""
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def forged(src, dst, sport, dport, seq, flags):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + tcp


def next_sequence(sniffer, src, sport, dst, dport, deadline):
    """The sequence number after the last segment seen leaving src:sport for dst:dport."""
    found = None
    sniffer.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            frame = sniffer.recv(65535)
        except socket.timeout:
            if found is not None:
                return found
            continue
        if len(frame) < 54 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6 or ip[12:16] != socket.inet_aton(src) or ip[16:20] != socket.inet_aton(dst):
            continue
        tcp = ip[ihl:]
        if struct.unpack("!HH", tcp[0:4]) != (sport, dport):
            continue
        seq = struct.unpack("!I", tcp[4:8])[0]
        payload = struct.unpack("!H", ip[2:4])[0] - ihl - (tcp[12] >> 4) * 4
        found = (seq + payload + (1 if tcp[13] & 0x03 else 0)) & 0xFFFFFFFF
    if found is None:
        sys.exit("forged_reset: saw none of the connection's segments leave")
    return found


def read_exactly(conn, count, what):
    """`count` bytes from `conn`, or exit naming `what` if it closes first."""
    data = b""
    while len(data) < count:
        chunk = conn.recv(64)
        if not chunk:
            sys.exit("forged_reset: the connection was closed %s" % what)
        data += chunk
    return data


def main():
    vip, port, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    conn = socket.create_connection((vip, port), timeout=5)
    src, sport = conn.getsockname()
    conn.sendall(b"ECHO\nhold")
    read_exactly(conn, 4, "before its echo")
    nxt = next_sequence(sniffer, src, sport, vip, port, time.monotonic() + 3)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for flags in (0x04, 0x14, 0x11):  # RST, RST+ACK, FIN+ACK
        raw.sendto(forged(src, vip, sport, port, (nxt + (1 << 30)) & 0xFFFFFFFF, flags), (vip, 0))
    time.sleep(idle)
    try:
        conn.sendall(b"again")
        echo = read_exactly(conn, 5, "after the forged segments")
    except OSError as e:
        sys.exit("forged_reset: the connection failed after the forged segments: %s" % e)
    if echo != b"again":
        sys.exit("forged_reset: unexpected echo %r" % echo)
    conn.close()
    print("ok")


if __name__ == "__main__":
    main()
