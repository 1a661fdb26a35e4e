#!/usr/bin/env python3
"""A lab backend: a small threaded TCP server for tests and demos, run inside a backend namespace.

    lab/backend.py NAME [PORT]        (default port 80; listens on 0.0.0.0 and ::)

Each connection sends one request line (after a PROXY protocol v1 line, if it opens with one:
its client is then the one the line names, as behind a proxy sending `proxy_protocol = "v1"`)
and gets:
  WHO\\n       -> "NAME CLIENT_IP CLIENT_PORT\\n", then close (who answered, whom it saw)
  ECHO\\n      -> every following byte echoed back until the client's EOF, then close
                 (so a half-closed client still gets all its bytes back)
  GET ...     -> a tiny HTTP/1.0 response whose body is "hello from NAME\\n"
Anything else is answered with "ERR\\n".
"""
import socket
import socketserver
import sys


def read_line(conn, data):
    """The next line (without its LF) and the bytes after it, reading on from `data`; None at EOF."""
    while b"\n" not in data and len(data) < 4096:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line, rest


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        conn = self.request
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        got = read_line(conn, b"")
        if got is None:
            return
        line, rest = got
        peer = self.client_address
        if line.startswith(b"PROXY "):
            fields = line.rstrip(b"\r").split(b" ")
            if len(fields) == 6:
                peer = (fields[2].decode(), int(fields[4]))
            got = read_line(conn, rest)
            if got is None:
                return
            line, rest = got
        if line == b"WHO":
            conn.sendall(f"{NAME} {peer[0]} {peer[1]}\n".encode())
        elif line == b"ECHO":
            if rest:
                conn.sendall(rest)
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                conn.sendall(chunk)
        elif line.startswith(b"GET "):
            body = f"hello from {NAME}\n".encode()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        else:
            conn.sendall(b"ERR\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


class Server6(Server):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


if __name__ == "__main__":
    NAME = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 80
    import threading
    v6 = Server6(("::", port), Handler)
    threading.Thread(target=v6.serve_forever, daemon=True).start()
    Server(("0.0.0.0", port), Handler).serve_forever()
