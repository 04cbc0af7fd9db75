#!/usr/bin/env bash
# Real fuzzing of the decoders with AFL++ through cargo-afl, on the stable toolchain.
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]   fuzz each target for SECONDS (default 300), one
#                                            at a time; exits 1 if any crash or hang was saved
#   scripts/fuzz.sh merge TARGET             fold the last run's finds (fuzz/out/TARGET) into
#                                            the committed corpus, minimised with afl-cmin
#
# Targets: frame_reader client_frame token jwks (see fuzz/src/harness.rs and docs/fuzzing.md).
# Installs cargo-afl (which builds AFL++ from its crate) if missing; builds into fuzz/target,
# never the main target dir. Crashes land in fuzz/out/TARGET/default/crashes/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

AFL_MINOR=0.18 # keep in step with `afl` in fuzz/Cargo.toml
TARGETS=(frame_reader client_frame token jwks)

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1

install() {
  if ! cargo afl --version 2>/dev/null | grep -q "^cargo-afl ${AFL_MINOR}\."; then
    cargo install cargo-afl --locked --version "~${AFL_MINOR}"
  fi
  # Builds AFL++ for this toolchain; fails harmlessly when it is already built.
  cargo afl config --build >/dev/null 2>&1 || true
  cargo afl build --release --quiet
}

fuzz_one() {
  local target=$1 seconds=$2
  rm -rf "out/$target"
  mkdir -p out
  echo "== fuzzing $target for ${seconds}s (log: fuzz/out/$target.log)"
  cargo afl fuzz -i "corpus/$target" -o "out/$target" -V "$seconds" "target/release/$target" \
    >"out/$target.log" 2>&1 || { tail -20 "out/$target.log"; return 1; }
  local stats="out/$target/default/fuzzer_stats"
  grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|edges_found|total_edges|saved_crashes|saved_hangs) ' "$stats"
  local found
  found=$(awk '/^saved_(crashes|hangs) /{n += $3} END {print n + 0}' "$stats")
  if [ "$found" -gt 0 ]; then
    echo "!! $target: $found crash/hang inputs in fuzz/out/$target/default/{crashes,hangs}/"
    return 1
  fi
}

merge() {
  local target=$1 all bin
  all=$(mktemp -d)
  cp "corpus/$target"/* "$all"/ 2>/dev/null || true
  cp "out/$target/default/queue"/id:* "$all"/ 2>/dev/null || true
  rm -rf "out/$target.cmin"
  # The bash afl-cmin: the python one that `cargo afl cmin` runs records no coverage from these
  # persistent-mode targets and keeps nothing. -e: edge coverage only, which keeps a few hundred
  # files instead of a thousand.
  bin=$(dirname "$(ls "$HOME"/.local/share/afl.rs/rustc-*/afl.rs-*/afl/bin/afl-fuzz | head -1)")
  PATH="$bin:$PATH" "$bin/afl-cmin.bash" -e -i "$all" -o "out/$target.cmin" -- "target/release/$target" \
    >"out/$target.cmin.log" 2>&1 || { tail -c 2000 "out/$target.cmin.log"; return 1; }
  rm -rf "$all" "corpus/$target"
  mkdir -p "corpus/$target"
  local i=0 f
  for f in "out/$target.cmin"/*; do
    cp "$f" "corpus/$target/$(sha1sum "$f" | cut -c1-16)"
    i=$((i + 1))
  done
  echo "== corpus/$target: $i files"
}

case "${1:-all}" in
  merge)
    install
    merge "${2:?usage: scripts/fuzz.sh merge TARGET}"
    ;;
  all)
    install
    failed=0
    for target in "${TARGETS[@]}"; do fuzz_one "$target" "${2:-300}" || failed=1; done
    exit "$failed"
    ;;
  *)
    install
    fuzz_one "$1" "${2:-300}"
    ;;
esac
