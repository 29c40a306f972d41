#!/usr/bin/env python3
"""Responses (previous_response_id) against Chat Completions (the whole
history resent): AGENTS agents, each holding one conversation of TURNS
turns, all agents at once. For each API the bench starts a fresh kernel
(so neither finds the other's conversations in the KV cache), runs the
agents, and prints per turn and in all: request body bytes the clients
sent, prompt tokens, and prompt tokens the engine computed (prompt minus
the cached tokens the usage reports).

Usage: bench/bench_responses.py [AIOS_BIN=build/aios] [AGENTS=8] [TURNS=8]
The kernel serves its built-in test model (aios-tiny: random weights, a
real tokenizer); answers are max_output_tokens=16 at temperature 0."""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

INSTRUCTIONS = "You are a careful assistant. Answer in one short sentence."
QUESTION = ("Turn %d of agent %d: here is a new observation from the tool output, "
            "summarise what changed since the last step and what to do next.")


def start_kernel(binary):
    d = tempfile.mkdtemp(prefix="aios-bench-resp-")
    log = open(os.path.join(d, "aios.log"), "w")
    p = subprocess.Popen([binary, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", d,
                          "--ready-file", os.path.join(d, "ready")], stderr=log,
                         stdout=subprocess.DEVNULL)
    for _ in range(600):
        if os.path.exists(os.path.join(d, "ready")):
            break
        time.sleep(0.1)
    port = int(open(os.path.join(d, "ready")).read().split()[0])
    token = open(os.path.join(d, "admin.token")).read().strip()
    return p, d, port, token


def post(port, token, agent, path, body):
    raw = json.dumps(body).encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", path, raw, {"Authorization": "Bearer " + token, "X-Aios-Agent": agent,
                                  "Content-Type": "application/json"})
    r = c.getresponse()
    out = json.loads(r.read())
    c.close()
    if r.status != 200:
        raise SystemExit("%s answered %d: %s" % (path, r.status, out))
    return len(raw), out


def run(binary, api, agents, turns):
    p, d, port, token = start_kernel(binary)
    stats = [[0, 0, 0] for _ in range(turns)]  # bytes, prompt, computed
    lock = threading.Lock()

    def agent(i):
        name = "bench-%s-%d" % (api, i)
        history, prev = [{"role": "system", "content": INSTRUCTIONS}], None
        for t in range(turns):
            q = QUESTION % (t + 1, i)
            if api == "chat":
                history.append({"role": "user", "content": q})
                n, out = post(port, token, name, "/v1/chat/completions",
                              {"model": "aios-tiny", "messages": history, "max_tokens": 16,
                               "temperature": 0})
                history.append({"role": "assistant",
                                "content": out["choices"][0]["message"]["content"]})
                u = out["usage"]
                prompt, cached = u["prompt_tokens"], u["prompt_tokens_details"]["cached_tokens"]
            else:
                body = {"model": "aios-tiny", "instructions": INSTRUCTIONS, "input": q,
                        "max_output_tokens": 16, "temperature": 0}
                if prev:
                    body["previous_response_id"] = prev
                n, out = post(port, token, name, "/v1/responses", body)
                prev = out["id"]
                u = out["usage"]
                prompt, cached = u["input_tokens"], u["input_tokens_details"]["cached_tokens"]
            with lock:
                s = stats[t]
                s[0] += n
                s[1] += prompt
                s[2] += prompt - cached

    t0 = time.perf_counter()
    th = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    el = time.perf_counter() - t0
    p.terminate()
    p.wait()
    subprocess.run(["rm", "-rf", d])
    return stats, el


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "build/aios"
    agents = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    turns = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    res = {api: run(binary, api, agents, turns) for api in ("chat", "responses")}
    print("%d agents x %d turns (all agents' requests summed per turn)" % (agents, turns))
    print("%4s | %28s | %28s" % ("", "Chat Completions (resend)", "Responses (previous id)"))
    print("%4s | %9s %8s %9s | %9s %8s %9s" % ("turn", "bytes", "prompt", "computed",
                                                "bytes", "prompt", "computed"))
    tot = {api: [0, 0, 0] for api in res}
    for t in range(turns):
        row = []
        for api in ("chat", "responses"):
            s = res[api][0][t]
            row += s
            for k in range(3):
                tot[api][k] += s[k]
        print("%4d | %9d %8d %9d | %9d %8d %9d" % tuple([t + 1] + row))
    print("%4s | %9d %8d %9d | %9d %8d %9d" % tuple(["all"] + tot["chat"] + tot["responses"]))
    print("wall: chat %.1f s, responses %.1f s" % (res["chat"][1], res["responses"][1]))


if __name__ == "__main__":
    main()
