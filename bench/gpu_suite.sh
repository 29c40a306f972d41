#!/bin/sh
# The GPU benchmark suite: builds aios and llama.cpp's tools for the GPU the
# machine has, then measures the embedded engine against llama.cpp on it, in
# one prepared run meant for a lent device machine (one H100 or H200, 16
# cores, no network, a copy of the working tree plus up to 64 MiB of carried
# ignored files; see docs/performance.md, "GPU").
#
# Usage:
#   bench/gpu_suite.sh --pack        HERE, with network: write .gpu/ (ignored),
#                                    what the device needs and cannot fetch:
#       .gpu/node-llama-cpp-3.22.1.tgz  the npm package scripts/llama.sh builds
#                                       llama.cpp from (its pinned sha256 checked)
#       .gpu/debs/*.deb                 Debian's -dev packages aios builds against,
#                                       their libraries, pkgconf and git, unpacked
#                                       there under build/gpu-suite/sysroot only if
#                                       the machine lacks them (never into /)
#   bench/gpu_suite.sh               on the device (carry .gpu): detect, build, run
#   bench/gpu_suite.sh --cpu         the whole flow on the CPU build with tiny
#                                    sizes (alias --dry-run), to test the suite
#   bench/gpu_suite.sh --variant vulkan --small   the Vulkan build (lavapipe
#                                    where there is no GPU), tiny sizes
#   bench/gpu_suite.sh --plan        print the plan and exit
#   options: --only build (build stages only) / --skip-build (reuse a build of
#            an earlier call on the same warm machine), --budget S (default 470)
#
# On the device, from the repository root (the `run` tool):
#   run(command="bench/gpu_suite.sh", carry=[".gpu"], timeout_s=600)
# Results land in $OUT (default build/gpu-suite/out): summary.md (the tables
# for docs/performance.md, with the device's name), results.txt (every
# benchmark's own output) and logs.tar.gz (every stage's log).
#
# Stages, each under its own time cap (and never past the whole budget):
#   detect   nvcc -> CUDA (CMAKE_CUDA_ARCHITECTURES = the GPU's compute
#            capability), else libvulkan + glslc -> Vulkan, else stop, saying
#            what is missing; --variant (or --cpu) chooses instead
#   sysroot  the carried .debs, if pkg-config cannot find aios's libraries
#   build    `make GPU=<variant> configure` (scripts/llama.sh builds the pinned
#            llama.cpp; its `npm pack` is answered from the carried .tgz by a
#            shim on PATH, the sha256 checks stay), then aios and bench_engine
#   tools    llama-server and llama-batched-bench with the same backend: the
#            llama.cpp build tree scripts/llama.sh left is reconfigured with the
#            tools on, so the backend is not compiled twice (a fresh tree when
#            none is found, and with --small/--cpu, whose caches are shared)
#   model    aios model create-test, shape qwen2.5-0.5b (tiny with --small)
#   decode   bench_engine decode at 1,4,8,16,32,64 sequences: the engine against
#            llama.cpp's batched loop in the same process
#   batched  llama-batched-bench, the same prompt and generation sizes
#   switch   bench_engine switch: KV snapshot + restore against re-prefill
#   agents   aios bench agents at 8, 32 and 128 agents, aios against
#            llama-server -np N -ngl 99, same model, same workload as
#            bench/agents_suite.sh
#   summary  summary.md
# Env: THREADS (CPU threads of both sides; 8, or 2 with --small), AGENTS
# ("8 32 128"), SIZES (decode, "1,4,8,16,32,64"), GPU_SUITE_DIR (work dir).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SELF="$ROOT/bench/gpu_suite.sh"
cd "$ROOT"

PKG_TGZ=node-llama-cpp-3.22.1.tgz
# the pins of scripts/llama.sh (read from it, so they cannot drift)
PKG=$(sed -n 's/^PKG="\(.*\)"$/\1/p' scripts/llama.sh)
PKG_SHA=$(sed -n 's/^PKG_SHA="\(.*\)"$/\1/p' scripts/llama.sh)
: "${PKG:=node-llama-cpp@3.22.1}"

# Debian packages aios links against at run time (ldd of build/aios, less
# libc, libgcc, libstdc++ and zlib, which every system has), the -dev
# packages it builds against, pkgconf, and git for scripts/llama.sh
DEBS_RUNTIME="libbrotli1 libcom-err2 libcurl4 libffi8 libgmp10 libgnutls30 libgssapi-krb5-2
 libhogweed6 libidn2-0 libjansson4 libk5crypto3 libkeyutils1 libkrb5-3 libkrb5support0
 libldap-2.5-0 libmicrohttpd12 libnettle8 libnghttp2-14 libp11-kit0 libpq5 libpsl5 librtmp1
 libsasl2-2 libsqlite3-0 libssh2-1 libssl3 libtasn1-6 libunistring2 libyaml-0-2 libzstd1
 libpcre2-8-0"
