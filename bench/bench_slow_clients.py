#!/usr/bin/env python3
"""Slow-client attack on a running kernel: N half-open connections from one
loopback address (127.0.0.3; half send nothing, half an unfinished request
head), then 20 fresh clients from another (127.0.0.2) each time one
GET /status; then how many held connections the kernel closed at once and
how long until it closed them all. All of 127.0.0.0/8 reaches a 127.0.0.1
listener, and each address is its own to the per-address limit.
Usage: bench/bench_slow_clients.py PORT TOKEN_FILE [N=3000]
Results and the exact command: docs/reliability.md, "Slow clients"."""
import resource
import socket
import sys
import time


def main():
    port = int(sys.argv[1])
    token = open(sys.argv[2]).read().strip()
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
    held = []
    t0 = time.time()
    for i in range(n):
        s = socket.socket()
        s.bind(("127.0.0.3", 0))
        s.connect(("127.0.0.1", port))
        if i % 2:
            s.send(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        held.append(s)
    print("opened %d half-open connections from 127.0.0.3 in %.1f s" % (n, time.time() - t0))

    def fresh():
        t = time.time()
        s = socket.socket()
        s.settimeout(2)
        s.bind(("127.0.0.2", 0))
        try:
            s.connect(("127.0.0.1", port))
            s.send(b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                   token.encode() + b"\r\n\r\n")
            r = s.recv(64)
        except OSError as e:
            r = repr(e).encode()
        s.close()
        return time.time() - t, r.startswith(b"HTTP/1.1 200")

    res = [fresh() for _ in range(20)]
    ok = sorted(t for t, good in res if good)
    print("fresh clients from 127.0.0.2: %d of 20 served within 2 s" % len(ok) +
          (", median %.1f ms, slowest %.1f ms" % (ok[len(ok) // 2] * 1e3, ok[-1] * 1e3) if ok else ""))

    def n_closed():
        c = 0
        for s in held:
            try:
                s.setblocking(False)
                c += s.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                c += 1
        return c

    time.sleep(0.5)
    print("closed by the kernel at once: %d" % n_closed())
    t0 = time.time()
    while n_closed() < n and time.time() - t0 < 30:
        time.sleep(0.5)
    c = n_closed()
    if c == n:
        print("all %d closed %.1f s later" % (n, time.time() - t0))
    else:
        print("%d of %d still open after 30 s" % (n - c, n))


if __name__ == "__main__":
    main()
