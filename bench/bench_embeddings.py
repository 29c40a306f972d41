#!/usr/bin/env python3
"""POST /v1/embeddings end to end, batched against one input per decode.

For each setting the bench starts a fresh kernel whose embedding model is
MODEL with `embedding.n_seq` set to 32 (batched, the default) or 1 (one
input per llama_decode, the same worker otherwise), then times:
  list   one call whose `input` is a list of N texts
  agents C agents at once, each sending N / C calls of one text in turn
         (calls that wait at the same time share decodes when batched)
and reads the embedder's counters in GET /status (texts, decodes). The
list is sent once untimed first (a fresh kernel's first big decode
touches its buffers for the first time). It
prints both settings side by side and the time ratio, and the largest
difference between the two settings' vectors for the list.

The two settings run alternately REPS times each (a fresh kernel each
time) and each time is the best of its REPS.

Usage: bench/bench_embeddings.py [AIOS_BIN=build/aios] [MODEL=embed] [N=128]
       [C=8] [POOLING=model] [REPS=2]
MODEL `embed` makes the embed test model (aios model create-test --shape
embed) in a temporary directory; any GGUF path works (POOLING mean for a
chat-shaped model such as the qwen2.5-0.5b test shape). Texts are 4 to 40
words from a fixed list, seeded."""
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

WORDS = ("the kernel agent memory storage schedules a call of model token sandbox reads "
         "writes file note query vector cosine ranks and to in quickly slowly every batch "
         "decode engine context prompt answer zebra quantum marmalade river mountain violet "
         "seven 42").split()


def texts(n):
    rnd = random.Random(12345)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 40))) for _ in range(n)]


def start_kernel(binary, model, n_seq, pooling):
    d = tempfile.mkdtemp(prefix="aios-bench-emb-")
    cfg = os.path.join(d, "config.yaml")
    with open(cfg, "w") as f:
        f.write("embedding:\n  model: %s\n  name: bench-embed\n  n_ctx: 512\n  n_seq: %d\n"
                % (model, n_seq))
        if pooling != "model":
            f.write("  pooling: %s\n" % pooling)
    log = open(os.path.join(d, "aios.log"), "w")
    p = subprocess.Popen([binary, "serve", "--config", cfg, "--host", "127.0.0.1", "--port", "0",
                          "--data-dir", d, "--ready-file", os.path.join(d, "ready")],
                         stderr=log, stdout=subprocess.DEVNULL)
    for _ in range(1200):
        if os.path.exists(os.path.join(d, "ready")):
            break
        if p.poll() is not None:
            raise SystemExit("aios serve exited; see %s/aios.log" % d)
        time.sleep(0.1)
    port = int(open(os.path.join(d, "ready")).read().split()[0])
    token = open(os.path.join(d, "admin.token")).read().strip()
    return p, d, port, token


def call(port, token, method, path, body=None, agent="bench"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    raw = json.dumps(body).encode() if body is not None else None
    c.request(method, path, raw, {"Authorization": "Bearer " + token, "X-Aios-Agent": agent,
                                  "Content-Type": "application/json"})
    r = c.getresponse()
    out = json.loads(r.read())
    c.close()
    if r.status != 200:
        raise SystemExit("%s %s answered %d: %s" % (method, path, r.status, out))
    return out


def counters(port, token):
    e = call(port, token, "GET", "/status")["embedding"]
    return e["n_texts"], e["n_decodes"]


def run(binary, model, n_seq, pooling, inputs, clients):
    p, d, port, token = start_kernel(binary, model, n_seq, pooling)
    try:
        res = {}
        # warm up with the list itself: the first big decode of a fresh kernel
        # touches its logits and compute buffers for the first time
        call(port, token, "POST", "/v1/embeddings", {"model": "bench-embed", "input": inputs})
        t0, c0 = time.perf_counter(), counters(port, token)
        out = call(port, token, "POST", "/v1/embeddings", {"model": "bench-embed", "input": inputs})
        t1, c1 = time.perf_counter(), counters(port, token)
        res["list"] = (t1 - t0, c1[0] - c0[0], c1[1] - c0[1])
        res["vectors"] = [x["embedding"] for x in out["data"]]

        def agent(i):
            for k in range(i, len(inputs), clients):
                call(port, token, "POST", "/v1/embeddings",
                     {"model": "bench-embed", "input": inputs[k]}, agent="bench-%d" % i)

        th = [threading.Thread(target=agent, args=(i,)) for i in range(clients)]
        t0, c0 = time.perf_counter(), counters(port, token)
        for x in th:
            x.start()
        for x in th:
            x.join()
        t1, c1 = time.perf_counter(), counters(port, token)
        res["agents"] = (t1 - t0, c1[0] - c0[0], c1[1] - c0[1])
        return res
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "build/aios"
    model = sys.argv[2] if len(sys.argv) > 2 else "embed"
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    clients = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    pooling = sys.argv[5] if len(sys.argv) > 5 else "model"
    reps = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    tmp = None
    if model == "embed":
        tmp = tempfile.mkdtemp(prefix="aios-bench-emb-model-")
        model = os.path.join(tmp, "embed.gguf")
        subprocess.run([binary, "model", "create-test", model, "--shape", "embed"], check=True,
                       stdout=subprocess.DEVNULL)
    inputs = texts(n)
    one, bat = None, None

    def best(prev, cur):
        if prev is None:
            return cur
        for k in ("list", "agents"):
            if cur[k][0] < prev[k][0]:
                prev[k] = cur[k]
        return prev

    try:
        for _ in range(reps):
            one = best(one, run(binary, model, 1, pooling, inputs, clients))
            bat = best(bat, run(binary, model, 32, pooling, inputs, clients))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print("model %s, %d inputs, %d agents, best of %d" % (model, n, clients, reps))
    print("%-8s %28s %28s %8s" % ("", "one per decode (n_seq 1)", "batched (n_seq 32)", "speedup"))
    for k in ("list", "agents"):
        a, b = one[k], bat[k]
        print("%-8s %10.1f ms %4d texts %4d dec %10.1f ms %4d texts %4d dec %7.2fx" % (
            k, a[0] * 1e3, a[1], a[2], b[0] * 1e3, b[1], b[2], a[0] / b[0]))
    diff = max(abs(x - y) for u, v in zip(one["vectors"], bat["vectors"]) for x, y in zip(u, v))
    print("list vectors, batched vs one per decode: max abs diff %.3g" % diff)


if __name__ == "__main__":
    main()