DEBS_DEV="libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libyaml-dev libsqlite3-dev
 libpq-dev pkgconf pkgconf-bin libpkgconf3 git"
PC_MODULES="libmicrohttpd libcurl jansson yaml-0.1 sqlite3 libpq"

log() { echo "gpu_suite: $*" >&2; }
die() { log "$*"; exit 1; }

# ---- --pack (here, with network) ------------------------------------------

pack() {
    mkdir -p .gpu/debs
    grep -qx '/.gpu/' .gitignore 2>/dev/null || log "warning: .gpu/ is not in .gitignore"
    if [ -f ".gpu/$PKG_TGZ" ] && [ "$(sha256sum ".gpu/$PKG_TGZ" | cut -d' ' -f1)" = "$PKG_SHA" ]; then
        log "have .gpu/$PKG_TGZ"
    else
        log "npm pack $PKG"
        rm -f ".gpu/$PKG_TGZ"
        (cd .gpu && npm pack --silent "$PKG" >/dev/null)
        got=$(sha256sum ".gpu/$PKG_TGZ" | cut -d' ' -f1)
        [ "$got" = "$PKG_SHA" ] || { rm -f ".gpu/$PKG_TGZ"; die "sha256 of $PKG_TGZ is $got, want $PKG_SHA"; }
    fi
    if [ "${NO_DEBS:-0}" = 1 ]; then
        log "NO_DEBS=1: no .debs"
    else
        log "apt-get download: aios's build dependencies ($(echo $DEBS_RUNTIME $DEBS_DEV | wc -w) packages)"
        (cd .gpu/debs && apt-get download $DEBS_RUNTIME $DEBS_DEV 2>&1 >/dev/null | grep -v unsandboxed) || true
        # plain names (letters, digits, . _ -) travel anywhere
        for f in .gpu/debs/*.deb; do
            g=$(basename "$f" | tr -c 'A-Za-z0-9._\n-' '_')
            [ "$g" = "$(basename "$f")" ] || mv -f "$f" ".gpu/debs/$g"
        done
        [ "$(ls .gpu/debs/*.deb | wc -l)" -ge "$(echo $DEBS_RUNTIME $DEBS_DEV | wc -w)" ] ||
            die "apt-get download failed (apt-get update first?)"
    fi
    tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
    carried=$(du -sb .gpu | cut -f1)
    total=$(( (tree + carried) / 1048576 ))
    log "working tree $((tree / 1048576)) MiB + .gpu $((carried / 1048576)) MiB = $total MiB (limit 64)"
    [ "$total" -lt 63 ] || log "warning: over the device's 64 MiB; rerun with NO_DEBS=1 if it has the libraries"
    echo "on the device: run(command=\"bench/gpu_suite.sh\", carry=[\".gpu\"], timeout_s=600)"
}

# ---- configuration shared with the stages (exported) -----------------------

setup() {
    export MODE VARIANT BUDGET
    export W="${GPU_SUITE_DIR:-$ROOT/build/gpu-suite}"
    export OUT="${OUT:-$W/out}"
    export LOGS="$W/logs" RES="$W/results"
    if [ "$MODE" = small ]; then
        export THREADS="${THREADS:-2}" AGENTS="${AGENTS:-2 4}" SIZES="${SIZES:-1,4}"
        export SHAPE=tiny GEN="${GEN:-8}" REPS="${REPS:-1}" LENS="${LENS:-64,256}"
        export WL="--turns 2 --sys-words 60 --obs-words 10 --gen 8 --threads $THREADS --json"
    else
        n=$(nproc 2>/dev/null || echo 16)
        t=$((n / 2)); [ "$t" -gt 8 ] && t=8; [ "$t" -lt 1 ] && t=1
        export THREADS="${THREADS:-$t}" AGENTS="${AGENTS:-8 32 128}" SIZES="${SIZES:-1,4,8,16,32,64}"
        export SHAPE=qwen2.5-0.5b GEN="${GEN:-64}" REPS="${REPS:-2}" LENS="${LENS:-256,1024,4096}"
        # the workload of bench/agents_suite.sh
        export WL="--turns 4 --sys-words 600 --obs-words 40 --gen 24 --threads $THREADS --json"
    fi
    export JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
    # the variant's build dir is set once detect has run (build-cuda,
    # build-vulkan, as `make GPU=...` names them; build for the CPU)
    export BUILD="${BUILD:-}"
    export MODEL="$W/model-$SHAPE.gguf"
    mkdir -p "$W" "$OUT" "$LOGS" "$RES" "$W/bin"
}

# ---- stages (each run as `gpu_suite.sh __stage NAME` under timeout) --------

# the variant: cuda, vulkan or cpu (--cpu), with what decided it
st_detect() {
    {
        echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc)"
        echo "memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    } >"$W/env.txt"
    gpu=""
    if command -v nvidia-smi >/dev/null 2>&1; then
        gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -n1 || true)
    fi
    [ -n "$gpu" ] && echo "gpu: $gpu" >>"$W/env.txt"
    missing=""
    nvcc=$(command -v nvcc 2>/dev/null || true)
    [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
    vulkan=""
    ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' && command -v glslc >/dev/null 2>&1 &&
        [ -f /usr/include/vulkan/vulkan.h ] && vulkan=1
    if [ -n "$VARIANT" ]; then
        variant=$VARIANT
    elif [ -n "$nvcc" ]; then
        variant=cuda
    elif [ -n "$vulkan" ]; then
        variant=vulkan
    else
        variant=""
        missing="$missing nvcc (the CUDA toolkit), or for Vulkan:"
        ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || missing="$missing libvulkan1"
        [ -f /usr/include/vulkan/vulkan.h ] || missing="$missing libvulkan-dev"
        command -v glslc >/dev/null 2>&1 || missing="$missing glslc"
    fi
    if [ "$variant" = cuda ]; then
        [ -n "$nvcc" ] || missing="$missing nvcc"
        command -v nvcc >/dev/null 2>&1 || echo "export PATH=\"$(dirname "${nvcc:-/usr/local/cuda/bin/nvcc}"):\$PATH\"" >"$W/path.env"
        [ -n "$nvcc" ] && echo "nvcc: $("$nvcc" --version | grep -o 'release [0-9.]*' | head -n1)" >>"$W/env.txt"
        cc=$(echo "$gpu" | awk -F', ' '{print $4}' | tr -d '.')
        # only the GPU's own architecture: a fraction of the compile time
        # (scripts/llama.sh takes CUDA_ARCHITECTURES; "native" otherwise)
        [ -n "$cc" ] && echo "export CUDA_ARCH=$cc CUDA_ARCHITECTURES=$cc-real" >"$W/arch.env"
    fi
    for t in cmake make cc c++ python3 flock; do
        command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
    done
    [ -f "$ROOT/.gpu/$PKG_TGZ" ] || ls "${XDG_CACHE_HOME:-$HOME/.cache}"/aios/llama.cpp-v0.5.0*/stamp >/dev/null 2>&1 ||
        command -v npm >/dev/null 2>&1 || missing="$missing .gpu/$PKG_TGZ (bench/gpu_suite.sh --pack, carry .gpu)"
    cat "$W/env.txt"
    if [ -z "$variant" ] || [ -n "$missing" ]; then
        log "cannot build here; missing:$missing"
        exit 1
    fi
    echo "$variant" >"$W/variant"
    echo "variant: $variant" | tee -a "$W/env.txt"
}

