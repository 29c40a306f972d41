#!/usr/bin/env python3
"""KV affinity across kernels (docs/postgres.md, "KV affinity"): what it
costs and what it saves.

Two `aios serve` kernels, k1 and k2, on one PostgreSQL database, naming
each other in `cluster:`. CLIENTS agents each hold a conversation of TURNS
turns (a shared system prompt, then a user message per turn, the
conversation growing by the answers). Three ways of sending the turns:

  one kernel    every turn to k1 (registered agent tokens): the floor
  alternating,  turns alternate k1, k2, k1, ... with registered agent
  affinity      tokens: the turns sent to k2 are forwarded to k1
  alternating,  the same turns with each kernel's admin token acting as
  no affinity   the agent (the admin token is one kernel's own and is never
                forwarded): each kernel serves what reaches it

Each agent's first message carries a document of its own (about 300 words).
Prints first the cost of a forward (one agent's sequential 1-token calls sent
to the kernel that holds its conversation vs to the other one), then per
setup the turn latency p50 / p99 (ms) and the prompt tokens the
engines computed vs reused (usage.prompt_tokens_details.cached_tokens).

The PostgreSQL server is started as bench_state.py does (initdb/pg_ctl of
Debian's postgresql, as `postgres` when run as root), stopped at the end.

Usage: bench/bench_affinity.py [--bin build/aios] [--clients 4] [--turns 8]
       [--model FILE.gguf]  (default: the built-in tiny test model)
Nothing but the Python 3 standard library; loopback only."""
import argparse
import glob
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_state import createdb, free_port, pct, pg_start, pg_stop  # noqa: E402

SYS = ("You are a careful assistant of the aios project. You answer questions about kernels, "
       "schedulers, memory and storage in one short sentence, plainly and without lists. "
       "Keep answers short and precise, and never repeat the question.")
DOC_WORDS = 300
QUESTIONS = ["What is a kernel?", "And a scheduler?", "What does memory keep?",
             "Where do files live?", "What is a token budget?", "What is a peer kernel?",
             "Why keep the KV cache?", "What is prefix reuse?", "What is a replica?",
             "What is failover?"]


def document(agent):
    """about DOC_WORDS words of the agent's own, different for every agent"""
    words = ["harbour", "lantern", "copper", "meadow", "signal", "orchard", "glacier", "violet",
             "engine", "ledger", "compass", "thimble", "quarry", "saddle", "falcon", "ember"]
    h = sum(ord(c) * (i + 1) for i, c in enumerate(agent))
    return " ".join(words[(h + i * 7 + i * i) % len(words)] for i in range(DOC_WORDS))


def overhead(ports, token, n):
    """sequential calls of one agent whose conversation k1 holds: sent to
    k1, and sent to k2 (forwarded); latency p50 of each"""
    conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=600) for p in ports]
    body = {"model": "aios-tiny", "max_tokens": 1, "temperature": 0,
            "messages": [{"role": "system", "content": SYS}, {"role": "user", "content": "Hi"}]}
    lat = [[], []]
    call(conns[0], "POST", "/v1/chat/completions", body, token)
    for i in range(2 * n):
        k = i % 2
        t0 = time.perf_counter()
        st, _, served = call(conns[k], "POST", "/v1/chat/completions", body, token)
        lat[k].append(time.perf_counter() - t0)
        assert st == 200 and served == "k1", (st, served)
    print("one call, 1 token, conversation on k1: sent to k1 p50 %.1f ms, sent to k2 "
          "(forwarded) p50 %.1f ms (%d each)" % (pct(lat[0], 0.5), pct(lat[1], 0.5), n))


def start(binary, d, cfg, port):
    os.makedirs(d, exist_ok=True)
    ready = os.path.join(d, "ready")
    env = dict(os.environ)
    env.pop("AIOS_STATE_URL", None)
    env.pop("AIOS_CLUSTER_NAME", None)
    log = open(os.path.join(d, "kernel.log"), "ab")
    p = subprocess.Popen([binary, "serve", "--port", str(port), "--data-dir", d, "--ready-file",
                          ready, "--config", cfg], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, env=env)
    for _ in range(1200):
        if os.path.exists(ready) and os.path.getsize(ready) > 0:
            break
        if p.poll() is not None:
            raise SystemExit("the kernel exited at start; see %s/kernel.log" % d)
        time.sleep(0.05)
    return p, open(os.path.join(d, "admin.token")).read().strip()


