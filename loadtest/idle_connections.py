#!/usr/bin/env python3
"""Memory of idle keep-alive connections: opens N client connections to a
running sluice, sends one GET /health on each (so each has served a request
and sits idle in keep-alive), then reports the gateway's RSS.

usage: idle_connections.py PID HOST:PORT [N]
"""
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def main():
    pid, target = int(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    host, port = target.rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kib(pid)
    conns = []
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    for i in range(n):
        s = socket.create_connection((host, int(port)))
        s.sendall(request)
        conns.append(s)
    for s in conns:
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("connection closed early")
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:64]
    time.sleep(1)
    after = rss_kib(pid)
    print(f"idle RSS before: {before / 1024:.1f} MiB")
    print(f"RSS with {n} idle keep-alive connections: {after / 1024:.1f} MiB "
          f"({(after - before) * 1024 / n:.0f} bytes per connection)")


if __name__ == "__main__":
    main()
