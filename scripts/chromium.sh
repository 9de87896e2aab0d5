#!/usr/bin/env bash
# Makes sure Debian's chromium is installed (the browser tests drive it with playwright-core)
# and prints its path on stdout; messages go to stderr. Installs it with apt-get when missing
# (through sudo when not root). Exits non-zero with a clear message when it cannot: the browser
# tests then fail rather than skip.
set -euo pipefail

BIN=${CHROMIUM_BIN:-/usr/bin/chromium}
log() { echo "chromium.sh: $*" >&2; }

if [ ! -x "$BIN" ]; then
  log "$BIN missing: installing Debian's chromium (apt-get install -y chromium)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      log "error: not root and no sudo: install chromium by hand (apt-get install chromium)"
      exit 1
    fi
    SUDO="sudo -n"
  fi
  # Bounded: apt holds its own locks; a stuck network fails the retries below.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq -o Acquire::Retries=3 >&2 ||
    { log "error: apt-get update failed"; exit 1; }
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Acquire::Retries=3 chromium >&2 ||
    { log "error: apt-get install chromium failed (see above)"; exit 1; }
fi
if ! "$BIN" --version 2>/dev/null >&2; then
  log "error: $BIN does not run (see above)"
  exit 1
fi
echo "$BIN"