def call(conn, method, path, body, token):
    conn.request(method, path, json.dumps(body) if body is not None else None,
                 {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    return r.status, json.loads(data) if data else None, r.getheader("X-Aios-Served-By")


def conversation(ports, tokens, agent, alternate, turns, max_tokens, out):
    """one agent's turns; tokens[i]: the token to send to kernel i"""
    conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=600) for p in ports]
    msgs = [{"role": "system", "content": SYS}]
    for t in range(turns):
        k = t % 2 if alternate else 0
        q = QUESTIONS[t % len(QUESTIONS)]
        if t == 0:  # the agent's own context: a document of its task
            q = "Here is my task's document: %s\n%s" % (document(agent), q)
        msgs.append({"role": "user", "content": q})
        body = {"model": "aios-tiny", "messages": msgs, "max_tokens": max_tokens,
                "temperature": 0, "seed": 1, "user": agent}
        if True:
            t0 = time.perf_counter()
            st, j, served = call(conns[k], "POST", "/v1/chat/completions", body, tokens[k])
            dt = time.perf_counter() - t0
        if st != 200:
            out["errors"].append((agent, t, st, j))
            return
        u = j["usage"]
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        with out["mu"]:
            out["lat"].append(dt)
            out["prompt"] += u["prompt_tokens"]
            out["cached"] += cached
            out["served"][served] = out["served"].get(served, 0) + 1
        msgs.append({"role": "assistant", "content": j["choices"][0]["message"]["content"] or ""})


def run(name, ports, token_of, agents, alternate, turns, max_tokens):
    out = {"mu": threading.Lock(), "lat": [], "prompt": 0, "cached": 0, "served": {},
           "errors": []}
    th = [threading.Thread(target=conversation,
                           args=(ports, token_of(a), a, alternate, turns, max_tokens, out))
          for a in agents]
    for t in th:
        t.start()
    for t in th:
        t.join()
    computed = out["prompt"] - out["cached"]
    print("| %s | %.1f / %.1f | %d (%.0f%%) | %d | %s |%s" % (
        name, pct(out["lat"], 0.5), pct(out["lat"], 0.99), computed,
        100.0 * computed / max(1, out["prompt"]), out["cached"],
        ", ".join("%s %d" % kv for kv in sorted(out["served"].items(), key=str)),
        " errors: %s" % out["errors"][:3] if out["errors"] else ""), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/aios")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--model", default=None)
    ap.add_argument("--pg-bindir", default=None)
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    bindir = a.pg_bindir or sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    d = tempfile.mkdtemp(prefix="aios-bench-aff-")
    pgd, pgport, pre = pg_start(bindir)
    procs = []
    try:
        url = createdb(bindir, pgport, "affinity")
        ports = [free_port(), free_port()]
        while ports[1] == ports[0]:
            ports[1] = free_port()
        admin = []
        for i, name in enumerate(["k1", "k2"]):
            cfg = os.path.join(d, name + ".yaml")
            with open(cfg, "w") as f:
                f.write("storage:\n  root_dir: %s/root\nstate:\n  backend: postgres\n  url: %s\n"
                        "cluster:\n  name: %s\n  peers:\n"
                        "    - {name: k1, url: \"http://127.0.0.1:%d\"}\n"
                        "    - {name: k2, url: \"http://127.0.0.1:%d\"}\n"
                        % (d, url, name, ports[0], ports[1]))
                if a.model:
                    f.write("llms:\n  models:\n    - {name: aios-tiny, backend: llamacpp, "
                            "path: \"%s\"}\n" % a.model)
            p, tok = start(binary, os.path.join(d, name), cfg, ports[i])
            procs.append(p)
            admin.append(tok)
        conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=60) for p in ports]
        agent_tok = {}
        for setup in ("one", "aff"):
            for c in range(a.clients):
                ag = "%s%d" % (setup, c)
                st, j, _ = call(conns[0], "POST", "/access/agents", {"name": ag}, admin[0])
                assert st in (200, 201), (st, j)
                agent_tok[ag] = j["token"]
        for _ in range(100):  # the other kernel reloads registered tokens every 250 ms
            st, _, _ = call(conns[1], "GET", "/access/whoami", None, agent_tok["aff0"])
            if st == 200:
                break
            time.sleep(0.05)
        st, j, _ = call(conns[0], "POST", "/access/agents", {"name": "probe"}, admin[0])
        time.sleep(0.5)
        overhead(ports, j["token"], 30)
        # the shared system prompt, once on each kernel, so no setup pays for it
        for k in range(2):
            call(conns[k], "POST", "/v1/chat/completions",
                 {"model": "aios-tiny", "max_tokens": 1, "messages": [
                     {"role": "system", "content": SYS}, {"role": "user", "content": "Hi"}]},
                 admin[k])
        print("%d agents x %d turns, %d tokens per answer, model %s" % (
            a.clients, a.turns, a.max_tokens, a.model or "aios-tiny (built-in test model)"))
        print("| setup | turn p50 / p99 ms | prompt tokens computed (share) | reused | served by |")
        print("|---|---|---|---|---|")
        run("one kernel", ports, lambda ag: [agent_tok[ag]] * 2,
            ["one%d" % c for c in range(a.clients)], False, a.turns, a.max_tokens)
        run("alternating, affinity", ports, lambda ag: [agent_tok[ag]] * 2,
            ["aff%d" % c for c in range(a.clients)], True, a.turns, a.max_tokens)
        run("alternating, no affinity", ports, lambda ag: admin,
            ["none%d" % c for c in range(a.clients)], True, a.turns, a.max_tokens)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        pg_stop(bindir, pgd, pre)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
