#!/bin/sh
# Fetches, verifies and builds llama.cpp into a cache outside the repository.
#
# Source: the npm package node-llama-cpp@3.22.1 ships llama/gitRelease.bundle,
# a git bundle of llama.cpp at tag v0.5.0. We `npm pack` the package, check
# both pinned sha256 sums, clone the bundle, check out the pinned commit and
# build the static libraries (no curl, no examples, no tools, no server).
#
# Variants: the CPU build is the default; `--gpu vulkan` and `--gpu cuda`
# build the same pinned source with the Vulkan or CUDA backend into a cache
# of their own beside it (llama.cpp-v0.5.0-vulkan, llama.cpp-v0.5.0-cuda).
# A GPU variant clones its source from the CPU cache when that holds the
# pinned commit (git checks the commit id), else from the npm bundle as above.
# The Vulkan variant applies scripts/llama-vulkan-debian12.patch, so that it
# builds with Debian 12's glslc and Vulkan headers (1.3.239): two Intel-only
# shaders that need GL_KHR_cooperative_matrix are left out when glslc lacks
# that extension, and the validation layer's settings (VK_EXT_layer_settings,
# a debug option) are skipped when the headers lack it; with newer tools it
# changes nothing. Each variant writes $PREFIX/link.txt: the extra libraries
# its backend needs at link time (a CMake list), read by CMakeLists.txt.
#
# The cache is complete only when the stamp file exists and names the pinned
# commit; the stamp is written last, so an interrupted build leaves no stamp
# and the next run starts over. Every run also checks that the libraries and
# headers the stamp promises are present and readable archives; if not, the
# cache is removed and rebuilt.
#
# Prints the install prefix on stdout (everything else goes to stderr).
# Usage: scripts/llama.sh [--server] [--gpu vulkan|cuda]
#   --server  also builds llama-server into the cache (benchmarks only)
#   CUDA_ARCHITECTURES=...  overrides CMAKE_CUDA_ARCHITECTURES for --gpu cuda
#   (default: "native" when nvidia-smi sees a GPU at build time, else
#   75-virtual;80-virtual;86-real;89-real;90-real)
set -eu

PKG="node-llama-cpp@3.22.1"
PKG_SHA="a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f"
BUNDLE_SHA="5f5d1105d5df040738d87b8290e5d17e7362131cdcfdb0831618e0ea528b4a51"
COMMIT="de3ff815ea7d559ee917f063901b8986f038abc6"
HERE="$(cd "$(dirname "$0")" && pwd)"
SERVER=0
GPU=""
while [ $# -gt 0 ]; do
    case "$1" in
        --server) SERVER=1 ;;
        --gpu) shift; GPU="${1:-}" ;;
        --gpu=*) GPU="${1#--gpu=}" ;;
        *) echo "llama.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
case "$GPU" in
    ""|cpu|none) GPU="" ;;
    vulkan|cuda) ;;
    *) echo "llama.sh: unknown GPU variant '$GPU' (use vulkan or cuda)" >&2; exit 2 ;;
esac

CPU_CACHE="${AIOS_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aios/llama.cpp-v0.5.0}"
CACHE="$CPU_CACHE${GPU:+-$GPU}"
PREFIX="$CACHE/install"
STAMP="$CACHE/stamp"
LIBS="libllama.a libggml.a libggml-base.a libggml-cpu.a"
case "$GPU" in
    vulkan) LIBS="$LIBS libggml-vulkan.a" ;;
    cuda) LIBS="$LIBS libggml-cuda.a" ;;
esac
JOBS="$(nproc 2>/dev/null || echo 2)"

log() { echo "llama.sh: $*" >&2; }

