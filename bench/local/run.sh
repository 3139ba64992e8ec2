#!/usr/bin/env bash
# Benchmarks the embedded model (improv-local) against llama.cpp's own llama-bench on the same
# GGUF, prompt length and threads, and the second turn of a 20-turn conversation with and without
# the prefix cache. Prints a table.
#
#   bench/local/run.sh [--threads N] [--gen 128] [--reps 3]
#
# Environment: IMPROV_TEST_GGUF (the model; default: fetched with scripts/fetch-model.sh),
# BENCH_DIR (where llama-bench is built, default target/bench-local), THREADS (default: all cores).
#
# Like for like: llama-bench is built from the very llama.cpp source that llama-cpp-sys-2 compiles
# into improv, with the same CPU flags (GGML_NATIVE=OFF, which is what a plain `cargo build` gives
# llama-cpp-sys-2: AVX, AVX2, FMA, F16C, BMI2). llama-cpp-sys-2 strips llama.cpp's tools/ from its
# copy, so the llama-bench sources come from the llama.cpp tree in the llama-cpp-python source
# package on PyPI. llama.cpp is compiled at -O3 on both sides: LLAMA_LIB_PROFILE=Release, since
# llama-cpp-sys-2 otherwise builds it as RelWithDebInfo (-O2) whenever the cargo profile has debug
# info, as the workspace's release profile does. Needs cmake, a C++ compiler and python3 with pip; the first run compiles
# llama.cpp twice (10-20 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."

BENCH_DIR="${BENCH_DIR:-target/bench-local}"
THREADS="${THREADS:-$(nproc)}"
MODEL="${IMPROV_TEST_GGUF:-$(scripts/fetch-model.sh)}"
REF_VERSION="0.3.36"
REF_DIR="$BENCH_DIR/llama-bench"
REF_BIN="$REF_DIR/build/bin/llama-bench"
mkdir -p "$BENCH_DIR"

echo "building the improv-local benchmark (release)..." >&2
# The workspace's own target dir: its release llama.cpp is already built at -O3
# (LLAMA_LIB_PROFILE=Release in .cargo/config.toml), so this compiles only the example.
LLAMA_LIB_PROFILE=Release cargo build --release -q -p improv-local --example local-bench >&2

if [ ! -x "$REF_BIN" ]; then
    echo "building llama-bench from llama-cpp-sys-2's llama.cpp..." >&2
    SYS_SRC="$(cargo metadata --format-version 1 --manifest-path crates/improv-local/Cargo.toml |
        python3 -c 'import json, os, sys; m = json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "llama-cpp-sys-2"))')/llama.cpp"
    rm -rf "$REF_DIR" && mkdir -p "$REF_DIR"
    cp -r "$SYS_SRC" "$REF_DIR/src"
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$REF_DIR" \
        "llama-cpp-python==$REF_VERSION" >&2
    tar xzf "$REF_DIR/llama_cpp_python-$REF_VERSION.tar.gz" -C "$REF_DIR" \
        "llama_cpp_python-$REF_VERSION/vendor/llama.cpp/tools/llama-bench"
    mkdir -p "$REF_DIR/src/tools/llama-bench"
    cp "$REF_DIR/llama_cpp_python-$REF_VERSION/vendor/llama.cpp/tools/llama-bench/"* "$REF_DIR/src/tools/llama-bench/"
    printf 'llama_add_compile_flags()\nadd_subdirectory(llama-bench)\n' > "$REF_DIR/src/tools/CMakeLists.txt"
    cmake -S "$REF_DIR/src" -B "$REF_DIR/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_APP=OFF >&2
    cmake --build "$REF_DIR/build" --target llama-bench -j "$(nproc)" >&2
fi

exec target/release/examples/local-bench --model "$MODEL" --threads "$THREADS" \
    --reference "$REF_BIN" "$@"
