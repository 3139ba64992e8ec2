#!/usr/bin/env bash
# Installs what improv-mcp's tests and benchmark need on a fresh machine: the reference MCP
# servers and the official TypeScript SDK (npm, pinned by tests/servers/package-lock.json), and
# the `mcp` Python SDK used as a client of `improv mcp`. Needs node 18+, npm and python3 with pip.
# Safe to run again: npm ci reinstalls the same tree; pip skips what is installed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for tool in node npm python3; do
  command -v "$tool" >/dev/null || { echo "ci-setup.sh: $tool is missing; install it first" >&2; exit 1; }
done
(cd "$here/tests/servers" && npm ci --no-audit --no-fund)
python3 -m pip install --quiet "mcp>=1.20"