# aios's libraries from the carried .debs, unpacked under $W/sysroot, if
# pkg-config does not find them (or FORCE_SYSROOT=1); env for later stages
# in $W/sysroot.env
st_sysroot() {
    rm -f "$W/sysroot.env"
    need=0
    [ "${FORCE_SYSROOT:-0}" = 1 ] && need=1
    command -v pkg-config >/dev/null 2>&1 || need=1
    if [ $need = 0 ]; then
        for m in $PC_MODULES; do pkg-config --exists "$m" || { need=1; break; }; done
    fi
    command -v git >/dev/null 2>&1 || need=1
    if [ $need = 0 ]; then
        echo "the system has aios's libraries, pkg-config and git"
        return 0
    fi
    ls "$ROOT"/.gpu/debs/*.deb >/dev/null 2>&1 || {
        log "missing libraries or tools (pkg-config modules: $PC_MODULES; git) and no .gpu/debs (run --pack here)"
        exit 1
    }
    S="$W/sysroot"
    rm -rf "$S"
    mkdir -p "$S"
    for d in "$ROOT"/.gpu/debs/*.deb; do dpkg-deb -x "$d" "$S"; done
    L="$S/usr/lib/x86_64-linux-gnu:$S/lib/x86_64-linux-gnu"
    # the .pc files name /usr: point them into the sysroot; no static links
    for pc in "$S"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$S"/usr/share/pkgconfig/*.pc; do
        [ -f "$pc" ] || continue
        sed -i -E "s#^([A-Za-z_]+)=/usr(/|\$)#\1=$S/usr\2#; /^Requires.private/d" "$pc"
    done
    {
        echo "export PKG_CONFIG_PATH=\"$S/usr/lib/x86_64-linux-gnu/pkgconfig:$S/usr/share/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}\""
        # the libraries' own dependencies at link time, and at run time for
        # every library (DT_RPATH, not RUNPATH, so it holds transitively)
        echo "export LDFLAGS=\"-Wl,--disable-new-dtags -Wl,-rpath,$L -Wl,-rpath-link,$L\""
    } >"$W/sysroot.env"
    if ! command -v pkg-config >/dev/null 2>&1 || [ "${FORCE_SYSROOT:-0}" = 1 ]; then
        printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s/usr/bin/pkgconf" "$@"\n' "$L" "$S" >"$W/bin/pkg-config"
        chmod +x "$W/bin/pkg-config"
        echo "export PKG_CONFIG=\"$W/bin/pkg-config\"" >>"$W/sysroot.env"
    fi
    if ! command -v git >/dev/null 2>&1; then
        printf '#!/bin/sh\nGIT_EXEC_PATH="%s/usr/lib/git-core" LD_LIBRARY_PATH="%s" exec "%s/usr/bin/git" "$@"\n' \
            "$S" "$L" "$S" >"$W/bin/git"
        chmod +x "$W/bin/git"
    fi
    . "$W/sysroot.env"
    for m in $PC_MODULES; do
        "${PKG_CONFIG:-pkg-config}" --exists "$m" || { log "pkg-config still lacks $m"; exit 1; }
    done
    echo "sysroot: $S ($(ls "$ROOT"/.gpu/debs/*.deb | wc -l) packages)"
}

# npm pack node-llama-cpp@3.22.1 answered from the carried .tgz (scripts/llama.sh
# checks its sha256 as always); anything else goes to the real npm
write_npm_shim() {
    real=$(PATH=$(echo "$PATH" | tr ':' '\n' | grep -vx "$W/bin" | paste -sd:) command -v npm 2>/dev/null || true)
    cat >"$W/bin/npm" <<EOF
#!/bin/sh
if [ "\$1" = pack ] && [ -f "$ROOT/.gpu/$PKG_TGZ" ]; then
    for a in "\$@"; do
        if [ "\$a" = "$PKG" ]; then
            echo "npm (gpu_suite shim): pack $PKG from the carried .gpu/$PKG_TGZ" >&2
            cp "$ROOT/.gpu/$PKG_TGZ" . && echo "$PKG_TGZ" && exit 0
        fi
    done
fi
[ -n "$real" ] && exec "$real" "\$@"
echo "npm (gpu_suite shim): no network and no carried .gpu/$PKG_TGZ for: \$*" >&2
exit 1
EOF
    chmod +x "$W/bin/npm"
}

prefix_of_build() { sed -n 's/^LLAMA_PREFIX:[A-Z]*=//p' "$ROOT/$BUILD/CMakeCache.txt" 2>/dev/null; }

st_build() {
    variant=$(cat "$W/variant")
    write_npm_shim
    gpuarg=""
    [ "$variant" = cpu ] || gpuarg="GPU=$variant"
    # -o deps: scripts/deps.sh would reach for apt-get; the sysroot stage
    # has checked the libraries instead. Warnings stay warnings: another
    # compiler version must not stop a benchmark run (on the device only:
    # the option is cached in the build dir).
    werror=""
    [ "$MODE" = full ] && werror=-DAIOS_WERROR=OFF
    echo "+ make -o deps $gpuarg BUILD=$BUILD CMAKE_ARGS=$werror configure"
    make --no-print-directory -o deps $gpuarg BUILD="$BUILD" CMAKE_ARGS="$werror" configure
    prefix=$(prefix_of_build)
    [ -n "$prefix" ] || die "no LLAMA_PREFIX in $BUILD/CMakeCache.txt"
    echo "llama.cpp prefix: $prefix"
    ls "$prefix/lib" || true
    case $variant in
        cuda) ls "$prefix"/lib/libggml-cuda.* >/dev/null 2>&1 ||
            die "the llama.cpp build has no CUDA backend: this tree's make has no GPU=cuda" ;;
        vulkan) ls "$prefix"/lib/libggml-vulkan.* >/dev/null 2>&1 ||
            die "the llama.cpp build has no Vulkan backend: this tree's make has no GPU=vulkan" ;;
    esac
    echo "+ cmake --build $BUILD -j $JOBS --target aios bench_engine"
    cmake --build "$BUILD" -j "$JOBS" --target aios bench_engine
}

# llama-server and llama-batched-bench into $W/tools-<variant>/
st_tools() {
    variant=$(cat "$W/variant")
    prefix=$(prefix_of_build)
    cache=$(dirname "$prefix")
    src="$cache/src"
    [ -f "$src/CMakeLists.txt" ] || die "no llama.cpp source at $src"
    case $variant in
        cuda) backend="-DGGML_CUDA=ON"; flag="GGML_CUDA:BOOL=ON" ;;
        vulkan) backend="-DGGML_VULKAN=ON"; flag="GGML_VULKAN:BOOL=ON" ;;
        *) backend=""; flag="" ;;
    esac
    tree=""
    # reuse scripts/llama.sh's tree (its backend objects are built) on the
    # device, or in a private cache (AIOS_LLAMA_CACHE); not in the shared
    # caches of a development machine (--small), which must not change
    if [ "$MODE" = full ] || [ -n "${AIOS_LLAMA_CACHE:-}" ]; then
        for c in "$cache"/*/CMakeCache.txt; do
            [ -f "$c" ] || continue
            grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$src\$" "$c" || continue
            if [ -n "$flag" ]; then grep -q "^$flag\$" "$c" || continue
            else grep -Eq '^GGML_(CUDA|VULKAN):BOOL=ON$' "$c" && continue; fi
            tree=$(dirname "$c")
            break
        done
    fi
    if [ -n "$tree" ]; then
        echo "reusing llama.cpp build tree $tree"
        cmake -S "$src" -B "$tree" -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
            -DLLAMA_BUILD_COMMON=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
    else
        tree="$W/llama-tools-$variant"
        echo "fresh llama.cpp build tree $tree"
        arch=""
        [ -n "${CUDA_ARCHITECTURES:-}" ] && arch="-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES"
        cmake -S "$src" -B "$tree" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
            -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=ON \
            -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_COMMON=ON $backend $arch
    fi
    cmake --build "$tree" -j "$JOBS" --target llama-server llama-batched-bench
    d="$W/tools-$variant"
    mkdir -p "$d"
    cp "$tree/bin/llama-server" "$tree/bin/llama-batched-bench" "$d/"
    # llama-server as llama-server users run it on a GPU
    printf '#!/bin/sh\nexec "%s/llama-server" -ngl 99 "$@"\n' "$d" >"$d/llama-server-ngl99"
    chmod +x "$d/llama-server-ngl99"
    ls -la "$d"
}

