#!/bin/sh
# The multi-agent benchmark suite of issue 4, back to back in one run so the
# ratios compare like with like (run it on a quiet machine; it prints the
# load average next to every row):
#   1. 8 agents x 4 turns: aios concurrent, aios sequential, llama-server -np 8
#   2. 32 agents x 4 turns: aios concurrent, aios sequential, llama-server -np 32
#   3. an interactive agent (priority 10, one call a second) beside 16 agents
#   1i/2i. 1 and 2 for aios again with the engine's batch_invariant true: every
#      call batch invariant, as if each gave a seed (the default, "seeded",
#      leaves these unseeded calls out: their prefill goes in 64-row tiles)
#   4. the ideal time of each aios workload from the engine's own measured
#      prefill and decode rates (bench_engine ideal)
# Usage: bench/agents_suite.sh [MODEL.gguf] [OUT_DIR]
# Env: SKIP="server32 ..." skips parts by name (8c 8s 8srv 8ci 8si 32c 32s server32
#      32ci 32si inter ideal);
#      THREADS (2), SLOTS (aios n_parallel; default: the engine's own, 32).
set -eu
MODEL=${1:-/tmp/q05.gguf}
OUT=${2:-/tmp/aios-agents-suite}
THREADS=${THREADS:-2}
SKIP=${SKIP:-}
AIOS=${AIOS:-build/aios}
ENGINE=${ENGINE:-build/bench/bench_engine}
WL="--turns 4 --sys-words 600 --obs-words 40 --gen 24 --threads $THREADS --json"
SL=""
[ -n "${SLOTS:-}" ] && SL="--slots $SLOTS"
mkdir -p "$OUT"
[ -f "$MODEL" ] || "$AIOS" model create-test "$MODEL" --shape qwen2.5-0.5b

skip() { case " $SKIP " in *" $1 "*) return 0 ;; esac; return 1; }
run() { # name, args...
    name=$1
    shift
    skip "$name" && return 0
    start=$(date -u +%H:%M:%S)
    load0=$(cut -d' ' -f1 /proc/loadavg)
    echo "== $name: $*" >&2
    "$AIOS" bench agents "$@" >"$OUT/$name.json" 2>"$OUT/$name.err" || echo "   ($name failed: see $OUT/$name.err)" >&2
    echo "$start-$(date -u +%H:%M:%S) load $load0-$(cut -d' ' -f1 /proc/loadavg)" >"$OUT/$name.window"
}

run 8c --kernel "$MODEL" --policy fair $SL --agents 8 $WL
run 8s --kernel "$MODEL" --policy fifo $SL --sequential --agents 8 $WL
run 8srv --llama-server "$MODEL" --slots 8 --agents 8 $WL
run 8ci --kernel "$MODEL" --policy fair $SL --agents 8 $WL --batch-invariant on
run 8si --kernel "$MODEL" --policy fifo $SL --sequential --agents 8 $WL --batch-invariant on
run 32c --kernel "$MODEL" --policy fair $SL --agents 32 $WL
run 32s --kernel "$MODEL" --policy fifo $SL --sequential --agents 32 $WL
run server32 --llama-server "$MODEL" --slots 32 --agents 32 $WL
run 32ci --kernel "$MODEL" --policy fair $SL --agents 32 $WL --batch-invariant on
run 32si --kernel "$MODEL" --policy fifo $SL --sequential --agents 32 $WL --batch-invariant on
run inter --kernel "$MODEL" --policy fair $SL --agents 16 --interactive-ms 1000 $WL

if ! skip ideal; then
    for name in 8c 8s 8ci 8si 32c 32s 32ci 32si; do
        [ -s "$OUT/$name.json" ] || continue
        python3 - "$OUT/$name.json" "${SLOTS:-32}" >"$OUT/$name.ideal-args" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
