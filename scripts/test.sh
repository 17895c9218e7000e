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
echo "== all tests passed"