st_model() {
    if [ -s "$MODEL" ]; then echo "have $MODEL"; return 0; fi
    "$BUILD/aios" model create-test "$MODEL" --shape "$SHAPE"
}

# a command as the summary lists it (results/commands.txt)
record() {
    echo "$*" | sed "s#$MODEL#MODEL.gguf#g; s#$W/tools-[a-z]*/##g; s#^$ROOT/##" >>"$RES/commands.txt"
}

st_decode() {
    # past 32 sequences (the engine's default n_parallel) the engine must
    # take them all in one batch, as the baseline does; ENGINE_SET: more
    # KEY=VALUE engine knobs, space-separated
    max=$(echo "$SIZES" | tr ',' '\n' | sort -n | tail -n1)
    set --
    [ "$max" -gt 32 ] && set -- --set "n_parallel=$max"
    for kv in ${ENGINE_SET:-}; do set -- "$@" --set "$kv"; done
    record "$BUILD/bench/bench_engine" decode "$MODEL" --threads "$THREADS" --sizes "$SIZES" --prompt 8 \
        --gen "$GEN" --reps "$REPS" "$@"
    set -x
    "$BUILD/bench/bench_engine" decode "$MODEL" --threads "$THREADS" --sizes "$SIZES" --prompt 8 \
        --gen "$GEN" --reps "$REPS" "$@" >"$RES/decode.txt" || rc=$?
    cat "$RES/decode.txt"
    return "${rc:-0}"
}

