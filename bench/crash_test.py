#!/usr/bin/env python3
"""Crash test: SIGKILL the kernel at random moments while clients write
files and notes; after each restart every acknowledged write must be there.

Each round starts `aios serve` on one data directory (kept across rounds),
runs CLIENTS threads that each alternate a storage write (a path of their
own, new content each time) and a memory add (new content each time), kills
the kernel with SIGKILL after a random 0.3 to 2.5 s, restarts it, and
checks, for every write acknowledged (HTTP 200) in this round or any
earlier one:
  - a file reads back with the content of its last acknowledged write, or
    of the write that was in flight when the kernel died (never older, never
    anything else);
  - a note is returned by get_memory with its exact content.
Exits 1 and names what was lost if anything was.

Usage: bench/crash_test.py [--bin build/aios] [--rounds 5] [--clients 8] [--seed N]
Nothing but the Python 3 standard library; loopback only."""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time


def start(binary, d):
    ready = os.path.join(d, "ready")
    if os.path.exists(ready):
        os.unlink(ready)
    log = open(os.path.join(d, "kernel.log"), "ab")
    p = subprocess.Popen([binary, "serve", "--port", "0", "--data-dir", d, "--ready-file", ready],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    for _ in range(600):
        if os.path.exists(ready) and os.path.getsize(ready) > 0:
            break
        if p.poll() is not None:
            raise SystemExit("the kernel exited at start; see %s/kernel.log" % d)
        time.sleep(0.05)
    else:
        p.kill()
        raise SystemExit("the kernel did not come up in 30 s")
    port = int(open(ready).read().split()[0])
    token = open(os.path.join(d, "admin.token")).read().strip()
    return p, port, token


def query(conn, token, agent, qtype, op, params):
    body = json.dumps({"agent_name": agent, "query_type": qtype,
                       "query_data": {"operation_type": op, "params": params}})
    conn.request("POST", "/query", body, {"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    return r.status, (json.loads(data) if data else None)


def round_(args, binary, d, files, notes, rng, rnd):
    p, port, token = start(binary, d)
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"writes": 0, "adds": 0, "errors": 0}

    def client(c):
        agent = "crash%d" % c
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = 0
        while not stop.is_set():
            i += 1
            path = "c%d/f%d.txt" % (c, i % 4)
            content = "r%d-c%d-i%d-%08x" % (rnd, c, i, rng.getrandbits(32))
            key = (agent, path)
            with lock:
                files.setdefault(key, {"acked": None, "inflight": set()})["inflight"].add(content)
            try:
                st, _ = query(conn, token, agent, "storage", "write",
                              {"file_path": path, "content": content})
            except (OSError, http.client.HTTPException):
                return
            with lock:
                ent = files[key]
                if st == 200:
                    ent["acked"] = content
                    ent["inflight"] = set()
                    stats["writes"] += 1
                else:
                    ent["inflight"].discard(content)
                    stats["errors"] += 1
            note = "note r%d c%d i%d %08x" % (rnd, c, i, rng.getrandbits(32))
            try:
                st, j = query(conn, token, agent, "memory", "add_memory", {"content": note})
            except (OSError, http.client.HTTPException):
                return
            if st == 200:
                with lock:
                    notes.append((agent, j["response"]["memory_id"], note))
                    stats["adds"] += 1
            else:
                with lock:
                    stats["errors"] += 1

    th = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in th:
        t.start()
    delay = rng.uniform(0.3, 2.5)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    stop.set()
    for t in th:
        t.join()
    return delay, stats


def verify(binary, d, files, notes):
    p, port, token = start(binary, d)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lost = []
    try:
        for (agent, path), ent in sorted(files.items()):
            if ent["acked"] is None and not ent["inflight"]:
                continue
            st, j = query(conn, token, agent, "storage", "read", {"file_path": path})
            got = j["response"].get("response_message") if st == 200 else None
            ok = {ent["acked"]} | ent["inflight"] if ent["acked"] else ent["inflight"] | {None}
            if st != 200 and ent["acked"] is not None:
                lost.append("%s %s: read answered %d, last acknowledged %r" % (agent, path, st, ent["acked"]))
            elif st == 200 and got not in ok:
                lost.append("%s %s: read %r, expected %r" % (agent, path, got, sorted(x for x in ok if x)))
            # what is there now is the newest acknowledged state
            if st == 200:
                ent["acked"], ent["inflight"] = got, set()
        for agent, mid, note in notes:
            st, j = query(conn, token, agent, "memory", "get_memory", {"memory_id": mid})
            got = j["response"].get("content") if st == 200 else None
            if got != note:
                lost.append("%s note %s: got %r (status %d), expected %r" % (agent, mid, got, st, note))
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait()
    return lost


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/aios")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    binary = os.path.abspath(args.bin)
    d = tempfile.mkdtemp(prefix="aios-crash-")
    files, notes = {}, []
    failed = False
    try:
        for rnd in range(args.rounds):
            delay, stats = round_(args, binary, d, files, notes, rng, rnd)
            lost = verify(binary, d, files, notes)
            print("round %d: killed after %.2f s; acknowledged %d writes, %d notes (%d errors); "
                  "checked %d files, %d notes: %s" % (rnd + 1, delay, stats["writes"], stats["adds"],
                  stats["errors"], len(files), len(notes), "all there" if not lost else "%d LOST" % len(lost)))
            for x in lost[:20]:
                print("  lost: " + x)
            failed |= bool(lost)
    finally:
        if args.keep or failed:
            print("data directory kept: " + d)
        else:
            shutil.rmtree(d, ignore_errors=True)
    print("seed %d: %s" % (seed, "FAILED: acknowledged writes were lost" if failed else
                             "every acknowledged write survived %d SIGKILLs" % args.rounds))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
