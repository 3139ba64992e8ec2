#!/usr/bin/env bash
# Installs what improv-serve's tests need on a fresh Debian machine, and nothing else:
#   - chromium and chromium-driver: the end-to-end browser test (tests/browser.rs);
#   - python3 with the official `openai` package: the client test (tests/openai_python.rs).
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
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)

if [ "${#packages[@]}" -gt 0 ]; then
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

if ! python3 -c 'import openai' >/dev/null 2>&1; then
  # Debian's own Python refuses pip installs outside a virtual environment (PEP 668) unless told.
  python3 -m pip install --quiet 'openai>=1' \
    || python3 -m pip install --quiet --break-system-packages 'openai>=1'
fi

chromium --version
chromedriver --version
python3 -c 'import openai; print("openai", openai.__version__)'