st_batched() {
    variant=$(cat "$W/variant")
    record llama-batched-bench -m "$MODEL" -c 8192 -b 2048 -ub 512 -ngl 99 \
        -t "$THREADS" -tb "$THREADS" -npp 8 -ntg "$GEN" -npl "$SIZES"
    set -x
    "$W/tools-$variant/llama-batched-bench" -m "$MODEL" -c 8192 -b 2048 -ub 512 -ngl 99 \
        -t "$THREADS" -tb "$THREADS" -npp 8 -ntg "$GEN" -npl "$SIZES" >"$RES/batched.txt" 2>&1 || rc=$?
    cat "$RES/batched.txt"
    return "${rc:-0}"
}

st_switch() {
    record "$BUILD/bench/bench_engine" switch "$MODEL" --threads "$THREADS" --lens "$LENS"
    set -x
    "$BUILD/bench/bench_engine" switch "$MODEL" --threads "$THREADS" --lens "$LENS" >"$RES/switch.txt" || rc=$?
    cat "$RES/switch.txt"
    return "${rc:-0}"
}

st_agents() {
    variant=$(cat "$W/variant")
    srv="$W/tools-$variant/llama-server-ngl99"
    bad=0
    for n in $AGENTS; do
        for side in aios server; do
            left=$((STAGE_END - $(date +%s) - 5))
            if [ "$left" -lt 10 ]; then
                echo "agents $n $side: skipped, no time left"
                bad=1
                continue
            fi
            cap=$(( left < ${AGENT_CAP:-100} ? left : ${AGENT_CAP:-100} ))
            echo "== agents $n, $side (cap ${cap}s)"
            if [ $side = aios ]; then
                set -- --kernel "$MODEL" --policy fair --slots "$n" --agents "$n"
            else
                set -- --llama-server "$MODEL" --server-bin "$srv" --slots "$n" --agents "$n"
            fi
            echo "+ aios bench agents $* $WL"
            record "$BUILD/aios" bench agents "$@" $WL
            timeout -k 5 "$cap" "$BUILD/aios" bench agents "$@" $WL >"$RES/agents-$n-$side.json" \
                2>"$LOGS/agents-$n-$side.err" || { echo "   (agents $n $side failed or timed out: rc $?)"; bad=1; }
            tail -n 3 "$LOGS/agents-$n-$side.err" || true
        done
    done
    return $bad
}