w = j["workload"]
b = 1 if j["mode"] == "sequential" else min(w["agents"], int(sys.argv[2]))
print(j["tokens"]["prompt_computed"], w["agents"] * w["turns"], w["gen"], b)
EOF
        set -- $(cat "$OUT/$name.ideal-args")
        case $name in *i) BIA="--batch-invariant on" ;; *) BIA="--batch-invariant off" ;; esac
        echo "== ideal $name: P=$1 calls=$2 gen=$3 batch=$4" >&2
        "$ENGINE" ideal "$MODEL" --threads "$THREADS" --prompt-computed "$1" --calls "$2" \
            --gen "$3" --batch "$4" --ctx 1000 $BIA >"$OUT/$name.ideal" 2>/dev/null || true
    done
fi

python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
def win(n):
    try: return open(os.path.join(out, n + ".window")).read().strip()
    except Exception: return "-"
def ideal(n):
    try:
        for l in open(os.path.join(out, n + ".ideal")):
            if l.startswith("ideal_s"): return float(l.split()[1])
    except Exception: pass
    return None
print("| run | window (UTC), load | makespan s | call p50 / p95 s | Jain | prompt computed / sent | ideal s | makespan / ideal |")
print("|---|---|---:|---|---:|---|---:|---:|")
rows = [("8c", "aios fair, 8 agents concurrent"), ("8s", "aios fifo, 8 agents sequential"),
        ("8srv", "llama-server -np 8, 8 agents"),
        ("8ci", "aios fair, 8 agents concurrent, batch_invariant true"),
        ("8si", "aios fifo, 8 agents sequential, batch_invariant true"),
        ("32c", "aios fair, 32 agents concurrent"),
        ("32s", "aios fifo, 32 agents sequential"), ("server32", "llama-server -np 32, 32 agents"),
        ("32ci", "aios fair, 32 agents concurrent, batch_invariant true"),
        ("32si", "aios fifo, 32 agents sequential, batch_invariant true"),
        ("inter", "aios fair, 16 agents + interactive")]
res = {}
for n, label in rows:
    j = load(n)
    if not j: continue
    res[n] = j["makespan_s"]
    t = j["tokens"]
    i = ideal(n)
    print("| %s | %s | %.1f | %.1f / %.1f | %.3f | %d / %d | %s | %s |" % (
        label, win(n), j["makespan_s"], j["latency_s"]["p50"], j["latency_s"]["p95"],
        j["jain_fairness"], t["prompt_computed"], t["prompt"],
        "%.1f" % i if i else "-", "%.2f" % (j["makespan_s"] / i) if i else "-"))
def ratio(a, b, what):
    if a in res and b in res: print("- %s: %.2fx" % (what, res[a] / res[b]))
print()
ratio("8c", "8srv", "8 agents, aios / llama-server (target <= 0.5)")
ratio("8c", "8s", "8 agents, aios concurrent / sequential (target <= 0.6)")
ratio("8ci", "8srv", "8 agents, batch_invariant true, aios / llama-server (target <= 0.5)")
ratio("8ci", "8si", "8 agents, batch_invariant true, aios concurrent / sequential (target <= 0.6)")
ratio("32c", "server32", "32 agents, aios / llama-server")
ratio("32c", "32s", "32 agents, aios concurrent / sequential")
ratio("32ci", "server32", "32 agents, batch_invariant true, aios / llama-server")
ratio("32ci", "32si", "32 agents, batch_invariant true, aios concurrent / sequential")
i8c, i8s = ideal("8c"), ideal("8s")
if i8c and i8s: print("- 8 agents, ideal concurrent / ideal sequential: %.2fx (the best any scheduler can do with these rates)" % (i8c / i8s))
i8c, i8s = ideal("8ci"), ideal("8si")
if i8c and i8s: print("- 8 agents, batch_invariant true, ideal concurrent / ideal sequential: %.2fx" % (i8c / i8s))
j = load("inter")
if j and "interactive" in j:
    x = j["interactive"]
    print("- interactive agent: p95 %.2f s loaded vs p50 %.2f s idle: %.2fx (target <= 2); p50 loaded %.2f s, %d calls" % (
        x["p95_s"], x["idle_p50_s"], x["p95_over_idle_p50"], x["p50_s"], x["calls"]))
EOF
