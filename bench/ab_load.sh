#!/bin/sh
# Two or more aios binaries side by side under bench_load, alternating, each
# run on a fresh data directory: requests/s, the per-kind latency lines, and
# the kernel's CPU per request (user + system time of the aios process from
# /proc/PID/stat over the run, divided by the requests answered), which
# moves less from run to run than requests/s on a shared machine.
#
# Usage: bench/ab_load.sh MIX AGENTS CONNS SECONDS ROUNDS AIOS [AIOS ...]
#   MIX      all | mem | sto | status | get (bench_load's -m)
#   BL_ARGS  (environment) more bench_load options, e.g. BL_ARGS="-b 4096"
# Example: bench/ab_load.sh all 16 1000 25 3 $OLD build/aios   ($OLD: an older build)
set -eu
[ $# -ge 6 ] || { sed -n 2,11p "$0"; exit 2; }
mix=$1; agents=$2; conns=$3; secs=$4; rounds=$5; shift 5
load=$(dirname "$0")/../build/bench/bench_load
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for r in $(seq "$rounds"); do
    for bin in "$@"; do
        d=$(mktemp -d)
        "$bin" serve --port 0 --data-dir "$d" --ready-file "$d/ready" 2>"$d/aios.log" &
        pid=$!
        while [ ! -s "$d/ready" ]; do sleep 0.2; done
        c1=$(cpu $pid)
        # shellcheck disable=SC2086
        out=$("$load" -m "$mix" -a "$agents" ${BL_ARGS:-} "$(head -1 "$d/ready")" \
              "$d/admin.token" "$conns" "$secs" $pid 2>&1)
        c2=$(cpu $pid)
        req=$(echo "$out" | sed -n 's/^requests \([0-9]*\) ok.*/\1/p')
        echo "== round $r: $bin"
        echo "$out" | grep -E '^(requests|memory|storage|status|op )'
        echo "kernel CPU per request: $(( (c2 - c1) * 1000000 / hz / (req > 0 ? req : 1) )) us"
        kill $pid
        while kill -0 $pid 2>/dev/null; do sleep 0.1; done
        rm -rf "$d"
    done
done