st_summary() {
    python3 - "$W" "$MODE" "${VARIANT:-}" <<'EOF'
import json, os, re, sys
w, mode, forced = sys.argv[1], sys.argv[2], sys.argv[3]
res = os.path.join(w, "results")
def read(p):
    try: return open(p).read()
    except OSError: return ""
env = dict(l.split(": ", 1) for l in read(os.path.join(w, "env.txt")).splitlines() if ": " in l)
g = env.get("gpu", "").split(", ")
dev = ("%s (%s, driver %s, compute capability %s)" % tuple(g[:4]) if len(g) >= 4
       else "no GPU: " + env.get("cpu", "?"))
out = []
P = out.append
P("### %s, %s build (`bench/gpu_suite.sh%s%s`, commit %s, %s)" % (
    dev, env.get("variant", "?"), " --variant " + forced if forced else "",
    " --small" if mode == "small" else "", env.get("commit", "?"), env.get("date", "?")))
P("")
P("Host: %s, %s. %s" % (env.get("cpu", "?"), env.get("memory", "?"),
                        ("CUDA: " + env["nvcc"]) if "nvcc" in env else ""))
P("")
stages = [l.split("\t") for l in read(os.path.join(w, "stages.tsv")).splitlines() if l]
P("| stage | result | seconds (cap) |")
P("|---|---|---:|")
for s in stages:
    if len(s) >= 4: P("| %s | %s | %s (%s) |" % (s[0], s[1], s[2], s[3]))
P("")
# decode: bench_engine rows "seqs llama engine ratio ..."
dec = {}
for l in read(os.path.join(res, "decode.txt")).splitlines():
    m = re.match(r"\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s", l)
    if m: dec[int(m.group(1))] = (float(m.group(2)), float(m.group(3)), float(m.group(4)))
bb = {}
for l in read(os.path.join(res, "batched.txt")).splitlines():
    c = [x.strip() for x in l.strip().strip("|").split("|")]
    if len(c) >= 8 and c[2].isdigit():
        try: bb[int(c[2])] = float(c[7])
        except ValueError: pass
if dec or bb:
    P("Decode, tokens/s (8-token prompts; bench_engine decode: best of its runs, engine and "
      "llama.cpp's batched loop alternating in one process; llama-batched-bench: S_TG)")
    P("")
    P("| sequences | engine | llama.cpp loop | engine / loop | llama-batched-bench |")
    P("|---:|---:|---:|---:|---:|")
    for n in sorted(set(dec) | set(bb)):
        d = dec.get(n)
        P("| %d | %s | %s | %s | %s |" % (n, "%.1f" % d[1] if d else "-", "%.1f" % d[0] if d else "-",
                                      "%.2f" % d[2] if d else "-", "%.1f" % bb[n] if n in bb else "-"))
    P("")
sw = [l for l in read(os.path.join(res, "switch.txt")).splitlines() if re.match(r"\s*\d+\s", l)]
if sw:
    P("Context switch (bench_engine switch: one sequence's KV snapshot + restore, in RAM and "
      "spilled to disk, against prefilling it again)")
    P("")
    P("| tokens | prefill ms | snapshot MB | save+restore ms | spilled ms | prefill / RAM | prefill / disk |")
    P("|---:|---:|---:|---:|---:|---:|---:|")
    for l in sw: P("| " + " | ".join(l.split()) + " |")
    P("")
ag = []
for f in sorted(os.listdir(res)) if os.path.isdir(res) else []:
    m = re.match(r"agents-(\d+)-(aios|server)\.json$", f)
    if not m: continue
    try: j = json.load(open(os.path.join(res, f)))
    except Exception: continue
    ag.append((int(m.group(1)), m.group(2), j))
cmds = read(os.path.join(res, "commands.txt")).strip()
if cmds:
    P("Commands (MODEL.gguf: `aios model create-test MODEL.gguf --shape %s`; "
      "llama-server: with -ngl 99):" % ("tiny" if mode == "small" else "qwen2.5-0.5b"))
    P("")
    P("```")
    P(cmds)
    P("```")
    P("")
if ag:
    P("Agents (aios bench agents, the workload of bench/agents_suite.sh; aios fair with n_parallel "
      "= agents, against llama-server -np agents -ngl 99)")
    P("")
    P("| agents | target | makespan s | call p50 / p95 s | Jain | prompt computed / sent |")
    P("|---:|---|---:|---|---:|---|")
    mk = {}
    for n, side, j in sorted(ag, key=lambda x: (x[0], x[1])):
        t = j.get("tokens", {})
        mk[(n, side)] = j.get("makespan_s")
        P("| %d | %s | %.2f | %.2f / %.2f | %.3f | %s / %s |" % (
            n, "aios" if side == "aios" else "llama-server", j["makespan_s"], j["latency_s"]["p50"],
            j["latency_s"]["p95"], j["jain_fairness"], t.get("prompt_computed", "-"), t.get("prompt", "-")))
    P("")
    for n in sorted({a[0] for a in ag}):
        a, s = mk.get((n, "aios")), mk.get((n, "server"))
        if a and s: P("- %d agents: aios / llama-server makespan %.2fx" % (n, a / s))
    P("")
open(os.path.join(os.environ["OUT"], "summary.md"), "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
}

# ---- the driver ------------------------------------------------------------

# name, estimate on an H100 (s), cap (s)
PLAN="detect 2 20
sysroot 5 60
build 270 420
tools 60 240
model 20 90
decode 40 90
batched 20 60
switch 15 60
agents 90 200
summary 2 20"

plan() {
    echo "gpu_suite plan (variant ${VARIANT:-detected}, $MODE sizes; whole budget ${BUDGET}s; estimates for an H100 with 16 cores):"
    echo "$PLAN" | while read -r n est cap; do
        skip_stage "$n" && note=" (skipped)" || note=""
        printf '  %-8s ~%4ss  cap %4ss%s\n' "$n" "$est" "$((cap * CAP_SCALE))" "$note"
    done
    echo "  total ~$(echo "$PLAN" | awk '{t += $2} END {print t}')s (estimates: no GPU run has timed them yet)"
    echo "  (each cap is also cut to what is left of the budget; if the build runs long, the"
    echo "  benchmarks can be run by a second call on the still-warm machine: --skip-build)"
    echo "  results: $OUT"
}

skip_stage() {
    case "$1" in
        detect | summary) return 1 ;;
        sysroot | build | tools | model) [ "$ONLY" = bench ] && return 0 ;;
        *) [ "$ONLY" = build ] && return 0 ;;
    esac
    return 1
}

