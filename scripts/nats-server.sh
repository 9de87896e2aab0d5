#!/usr/bin/env bash
# Finds a usable nats-server (2.10 or newer) and prints its absolute path on stdout; every
# other message goes to stderr, so `NATS_SERVER_BIN=$(scripts/nats-server.sh)` works.
#
# Order:
#   1. $NATS_SERVER_BIN if set (an error if it is missing or older than 2.10);
#   2. nats-server on PATH, then /usr/sbin/nats-server, if 2.10 or newer (older ones are skipped);
#   3. .tools/nats-server-<suite>/usr/sbin/nats-server, extracted by an earlier run (no network);
#   4. Debian's nats-server package of <suite>, fetched with a private apt source list and state
#      dir under .tools/apt-<suite>/ and unpacked with dpkg-deb -x into .tools/nats-server-<suite>/.
#      Nothing system-wide is written: /etc/apt, /var/lib/apt and the installed packages are
#      left alone, so this works as root and, where apt allows it, as an ordinary user.
#
# NATS_SERVER_SUITE picks the Debian suite (default sid, the newest nats-server Debian ships).
# Set explicitly (e.g. NATS_SERVER_SUITE=trixie, 2.10.x: the oldest supported), it skips 1 and 2
# and uses that suite's package from .tools/, fetching it if needed.
# To refetch a suite, remove .tools/nats-server-<suite> (or run make distclean).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=$ROOT/.tools
MIRROR=${NATS_SERVER_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
MIN=2.10

log() { echo "nats-server.sh: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# version_of <binary>: prints "2.15.1" from `nats-server: v2.15.1`; fails if it cannot run.
version_of() {
  local out
  if command -v timeout >/dev/null 2>&1; then
    out=$(timeout 10 "$1" --version 2>&1) || return 1
  else
    out=$("$1" --version 2>&1) || return 1
  fi
  [[ $out =~ v([0-9]+)\.([0-9]+)(\.([0-9]+))? ]] || return 1
  echo "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.${BASH_REMATCH[4]:-0}"
}

# supported <version>: 2.10 or newer?
supported() {
  local major minor
  IFS=. read -r major minor _ <<<"$1"
  ((major > 2 || (major == 2 && minor >= 10)))
}

# absolute <path>: the path made absolute (symlinks are kept as they are).
absolute() {
  case $1 in
    /*) echo "$1" ;;
    *) echo "$PWD/${1#./}" ;;
  esac
}

# use <binary> <version>: print the result and stop.
use() {
  log "using nats-server $2: $1"
  echo "$1"
  exit 0
}

suite=${NATS_SERVER_SUITE:-}
explicit_suite=${suite:+yes}
suite=${suite:-sid}
[[ $suite =~ ^[a-z][a-z0-9.-]*$ ]] || die "NATS_SERVER_SUITE='$suite' is not a Debian suite name (e.g. sid, trixie)"

if [ -n "$explicit_suite" ]; then
  [ -z "${NATS_SERVER_BIN:-}" ] ||
    log "NATS_SERVER_SUITE=$suite is set: ignoring NATS_SERVER_BIN=$NATS_SERVER_BIN"
else
  # 1. NATS_SERVER_BIN
  if [ -n "${NATS_SERVER_BIN:-}" ]; then
    bin=$NATS_SERVER_BIN
    if [[ $bin != */* ]]; then
      bin=$(command -v -- "$bin") || die "NATS_SERVER_BIN=$NATS_SERVER_BIN: not found on PATH"
    fi
    [ -f "$bin" ] && [ -x "$bin" ] ||
      die "NATS_SERVER_BIN=$NATS_SERVER_BIN: no such executable file (unset it to find or fetch one)"
    v=$(version_of "$bin") ||
      die "NATS_SERVER_BIN=$NATS_SERVER_BIN: \`$bin --version\` does not print a nats-server version"
    supported "$v" ||
      die "NATS_SERVER_BIN=$NATS_SERVER_BIN is nats-server $v; $MIN or newer is required (unset it to fetch Debian's newest into .tools/)"
    use "$(absolute "$bin")" "$v"
  fi

  # 2. PATH, then /usr/sbin (Debian's place, not on every user's PATH)
  seen=
  for bin in "$(command -v nats-server 2>/dev/null || true)" /usr/sbin/nats-server; do
    [ -n "$bin" ] && [ -f "$bin" ] && [ -x "$bin" ] || continue
    bin=$(absolute "$bin")
    [ "$bin" != "$seen" ] || continue
    seen=$bin
    if ! v=$(version_of "$bin"); then
      log "skipping $bin: \`--version\` does not print a nats-server version"
    elif ! supported "$v"; then
      log "skipping $bin: nats-server $v is older than $MIN"
    else
      use "$bin" "$v"
    fi
  done
fi

# 3. already extracted into .tools/
dest=$TOOLS/nats-server-$suite
bin=$dest/usr/sbin/nats-server

reuse() {
  [ -x "$bin" ] || return 1
  local v
  if v=$(version_of "$bin") && supported "$v"; then
    use "$bin" "$v"
  fi
  log "ignoring $bin (${v:-no version}); fetching it again"
  return 1
}
reuse || true

# 4. fetch Debian's package with a private apt configuration
command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 ||
  die "no nats-server $MIN or newer found, and apt-get/dpkg-deb are missing to fetch Debian's; install nats-server >= $MIN and set NATS_SERVER_BIN"
[ -r "$KEYRING" ] ||
  die "$KEYRING is missing (package debian-archive-keyring); cannot verify Debian's packages. Install nats-server >= $MIN and set NATS_SERVER_BIN"
mkdir -p "$TOOLS" 2>/dev/null && [ -w "$TOOLS" ] || die "$TOOLS is not writable"

# One fetch per suite at a time (make -j, parallel CI steps); the winner's result is reused.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$TOOLS/.nats-server-$suite.lock"
  flock 9
  reuse || true
fi

apt=$TOOLS/apt-$suite
mkdir -p "$apt/etc" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/deb"
echo "deb [signed-by=$KEYRING] $MIRROR $suite main" >"$apt/etc/sources.list"
# Only our source list, lists and caches; no locks on the system's dirs, no pinning from
# /etc/apt/preferences*. apt.conf.d is still read (proxies). As root, apt warns that the
# download runs unsandboxed because _apt cannot write into .tools: harmless.
opts=(
  -q
  -o "Dir::Etc::SourceList=$apt/etc/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o Dir::Etc::Preferences=/dev/null
  -o Dir::Etc::PreferencesParts=/dev/null
  -o "Dir::State::Lists=$apt/lists"
  -o "Dir::Cache=$apt/cache"
  -o Debug::NoLocking=1
  -o Acquire::Languages=none
)
log "fetching nats-server from Debian $suite ($MIRROR) into $dest (private apt state in $apt)"
apt-get "${opts[@]}" update >&2 || die "apt-get update for Debian $suite failed (network? suite name?)"
rm -f "$apt"/deb/nats-server_*.deb
(cd "$apt/deb" && apt-get "${opts[@]}" download nats-server) >&2 ||
  die "apt-get download nats-server from Debian $suite failed"
debs=("$apt"/deb/nats-server_*.deb)
[ -f "${debs[0]}" ] || die "apt-get download left no nats-server_*.deb in $apt/deb"

tmp=$(mktemp -d "$TOOLS/.nats-server-$suite.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "${debs[0]}" "$tmp" || die "dpkg-deb -x ${debs[0]} failed"
[ -x "$tmp/usr/sbin/nats-server" ] || die "${debs[0]} has no usr/sbin/nats-server"
v=$(version_of "$tmp/usr/sbin/nats-server") ||
  die "the nats-server from ${debs[0]} does not run here"
supported "$v" || die "Debian $suite ships nats-server $v, older than $MIN; pick a newer NATS_SERVER_SUITE"
rm -rf "$dest"
mv "$tmp" "$dest"
# The package lists, apt's caches and the .deb are only needed for a fetch (~100 MB for sid): drop them.
rm -rf "$apt/lists" "$apt/cache" "$apt/deb"
log "extracted $(basename "${debs[0]}")"
use "$bin" "$v"
