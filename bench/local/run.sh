#!/usr/bin/env bash
# Benchmarks the embedded model (improv-local) against llama.cpp's own llama-bench on the same
# GGUF, prompt length and threads, and the second turn of a 20-turn conversation with and without
# the prefix cache. Prints a table.
#
#   bench/local/run.sh [--threads N] [--gen 128] [--reps 3]
#
# Environment: IMPROV_TEST_GGUF (the model; default: fetched with scripts/fetch-model.sh),
# BENCH_DIR (build folder, default target/bench-local), THREADS (default: all cores).
#
# Both sides are built for this CPU: llama-bench with llama.cpp's default GGML_NATIVE=ON, and
# improv-local with RUSTFLAGS="-C target-cpu=native", which makes llama-cpp-sys-2 build its
# llama.cpp with GGML_NATIVE=ON too. llama-bench is not in the llama.cpp copy that
# llama-cpp-sys-2 vendors (it strips tools/), so it is built from the full llama.cpp tree inside
# the llama-cpp-python source package from PyPI. Needs cmake, a C++ compiler and python3 with pip;
# the first run compiles llama.cpp twice (10-20 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."

BENCH_DIR="${BENCH_DIR:-target/bench-local}"
THREADS="${THREADS:-$(nproc)}"
MODEL="${IMPROV_TEST_GGUF:-$(scripts/fetch-model.sh)}"
REF_VERSION="0.3.36"
REF_DIR="$BENCH_DIR/llama-bench"
REF_BIN="$REF_DIR/build/bin/llama-bench"
mkdir -p "$BENCH_DIR"

if [ ! -x "$REF_BIN" ]; then
    echo "building llama-bench from llama-cpp-python $REF_VERSION's llama.cpp..." >&2
    mkdir -p "$REF_DIR"
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$REF_DIR" \
        "llama-cpp-python==$REF_VERSION" >&2
    tar xzf "$REF_DIR/llama_cpp_python-$REF_VERSION.tar.gz" -C "$REF_DIR"
    SRC="$REF_DIR/llama_cpp_python-$REF_VERSION/vendor/llama.cpp"
    cmake -S "$SRC" -B "$REF_DIR/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON >&2
    cmake --build "$REF_DIR/build" --target llama-bench -j "$(nproc)" >&2
fi

echo "building the improv-local benchmark (release, target-cpu=native)..." >&2
RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR="$BENCH_DIR/native" \
    cargo build --release -q -p improv-local --example bench >&2

exec "$BENCH_DIR/native/release/examples/bench" --model "$MODEL" --threads "$THREADS" \
    --reference "$REF_BIN" "$@"