run_stage() { # name cap
    name=$1
    cap=$(($2 * CAP_SCALE))
    now=$(date +%s)
    left=$(( $(cat "$W/deadline") - now ))
    [ "$name" = summary ] || left=$((left - 20))
    [ "$cap" -gt "$left" ] && cap=$left
    if [ "$cap" -lt 5 ]; then
        printf '%s\tskipped: no time left\t0\t%s\n' "$name" "$cap" >>"$W/stages.tsv"
        log "$name: skipped, no time left"
        return 1
    fi
    log "$name (cap ${cap}s)"
    export STAGE_END=$((now + cap))
    rc=0
    timeout -k 5 "$cap" "$SELF" __stage "$name" >"$LOGS/$name.log" 2>&1 || rc=$?
    dt=$(( $(date +%s) - now ))
    case $rc in
        0) r=ok ;;
        124 | 137) r="timed out" ;;
        *) r="failed (rc $rc)" ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$r" "$dt" "$cap" >>"$W/stages.tsv"
    log "$name: $r in ${dt}s"
    [ $rc = 0 ] || tail -n 15 "$LOGS/$name.log" >&2
    return $rc
}

main() {
    if [ "${1:-}" = __stage ]; then
        shift
        stage_main "$@"
        exit $?
    fi
    MODE=full
    VARIANT=""
    ONLY=all
    BUDGET=""
    while [ $# -gt 0 ]; do
        case $1 in
            --pack) pack; exit 0 ;;
            --cpu | --dry-run) MODE=small VARIANT=cpu ;;
            --small) MODE=small ;;
            --variant)
                case "${2:-}" in cpu | cuda | vulkan) VARIANT=$2 ;; *) die "--variant: cpu, cuda or vulkan" ;; esac
                shift ;;
            --plan) PLAN_ONLY=1 ;;
            --only) [ "${2:-}" = build ] || die "--only takes: build"; ONLY=build; shift ;;
            --skip-build) ONLY=bench ;;
            --budget) BUDGET=$2; shift ;;
            -h | --help) sed -n '2,/^set -eu/p' "$SELF" | sed 's/^# \{0,1\}//; /^set -eu/d'; exit 0 ;;
            *) die "unknown option $1 (see --help)" ;;
        esac
        shift
    done
    [ -n "$BUDGET" ] || { [ "$MODE" = small ] && BUDGET=7200 || BUDGET=470; }
    # a 2-core machine builds llama.cpp's tools in minutes, not seconds
    CAP_SCALE=1
    [ "$MODE" = small ] && CAP_SCALE=8
    setup
    plan
    [ "${PLAN_ONLY:-0}" = 1 ] && exit 0
    echo $(( $(date +%s) + BUDGET )) >"$W/deadline"
    if [ "$ONLY" != bench ]; then
        rm -f "$W/stages.tsv" "$W/variant" "$W/sysroot.env" "$W/arch.env" "$W/path.env"
    else
        [ -f "$W/variant" ] || die "--skip-build: no earlier build in $W"
        rm -f "$W/stages.tsv"
    fi
    rm -f "$RES"/* "$LOGS"/*
    failed=0
    run_stage detect 20 || failed=1
    if [ $failed = 0 ] && [ "$ONLY" != bench ]; then
        for s in sysroot build tools model; do
            cap=$(echo "$PLAN" | awk -v n=$s '$1 == n {print $3}')
            run_stage "$s" "$cap" || { failed=1; break; }
        done
    fi
    if [ $failed = 0 ] && [ "$ONLY" != build ]; then
        for s in decode batched switch agents; do
            cap=$(echo "$PLAN" | awk -v n=$s '$1 == n {print $3}')
            run_stage "$s" "$cap" || true
        done
    fi
    run_stage summary 20 || true
    # what comes back: at most 8 files
    {
        for f in "$W/env.txt" "$W/stages.tsv" "$RES"/*; do
            [ -f "$f" ] || continue
            echo "===== $(basename "$f")"
            cat "$f"
        done
    } >"$OUT/results.txt"
    tar -czf "$OUT/logs.tar.gz" -C "$W" logs results env.txt 2>/dev/null || true
    log "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
    [ $failed = 0 ]
}

stage_main() {
    name=$1
    if [ -z "$BUILD" ] && [ -f "$W/variant" ]; then
        v=$(cat "$W/variant")
        BUILD=build
        [ "$v" = cpu ] || BUILD=build-$v
    fi
    [ -f "$W/arch.env" ] && . "$W/arch.env"
    [ -f "$W/path.env" ] && . "$W/path.env"
    [ -f "$W/sysroot.env" ] && . "$W/sysroot.env"
    export PATH="$W/bin:$PATH"
    "st_$name"
}

main "$@"
