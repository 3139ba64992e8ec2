#!/usr/bin/env bash
# Installs improv: a release build, without debug info in the installed binary, its line tables
# kept beside it in a separate file that gdb, perf and addr2line find through a debug link.
#
#   scripts/install.sh [--no-default-features] [PREFIX]     (PREFIX: default ~/.local)
#
# PREFIX/bin/improv            the binary: symbols (function names) kept, debug sections removed
# PREFIX/lib/debug/improv.debug its debug info (objcopy --only-keep-debug), named by a
#                              .gnu_debuglink in the binary; debuggers look for it in
#                              PREFIX/lib/debug/ when given `set debug-file-directory`, or beside
#                              the binary.
# --no-default-features builds improv without the embedded model: no llama.cpp, no C++ toolchain
# needed, hosted models only.
set -euo pipefail
cd "$(dirname "$0")/.."
features=()
if [[ "${1:-}" == "--no-default-features" ]]; then
    features=(--no-default-features)
    shift
fi
prefix="${1:-$HOME/.local}"
command -v objcopy >/dev/null || { echo "objcopy not found: install binutils" >&2; exit 1; }

cargo build --release --quiet -p improv "${features[@]}"
mkdir -p "$prefix/bin" "$prefix/lib/debug"
built=target/release/improv
objcopy --only-keep-debug "$built" "$prefix/lib/debug/improv.debug"
tmp="$(mktemp "$prefix/bin/.improv.XXXXXX")"
objcopy --strip-debug --add-gnu-debuglink="$prefix/lib/debug/improv.debug" "$built" "$tmp"
chmod 755 "$tmp"
mv -f "$tmp" "$prefix/bin/improv"
echo "installed $prefix/bin/improv ($(du -h "$prefix/bin/improv" | cut -f1); debug info in $prefix/lib/debug/improv.debug)" >&2
