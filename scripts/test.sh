#!/usr/bin/env bash
# The project's whole test suite: what `.ci/run` runs and what the README
# tells a newcomer to run. Fails on the first broken step.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== simulator: CI-sized seed sweeps (release build)"
cargo build --release --bin ramcoord
target/release/ramcoord sim --workload raft --seeds "${SIM_SEEDS:-2000}" --faults standard
target/release/ramcoord sim --workload raft --seeds "${SIM_SEEDS_HEAVY:-500}" --faults heavy --first-seed 1000000
target/release/ramcoord sim --workload coordinator --seeds "${SIM_SEEDS:-2000}" --faults standard
target/release/ramcoord sim --workload coordinator --seeds "${SIM_SEEDS_HEAVY:-500}" --faults heavy --first-seed 1000000
echo "== simulator: every planted bug must be caught within 2000 seeds"
target/release/ramcoord sim --list-bugs | while read -r bug workload _; do
  if target/release/ramcoord sim --workload "$workload" --seeds 2000 --faults standard --inject-bug "$bug" > "target/bug-$bug.txt"; then
    echo "planted bug $bug was NOT caught" >&2
    exit 1
  fi
  echo "$bug ($workload): $(grep -c FAILED "target/bug-$bug.txt") of 2000 seeds caught it; first: $(grep -m1 FAILED "target/bug-$bug.txt" | cut -c1-160)"
done
echo "== all tests passed"
