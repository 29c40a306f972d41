#!/usr/bin/env python3
"""HTTP front-end throughput: C keep-alive clients (threads) each send R
GET /status requests to a running kernel; prints requests/s and latency
p50/p99. The engine is not involved, so this measures libmicrohttpd's pool
and our request path (routing, access gate, JSON).
Usage: bench/bench_http.py PORT TOKEN_FILE [CLIENTS=64] [REQUESTS=150]
Start the kernel first, e.g.
  d=$(mktemp -d); build/aios serve --port 0 --data-dir $d --ready-file $d/ready &
  (the port is in $d/ready, the admin token in $d/admin.token)"""
import http.client
import sys
import threading
import time


def main():
    port = int(sys.argv[1])
    token = open(sys.argv[2]).read().strip()
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    per = int(sys.argv[4]) if len(sys.argv) > 4 else 150
    lat, lock = [], threading.Lock()

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port)
        mine = []
        for _ in range(per):
            t = time.perf_counter()
            c.request("GET", "/status", headers={"Authorization": "Bearer " + token})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit("GET /status answered %d" % r.status)
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    th = [threading.Thread(target=worker) for _ in range(clients)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    el = time.perf_counter() - t0
    lat.sort()
    print("clients %d requests %d: %.0f req/s, p50 %.2f ms, p99 %.2f ms" % (
        clients, len(lat), len(lat) / el, lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3))


if __name__ == "__main__":
    main()
