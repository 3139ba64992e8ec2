#!/usr/bin/env bash
# Installs what improv-serve's tests need on a fresh Debian machine, and nothing else:
#   - chromium and chromium-driver: the end-to-end browser test (tests/all/browser.rs);
#   - python3 with the official `openai` package: the client tests (tests/all/openai_python*.rs);
#   - schemathesis (`st`): the OpenAPI document against the server (tests/all/schemathesis.rs);
#   - node and the official MCP TypeScript SDK, which improv-mcp's setup installs under
#     crates/improv-mcp/tests/servers: the /mcp client test (tests/all/mcp_http_errors.rs).
# Safe to run again: it installs only what is missing.
set -euo pipefail

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)

if [ "${#packages[@]}" -gt 0 ]; then
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

pip_install() {
  # Debian's own Python refuses pip installs outside a virtual environment (PEP 668) unless told.
  python3 -m pip install --quiet "$@" || python3 -m pip install --quiet --break-system-packages "$@"
}
python3 -c 'import openai' >/dev/null 2>&1 || pip_install 'openai>=1'
command -v st >/dev/null 2>&1 || pip_install 'schemathesis>=4.32,<5'

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sdk="$here/../improv-mcp/tests/servers/node_modules/@modelcontextprotocol/sdk"
[ -d "$sdk" ] || (cd "$here/../improv-mcp/tests/servers" && npm ci --no-audit --no-fund)

chromium --version
chromedriver --version
python3 -c 'import openai; print("openai", openai.__version__)'
st --version
node -e "console.log('mcp sdk', require('$sdk/package.json').version)"
