#!/usr/bin/env bash
# Crash-tests the durable log with real processes: N rounds of a child
# appending and reporting durable indexes, kill -9, reopen, verify.
# Usage: scripts/crash-storage.sh [N=500] [SEED=1]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin ramcoord
exec target/release/ramcoord storage-crash --iterations "${1:-500}" --seed "${2:-1}"
