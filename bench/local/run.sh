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
# info, as the workspace's release profile does; the script checks the build it links. Needs
# cmake, a C++ compiler and python3 with pip; the first run compiles llama.cpp twice (10-20
# minutes on 2 cores).
#
# Runs alternate (improv, llama-bench, improv, llama-bench, ...) so that load from other work on
# the machine weighs on both sides; the table gives medians, and improv-local both with its
# default context and with llama-bench's (prompt + generated tokens). Decode is timed from the
# first to the last streamed token: each interval is one decode, one pick and one piece of text
# delivered to the caller, what a user sees.
# crates/improv-local/examples/decode-probe.rs splits a gap further: llama-bench's own loop
# through improv's build of llama.cpp (`--mode raw`), the same with the engine's greedy pick
# (`--mode sample`), and the engine itself (`--mode engine`).
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
BUILD_JSON="$(LLAMA_LIB_PROFILE=Release cargo build --release -q -p improv-local --example local-bench \
    --message-format=json)"
# llama-cpp-sys-2 runs cmake's configure step only once per build dir, so a dir first configured
# without LLAMA_LIB_PROFILE=Release stays at RelWithDebInfo (-O2, about 5% more instructions per
# decoded token) however often the variable is set later. Check what was really linked.
LLAMA_OUT="$(printf '%s\n' "$BUILD_JSON" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "build-script-executed" and "llama-cpp-sys-2" in m.get("package_id", ""):
        print(m["out_dir"])
')"
LLAMA_BUILD_TYPE="$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$LLAMA_OUT/build/CMakeCache.txt" 2>/dev/null || true)"
if [ "$LLAMA_BUILD_TYPE" != "Release" ]; then
    echo "error: the llama.cpp linked into the benchmark ($LLAMA_OUT) was configured as" \
        "'${LLAMA_BUILD_TYPE:-unknown}', not Release (-O3); the comparison would not be like for like." \
        "Rebuild it with: cargo clean --release -p llama-cpp-sys-2 && bench/local/run.sh" >&2
    exit 1
fi

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
