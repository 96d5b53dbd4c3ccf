#!/usr/bin/env bash
# A long fuzzing run of the targets of tests/fuzz.rs whose name contains
# TARGET (e.g. deflate, accept, config, web_config, snapshots, router):
#
#   scripts/fuzz.sh TARGET SECONDS [CASES_PER_ROUND=2000]
#
# The targets run round after round, CASES_PER_ROUND generated cases each,
# every round with a new random seed, until SECONDS have passed. A failure
# stops the run with the shrunk input printed: add it to
# fuzz/corpus/<target>/ with a regression test. Prints the targets, rounds,
# executions and time. Release build, so a round is fast.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS [CASES_PER_ROUND]}
seconds=${2:?usage: scripts/fuzz.sh TARGET SECONDS [CASES_PER_ROUND]}
per_round=${3:-2000}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --quiet --test fuzz --no-run
start=$(date +%s)
rounds=0 tests=0
while [ $(( $(date +%s) - start )) -lt "$seconds" ]; do
  if ! FUZZ_RANDOM_SEED=1 PROPTEST_CASES=$per_round cargo test --release --quiet --test fuzz -- "$target" >"$log" 2>&1; then
    cat "$log"
    echo "target=$target rounds=$rounds: FAILED (the shrunk input is above)" >&2
    exit 1
  fi
  tests=$(grep -oE '[0-9]+ passed' "$log" | head -1 | cut -d' ' -f1)
  [ "${tests:-0}" -gt 0 ] || { echo "no test of tests/fuzz.rs matches $target" >&2; exit 2; }
  rounds=$((rounds + 1))
done
echo "target=$target tests=$tests rounds=$rounds cases=$((rounds * per_round * tests)) seconds=$(( $(date +%s) - start )) findings=0"
