#!/bin/bash
# Instructions per request of the non-LLM syscalls, counted by callgrind:
# unlike wall time, the count does not depend on what else the machine
# runs, so two builds can be compared on a loaded machine.
#
# Usage: bench/callgrind_load.sh AIOS MIX CONNS SECONDS [PREFILL_S] [OUT]
#   AIOS       the aios binary (e.g. build/aios)
#   MIX        all | mem | sto (bench_load's -m)
#   PREFILL_S  first run the mem mix natively for this long with 50
#              connections (default 12 s; it prints how many notes that
#              made: a retrieval's cost grows with them, so compare runs
#              on stores of about the same size), so that retrievals
#              search a store of some size
#   OUT        prefix of the callgrind file and the bench output
#              (default /tmp/callgrind_load)
# Prints the requests answered, the instructions counted and their ratio,
# then the functions with the most inclusive instructions.
#
# The kernel runs with a remote model that is never called: valgrind
# cannot decode the AVX-512 code of the llama.cpp build, and no LLM call is
# made anyway. Counting starts after the kernel is ready (callgrind_control
# -z) and ends when bench_load does (-d), so start-up is not counted.
# GET /status lists ggml's devices, whose first listing runs ggml_cpu_init,
# AVX-512 code too: bench/callgrind_shim.c, preloaded, makes valgrind skip it.
set -euo pipefail
aios=$(realpath "$1"); mix=$2; conns=$3; secs=$4; prefill=${5:-12}; out=${6:-/tmp/callgrind_load}
bench=$(dirname "$aios")/bench/bench_load
d=$(mktemp -d /tmp/callgrind_load.XXXX)
cat > "$d/aios.yaml" <<'EOF'
llms:
  models:
    - name: "remote-none"
      backend: "openai"
      base_url: "http://127.0.0.1:9/v1"
      api_key: "x"
EOF
serve() { "$@" serve --config "$d/aios.yaml" --port 0 --data-dir "$d/data" --ready-file "$d/data/ready" 2>"$d/aios.log" & }
wait_ready() { while [ ! -s "$d/data/ready" ]; do sleep 0.5; done; }
mkdir -p "$d/data"
cc -shared -fPIC -o "$d/shim.so" "$(dirname "$0")/callgrind_shim.c"
if [ "$prefill" != 0 ]; then
    serve "$aios"; pid=$!; wait_ready
    "$bench" -m mem -a 10 "$(head -1 "$d/data/ready")" "$d/data/admin.token" 50 "$prefill" >/dev/null
    kill $pid; wait $pid || true
    rm -f "$d/data/ready"
    # a retrieval's cost grows with the notes: say how many there are
    python3 -c "import sqlite3,sys; print('notes in the store:', sqlite3.connect(sys.argv[1]).execute('select count(*) from notes').fetchone()[0])" "$d/data/memory.db"
fi
LD_PRELOAD="$d/shim.so" serve valgrind --tool=callgrind --callgrind-out-file="$out.cg.%p" --dump-instr=no "$aios"; pid=$!
wait_ready; sleep 1
callgrind_control -z $pid >/dev/null
"$bench" -m "$mix" -a 10 "$(head -1 "$d/data/ready")" "$d/data/admin.token" "$conns" "$secs" > "$out.bench" || true
callgrind_control -d $pid >/dev/null
sleep 1
kill $pid; wait $pid || true
f=$(ls -t "$out".cg.*.1 | head -1)
reqs=$(grep -o "^requests [0-9]*" "$out.bench" | cut -d' ' -f2)
ir=$(callgrind_annotate "$f" 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{print $1}' | tr -d ,)
echo "requests $reqs, instructions $ir, per request $((ir / reqs)) ($f)"
callgrind_annotate --threshold=100 --inclusive=yes "$f" 2>/dev/null | grep "/src/" | head -30
rm -rf "$d"
