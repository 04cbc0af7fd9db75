#!/usr/bin/env bash
# The two figures every gateway change reports (docs/capacity.md): bytes per idle connection
# and deliveries per gateway CPU-second, for each build directory given, each measured on a
# fresh local stack of its own (free ports, a temporary data directory), seeded with 300 orgs
# of 50 users:
#   loadgen idle  --connections 15000 --users 15000 --gateway 1 --source-ips 4
#   loadgen bench --users 2000 --rate 300 --duration 60s
#
# Usage: scripts/gateway-figures.sh DIR [DIR ...]
#   DIR holds release builds of threadspace-dev, the services and loadgen, e.g. a clone of the
#   commit before the change built with `cargo build --release --bins`, then this one's
#   target/release. About 4 minutes per DIR; give a DIR twice to see the run-to-run spread.
#   Nothing else should run on the machine meanwhile (the figures are CPU time and memory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ $# -eq 0 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n 2,13p "$0" | sed 's/^# \{0,1\}//'
  [ $# -eq 0 ] && exit 64 || exit 0
fi
for dir in "$@"; do
  for bin in threadspace-dev threadspace-gateway threadspace-api threadspace-bridge loadgen; do
    if [ ! -x "$dir/$bin" ]; then
      echo "gateway-figures: $dir has no $bin (build it with cargo build --release --bins)" >&2
      exit 64
    fi
  done
done

scripts/bootstrap.sh --for-tests >/dev/null
export THREADSPACE_NATS_SERVER="${THREADSPACE_NATS_SERVER:-$PWD/.threadspace/tools/venv/bin/nats-server}"
# 15,000 connections need as many descriptors in loadgen and in the gateway.
ulimit -n 20000

stack=""
stop_stack() {
  if [ -n "$stack" ]; then
    "$current/threadspace-dev" --dir "$stack" clean >/dev/null 2>&1 || true
    rm -rf "$stack"
    stack=""
  fi
}
trap stop_stack EXIT

summary=()
for current in "$@"; do
  current="$(cd "$current" && pwd)"
  stack="$(mktemp -d /tmp/gateway-figures.XXXXXX)"
  # PostgreSQL runs as an unprivileged user: it must be able to enter the data directory.
  chmod 0755 "$stack"
  echo "== $current (stack in $stack)"
  export THREADSPACE_BIN_DIR="$current"
  up_log="$stack.up.log"
  "$current/threadspace-dev" --dir "$stack" up --nats-port 0 --postgres-port 0 --gateway-port 0 \
    --api-port 0 >"$up_log" 2>&1 || { cat "$up_log" >&2; exit 1; }
  "$current/threadspace-dev" --dir "$stack" seed --orgs 300 --users 50 >/dev/null
  idle="$("$current/loadgen" --stack-dir "$stack" idle --connections 15000 --users 15000 \
    --gateway 1 --source-ips 4 | tee -a /dev/stderr | grep -o '[0-9]* bytes per idle connection')"
  bench="$("$current/loadgen" --stack-dir "$stack" bench --users 2000 --rate 300 --duration 60s \
    | tee -a /dev/stderr | grep -o '[0-9]* deliveries per gateway CPU-second')"
  summary+=("$current: $idle, $bench")
  stop_stack
  rm -f "$up_log"
done
echo
printf '%s\n' "${summary[@]}"
