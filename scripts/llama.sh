#!/bin/sh
# Fetches, verifies and builds llama.cpp into a cache outside the repository.
#
# Source: the npm package node-llama-cpp@3.22.1 ships llama/gitRelease.bundle,
# a git bundle of llama.cpp at tag v0.5.0. We `npm pack` the package, check
# both pinned sha256 sums, clone the bundle, check out the pinned commit and
# build the static CPU libraries (no curl, no examples, no tools, no server).
#
# The cache is complete only when the stamp file exists and names the pinned
# commit; the stamp is written last, so an interrupted build leaves no stamp
# and the next run starts over. Every run also checks that the libraries and
# headers the stamp promises are present and readable archives; if not, the
# cache is removed and rebuilt.
#
# Prints the install prefix on stdout (everything else goes to stderr).
# Usage: scripts/llama.sh [--server]   (--server also builds llama-server into
# the cache, for benchmarks only)
set -eu

PKG="node-llama-cpp@3.22.1"
PKG_SHA="a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f"
BUNDLE_SHA="5f5d1105d5df040738d87b8290e5d17e7362131cdcfdb0831618e0ea528b4a51"
COMMIT="de3ff815ea7d559ee917f063901b8986f038abc6"
CACHE="${AIOS_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aios/llama.cpp-v0.5.0}"
PREFIX="$CACHE/install"
STAMP="$CACHE/stamp"
LIBS="libllama.a libggml.a libggml-base.a libggml-cpu.a"
JOBS="$(nproc 2>/dev/null || echo 2)"

log() { echo "llama.sh: $*" >&2; }

check_cache() {
    [ -f "$STAMP" ] || return 1
    [ "$(cat "$STAMP")" = "$COMMIT" ] || return 1
    for h in llama.h gguf.h ggml.h; do
        [ -s "$PREFIX/include/$h" ] || return 1
    done
    for l in $LIBS; do
        [ -s "$PREFIX/lib/$l" ] || return 1
        ar t "$PREFIX/lib/$l" >/dev/null 2>&1 || return 1
    done
    [ -s "$CACHE/src/models/ggml-vocab-qwen2.gguf" ] || return 1
    return 0
}

mkdir -p "$CACHE"
# one builder at a time; others wait
exec 9>"$CACHE/.lock"
flock 9

if check_cache; then
    if [ "${1:-}" = "--server" ] && [ ! -x "$CACHE/server/bin/llama-server" ]; then
        :
    else
        echo "$PREFIX"
        exit 0
    fi
else
    if [ -e "$CACHE/src" ] || [ -e "$PREFIX" ] || [ -e "$STAMP" ]; then
        log "cache at $CACHE is incomplete or corrupt; rebuilding"
    fi
    rm -rf "$CACHE/src" "$CACHE/build" "$PREFIX" "$STAMP" "$CACHE/dl"

    mkdir -p "$CACHE/dl"
    log "fetching $PKG from the npm registry"
    (cd "$CACHE/dl" && npm pack --silent "$PKG" >/dev/null)
    tgz="$CACHE/dl/node-llama-cpp-3.22.1.tgz"
    got="$(sha256sum "$tgz" | cut -d' ' -f1)"
    if [ "$got" != "$PKG_SHA" ]; then
        log "sha256 mismatch for $tgz: got $got, want $PKG_SHA"
        rm -rf "$CACHE/dl"
        exit 1
    fi
    tar -xzf "$tgz" -C "$CACHE/dl" package/llama/gitRelease.bundle
    bundle="$CACHE/dl/package/llama/gitRelease.bundle"
    got="$(sha256sum "$bundle" | cut -d' ' -f1)"
    if [ "$got" != "$BUNDLE_SHA" ]; then
        log "sha256 mismatch for the bundle: got $got, want $BUNDLE_SHA"
        rm -rf "$CACHE/dl"
        exit 1
    fi
    log "cloning llama.cpp $COMMIT"
    git clone -q "$bundle" "$CACHE/src" >&2
    git -C "$CACHE/src" -c advice.detachedHead=false checkout -q "$COMMIT" >&2
    [ "$(git -C "$CACHE/src" rev-parse HEAD)" = "$COMMIT" ] || { log "bad commit"; exit 1; }
    rm -rf "$CACHE/dl"

    log "building static libraries with $JOBS jobs (first time only)"
    cmake -S "$CACHE/src" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
        -DGGML_OPENMP=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
        -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
        -DCMAKE_INSTALL_PREFIX="$PREFIX" >&2
    cmake --build "$CACHE/build" -j "$JOBS" >&2
    cmake --install "$CACHE/build" >&2
    # flatten: some versions install into lib64 or keep ggml libs elsewhere
    mkdir -p "$PREFIX/lib"
    for l in $LIBS; do
        if [ ! -f "$PREFIX/lib/$l" ]; then
            f="$(find "$PREFIX" "$CACHE/build" -name "$l" | head -n1)"
            [ -n "$f" ] && cp "$f" "$PREFIX/lib/$l"
        fi
    done
    echo "$COMMIT" > "$STAMP.tmp"
    mv "$STAMP.tmp" "$STAMP"
    check_cache || { log "build finished but the cache is incomplete"; exit 1; }
fi

if [ "${1:-}" = "--server" ] && [ ! -x "$CACHE/server/bin/llama-server" ]; then
    log "building llama-server (benchmarks only)"
    cmake -S "$CACHE/src" -B "$CACHE/build-server" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON >&2
    cmake --build "$CACHE/build-server" -j "$JOBS" --target llama-server >&2
    mkdir -p "$CACHE/server/bin"
    cp "$CACHE/build-server/bin/llama-server" "$CACHE/server/bin/"
fi
echo "$PREFIX"
