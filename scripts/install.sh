#!/usr/bin/env bash
# Installs improv: a release build optimized for size (the `dist` profile in Cargo.toml), without
# debug info in the installed binary; its line tables are kept in a separate file that gdb, perf
# and addr2line find through a debug link.
#
#   scripts/install.sh [--no-default-features] [PREFIX]     (PREFIX: default ~/.local)
#
# PREFIX/bin/improv               the binary: symbols (function names) kept, debug sections removed
# PREFIX/bin/.debug/improv.debug  its debug info (objcopy --only-keep-debug), named by the binary's
#                                 .gnu_debuglink; gdb and perf look in bin/.debug/ by themselves
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

cargo build --profile dist --quiet -p improv "${features[@]}"
mkdir -p "$prefix/bin/.debug"
built=target/dist/improv
objcopy --only-keep-debug "$built" "$prefix/bin/.debug/improv.debug"
tmp="$(mktemp "$prefix/bin/.improv.XXXXXX")"
objcopy --strip-debug --add-gnu-debuglink="$prefix/bin/.debug/improv.debug" "$built" "$tmp"
chmod 755 "$tmp"
mv -f "$tmp" "$prefix/bin/improv"
echo "installed $prefix/bin/improv ($(du -h "$prefix/bin/improv" | cut -f1); debug info in $prefix/bin/.debug/improv.debug)" >&2
