#!/bin/sh
# Installs the Debian packages aios needs, if any are missing.
# As root it runs apt-get itself; otherwise it prints the exact command and
# stops with status 1. Called by `make`, `make test` and `make run`; extra
# package names given as arguments are installed too (`make ui-test` asks
# for chromium this way; `make GPU=vulkan` and `make gpu-test` for the Vulkan
# build's libvulkan-dev glslc spirv-headers mesa-vulkan-drivers vulkan-tools).
set -eu

PKGS="$* build-essential clang libclang-rt-14-dev cmake pkg-config git nodejs npm libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libyaml-dev libsqlite3-dev sqlite3 libpq-dev postgresql libcmocka-dev bubblewrap curl python3"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        # nodejs/npm may come from elsewhere (nvm, nodesource): accept any on PATH
        case "$p" in
            nodejs) command -v node >/dev/null 2>&1 && continue ;;
            npm) command -v npm >/dev/null 2>&1 && continue ;;
            # python3 (for Python agents) may come from pyenv or elsewhere
            python3) command -v python3 >/dev/null 2>&1 && continue ;;
        esac
        missing="$missing $p"
    fi
done

[ -z "$missing" ] && exit 0

echo "deps: missing Debian packages:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || true
    apt-get install -y -q --no-install-recommends $missing >&2
else
    echo "deps: run this as root, then retry:" >&2
    echo "  sudo apt-get install -y$missing" >&2
    exit 1
fi