# what the GPU variant needs on the host; fails naming what is missing
check_gpu_host() {
    case "$GPU" in
    vulkan)
        miss=""
        command -v glslc >/dev/null 2>&1 || miss="$miss glslc"
        { [ -f /usr/include/vulkan/vulkan.h ] || pkg-config --exists vulkan 2>/dev/null; } || miss="$miss libvulkan-dev"
        spirv=""
        for f in /usr/share/cmake/SPIRV-Headers /usr/lib/*/cmake/SPIRV-Headers \
                 /usr/local/share/cmake/SPIRV-Headers "${VULKAN_SDK:-/nonexistent}/share/cmake/SPIRV-Headers"; do
            [ -f "$f/SPIRV-HeadersConfig.cmake" ] && spirv="$f"
        done
        [ -n "$spirv" ] || miss="$miss spirv-headers"
        if [ -n "$miss" ]; then
            log "the Vulkan build needs:$miss (Debian: apt-get install$miss, which make GPU=vulkan does through scripts/deps.sh)"
            exit 1
        fi ;;
    cuda)
        NVCC="$(command -v nvcc 2>/dev/null || true)"
        [ -z "$NVCC" ] && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] && NVCC="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
        if [ -z "$NVCC" ]; then
            log "the CUDA build needs the CUDA toolkit: nvcc was not found on PATH nor in ${CUDA_HOME:-/usr/local/cuda}/bin"
            log "install NVIDIA's CUDA toolkit (nvcc, cudart, cuBLAS; see docs/gpu.md) or set CUDA_HOME"
            exit 1
        fi ;;
    esac
}

# the backend's CMake options, in GPU_ARGS
set_gpu_args() {
    GPU_ARGS=""
    case "$GPU" in
    vulkan) GPU_ARGS="-DGGML_VULKAN=ON" ;;
    cuda)
        GPU_ARGS="-DGGML_CUDA=ON -DGGML_CUDA_NCCL=OFF -DCMAKE_CUDA_COMPILER=$NVCC"
        # "native" needs a visible GPU; without one build for the common
        # data-centre and desktop generations (Turing to Hopper)
        archs="${CUDA_ARCHITECTURES:-}"
        if [ -z "$archs" ] && ! nvidia-smi -L >/dev/null 2>&1; then
            archs="75-virtual;80-virtual;86-real;89-real;90-real"
        fi
        if [ -n "$archs" ]; then
            GPU_ARGS="$GPU_ARGS -DCMAKE_CUDA_ARCHITECTURES=$archs"
        fi ;;
    esac
}

# extra link libraries of the backend, as a CMake list
write_link_txt() {
    case "$GPU" in
    "") printf '' > "$PREFIX/link.txt" ;;
    vulkan) printf 'vulkan' > "$PREFIX/link.txt" ;;
    cuda)
        # the toolkit nvcc belongs to (libcudart, libcublas, libcublasLt);
        # libcuda comes from the driver, its stub links where no driver is
        cudalib="$(dirname "$(dirname "$NVCC")")/lib64"
        drv=""
        [ -e "$cudalib/stubs/libcuda.so" ] && drv="-L$cudalib/stubs;"
        printf '%s' "-L$cudalib;-Wl,-rpath,$cudalib;${drv}cudart;cublas;cublasLt;cuda" > "$PREFIX/link.txt" ;;
    esac
}

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
    [ -z "$GPU" ] || [ -f "$PREFIX/link.txt" ] || return 1
    return 0
}

mkdir -p "$CACHE"
# one builder at a time; others wait
exec 9>"$CACHE/.lock"
flock 9

if check_cache; then
    if [ "$SERVER" = 1 ] && [ ! -x "$CACHE/server/bin/llama-server" ]; then
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
    check_gpu_host

    if [ -n "$GPU" ] && [ -d "$CPU_CACHE/src/.git" ] &&
       git -C "$CPU_CACHE/src" cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
        log "cloning llama.cpp $COMMIT from $CPU_CACHE/src"
        git clone -q --no-checkout "$CPU_CACHE/src" "$CACHE/src" >&2
    else
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
        rm -rf "$CACHE/dl"
    fi
    git -C "$CACHE/src" -c advice.detachedHead=false checkout -q "$COMMIT" >&2
    [ "$(git -C "$CACHE/src" rev-parse HEAD)" = "$COMMIT" ] || { log "bad commit"; exit 1; }

    [ "$GPU" = vulkan ] && git -C "$CACHE/src" apply "$HERE/llama-vulkan-debian12.patch" >&2
    set_gpu_args

    log "building static libraries${GPU:+ with the $GPU backend} with $JOBS jobs (first time only)"
    # shellcheck disable=SC2086  # GPU_ARGS is a list of words
    cmake -S "$CACHE/src" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release $GPU_ARGS \
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
    write_link_txt
    echo "$COMMIT" > "$STAMP.tmp"
    mv "$STAMP.tmp" "$STAMP"
    check_cache || { log "build finished but the cache is incomplete"; exit 1; }
fi

if [ "$SERVER" = 1 ] && [ ! -x "$CACHE/server/bin/llama-server" ]; then
    log "building llama-server (benchmarks only)"
    check_gpu_host
    set_gpu_args
    # shellcheck disable=SC2086
    cmake -S "$CACHE/src" -B "$CACHE/build-server" -DCMAKE_BUILD_TYPE=Release ${GPU_ARGS:-} \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON >&2
    cmake --build "$CACHE/build-server" -j "$JOBS" --target llama-server >&2
    mkdir -p "$CACHE/server/bin"
    cp "$CACHE/build-server/bin/llama-server" "$CACHE/server/bin/"
fi
echo "$PREFIX"
