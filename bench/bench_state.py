#!/usr/bin/env python3
"""Memory and storage syscalls over HTTP on SQLite vs PostgreSQL, one and
two kernels (docs/postgres.md, docs/performance.md).

Setups, each with fresh state:
  sqlite-1   one kernel, state in SQLite under its data_dir (the default)
  pg-1       one kernel, state.backend postgres (AIOS_STATE_URL)
  pg-2       two kernels on the same database and storage root; the
             clients alternate between them
For each setup CLIENTS threads (one keep-alive connection per kernel each,
an agent of their own) run ROUNDS rounds of: add_memory, get_memory,
retrieve_memory (two words), storage write (1 KiB, 8 paths per agent, so
histories grow), storage read. Prints per operation p50 / p99 latency (ms)
and the throughput of all operations together (ops/s).

The PostgreSQL server is started here: initdb and pg_ctl of Debian's
postgresql (/usr/lib/postgresql/N/bin or --pg-bindir) in a temporary
directory on a free port, as the `postgres` user when run as root, with its
default durability (fsync on, synchronous_commit on), stopped at the end.

Usage: bench/bench_state.py [--bin build/aios] [--clients 8] [--rounds 50]
Nothing but the Python 3 standard library; loopback only."""
import argparse
import glob
import http.client
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def as_pg_user():
    if os.getuid() != 0:
        return None
    pw = pwd.getpwnam("postgres")

    def drop():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return drop, pw


def pg_start(bindir):
    d = tempfile.mkdtemp(prefix="aios-bench-pg-")
    u = as_pg_user()
    if u:
        os.chown(d, u[1].pw_uid, u[1].pw_gid)
    pre = u[0] if u else None
    data = os.path.join(d, "data")
    subprocess.run([bindir + "/initdb", "-D", data, "-U", "aios", "--auth=trust", "-E", "UTF8",
                    "--locale=C"], preexec_fn=pre, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    port = free_port()
    subprocess.run([bindir + "/pg_ctl", "-D", data, "-l", os.path.join(d, "server.log"), "-o",
                    "-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300" % (port, d),
                    "-w", "start"], preexec_fn=pre, check=True, stdout=subprocess.DEVNULL)
    return d, port, pre


def pg_stop(bindir, d, pre):
    subprocess.run([bindir + "/pg_ctl", "-D", os.path.join(d, "data"), "-m", "fast", "-w", "stop"],
                   preexec_fn=pre, stdout=subprocess.DEVNULL)
    shutil.rmtree(d, ignore_errors=True)


def createdb(bindir, port, name):
    subprocess.run([bindir + "/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "aios", name],
                   check=True)
    return "postgresql://aios@127.0.0.1:%d/%s" % (port, name)


def start_kernel(binary, d, cfg, url):
    os.makedirs(d, exist_ok=True)
    ready = os.path.join(d, "ready")
    env = dict(os.environ)
    env.pop("AIOS_STATE_URL", None)
    if url:
        env["AIOS_STATE_URL"] = url
    log = open(os.path.join(d, "kernel.log"), "ab")
    p = subprocess.Popen([binary, "serve", "--port", "0", "--data-dir", d, "--ready-file", ready,
                          "--config", cfg], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                         env=env)
    for _ in range(1200):
        if os.path.exists(ready) and os.path.getsize(ready) > 0:
            break
        if p.poll() is not None:
            raise SystemExit("the kernel exited at start; see %s/kernel.log" % d)
        time.sleep(0.05)
    port = int(open(ready).read().split()[0])
    token = open(os.path.join(d, "admin.token")).read().strip()
    return p, port, token


OPS = ["add_memory", "get_memory", "retrieve_memory", "write", "read"]
WORDS = ["harbour", "lantern", "copper", "meadow", "signal", "orchard", "glacier", "violet"]


def client(kernels, ci, rounds, lat, errors):
    conns = [(http.client.HTTPConnection("127.0.0.1", port, timeout=60), tok)
             for port, tok in kernels]
    agent = "bench%d" % ci

    def q(k, qtype, op, params):
        conn, tok = conns[k % len(conns)]
        body = json.dumps({"agent_name": agent, "query_type": qtype,
                           "query_data": {"operation_type": op, "params": params}})
        t0 = time.perf_counter()
        conn.request("POST", "/query", body, {"Authorization": "Bearer " + tok,
                                              "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        lat[op].append(time.perf_counter() - t0)
        if r.status != 200:
            errors.append((op, r.status))
    for i in range(rounds):
        w1, w2 = WORDS[(ci + i) % 8], WORDS[(ci * 3 + i) % 8]
        q(i, "memory", "add_memory", {"content": "note %d of %s about the %s and the %s" %
                                      (i, agent, w1, w2), "memory_id": "m%d" % i})
        q(i + 1, "memory", "get_memory", {"memory_id": "m%d" % i})
        q(i, "memory", "retrieve_memory", {"content": "%s %s" % (w1, w2), "k": 5})
        text = ("%s %s line %d " % (w1, w2, i)) * 40
        q(i + 1, "storage", "write", {"file_path": "f%d.txt" % (i % 8), "content": text[:1024]})
        q(i, "storage", "read", {"file_path": "f%d.txt" % (i % 8)})


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else 0


def run(name, binary, n_kernels, url, clients, rounds):
    d = tempfile.mkdtemp(prefix="aios-bench-state-")
    cfg = os.path.join(d, "config.yaml")
    with open(cfg, "w") as f:
        f.write("storage:\n  root_dir: %s/root\nmemory:\n  db_path: %s/memory.db\n" % (d, d))
    procs, kernels = [], []
    try:
        for k in range(n_kernels):
            p, port, tok = start_kernel(binary, os.path.join(d, "k%d" % k), cfg, url)
            procs.append(p)
            kernels.append((port, tok))
        lat = {op: [] for op in OPS}
        errors = []
        th = [threading.Thread(target=client, args=(kernels, c, rounds, lat, errors))
              for c in range(clients)]
        t0 = time.perf_counter()
        for t in th:
            t.start()
        for t in th:
            t.join()
        wall = time.perf_counter() - t0
        total = sum(len(v) for v in lat.values())
        row = "| %s | " % name + " | ".join("%.1f / %.1f" % (pct(lat[op], 0.5), pct(lat[op], 0.99))
                                           for op in OPS)
        print(row + " | %.0f |%s" % (total / wall, " errors: %d" % len(errors) if errors else ""),
              flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/aios")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--pg-bindir", default=None)
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    bindir = a.pg_bindir or sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    print("| setup | " + " | ".join("%s p50 / p99 ms" % op for op in OPS) + " | ops/s |")
    print("|---" * (len(OPS) + 2) + "|")
    run("sqlite, 1 kernel", binary, 1, None, a.clients, a.rounds)
    d, port, pre = pg_start(bindir)
    try:
        run("postgres, 1 kernel", binary, 1, createdb(bindir, port, "bench1"), a.clients, a.rounds)
        run("postgres, 2 kernels", binary, 2, createdb(bindir, port, "bench2"), a.clients,
            a.rounds)
    finally:
        pg_stop(bindir, d, pre)


if __name__ == "__main__":
    main()
