#!/usr/bin/env bash
# The project's whole test suite: what `.ci/run` runs and what the README
# tells a newcomer to run. Fails on the first broken step.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step prints the seconds since the start, so a slow CI run says where
# its time went.
step() { echo "== [${SECONDS}s] $*"; }
# A CI clone is built once and thrown away: incremental caches would only
# add gigabytes to a disk the machine shares with everything else (a CI run
# once failed with ENOSPC). Say how much room there is, for the same reason.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
# Everything after `cargo test` runs the binaries of its profile (`test`:
# optimised, with debug assertions and overflow checks, which the
# simulator's sweeps want anyway): one build of the dependencies instead of
# a second one in release. Release figures come from `ramcoord-bench` run
# by hand (README, Benchmarks).
bin=target/debug
# The suite is built once, with RDMA compiled in: the RDMA tests run in a
# VM at the end, and a second build of every crate above ramcoord-net with
# the feature used to cost CI eight minutes. The tests that need an RDMA
# device are #[ignore]d on the host and run in the VM. The build without
# the feature is still checked, by the first clippy.
rdma_features=(--features ramcoord/rdma,ramcoord-bench/rdma)
df -h . | tail -n 1 | awk '{print "== disk: " $4 " free of " $2}'

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo test (with --features rdma: its libraries first, scripts/rdma-vm.sh installs them)"
DEPS_ONLY=1 scripts/rdma-vm.sh
cargo test --workspace "${rdma_features[@]}"
step "fuzz: lint the fuzz crate, then every decoder target for a bounded time (scripts/fuzz.sh)"
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
# In target/: the fuzz crate's dependencies are the workspace's, already
# checked by the first clippy (its own fuzz/target would check them again).
CARGO_TARGET_DIR="$PWD/target" cargo clippy --manifest-path fuzz/Cargo.toml --locked --all-targets -- -D warnings
# In CI: a smoke run (5 s a target), built without debug info at
# opt-level 1 (17 instrumented binaries link faster; fewer executions per
# second matter little over 5 s). A developer's run keeps fuzz.sh's own
# defaults.
if [ "${CI:-}" = true ]; then
  FUZZ_SECONDS=${FUZZ_SECONDS:-5} CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 scripts/fuzz.sh
else
  scripts/fuzz.sh
fi
step "simulator: CI-sized seed sweeps (the test profile's binary, built by cargo test)"
[ -x "$bin/ramcoord" ] || cargo test --workspace "${rdma_features[@]}" --no-run
"$bin/ramcoord" sim --workload raft --seeds "${SIM_SEEDS:-2000}" --faults standard
"$bin/ramcoord" sim --workload raft --seeds "${SIM_SEEDS_HEAVY:-500}" --faults heavy --first-seed 1000000
# A coordinator seed costs about three raft seeds: CI runs half as many
# (CI's time is bounded; a developer's run keeps 2000 and 500).
coord_seeds=${SIM_SEEDS:-2000}
coord_heavy=${SIM_SEEDS_HEAVY:-500}
if [ "${CI:-}" = true ]; then
  coord_seeds=${SIM_SEEDS:-1000}
  coord_heavy=${SIM_SEEDS_HEAVY:-250}
fi
"$bin/ramcoord" sim --workload coordinator --seeds "$coord_seeds" --faults standard
"$bin/ramcoord" sim --workload coordinator --seeds "$coord_heavy" --faults heavy --first-seed 1000000
step "simulator: every planted bug must be caught within 2000 seeds, by its own invariant (each sweep stops at its first catch)"
"$bin/ramcoord" sim --list-bugs | while read -r bug workload _; do
  if ! "$bin/ramcoord" sim --workload "$workload" --seeds 2000 --faults standard \
      --inject-bug "$bug" --expect-caught --stop-when-caught > "target/bug-$bug.txt"; then
    tail -n 3 "target/bug-$bug.txt" >&2
    echo "planted bug $bug was NOT caught by the invariant it breaks" >&2
    exit 1
  fi
  echo "$(grep '^planted bug' "target/bug-$bug.txt"); first: $(grep -m1 FAILED "target/bug-$bug.txt" | cut -c1-140)"
done
step "benchmark smoke run: compare --quick (every scenario runs; figures are reported, not checked)"
scripts/etcd-cluster.sh install
# Built by `cargo test` (bench/tests/cli.rs), with the same features.
[ -x "$bin/ramcoord-bench" ] || cargo test --workspace "${rdma_features[@]}" --no-run
smoke=$(mktemp -d)
"$bin/ramcoord-bench" compare --quick --json --out "$smoke/results" --dir "$smoke/data" > "$smoke/report.json"
for field in floor_rtt_p50_us floor_fsync_p50_us commit_fsync_p50_us commit_fsync_p99_us \
  commit_memory_p50_us commit_memory_p99_us etcd_put_p50_us fsync_ops_per_s_64 etcd_ops_per_s_64 failover_p50_ms \
  floor_fsync3_p50_us floor_client_p50_us commit_fsync_leader_p50_us commit_memory_leader_p50_us push_1_p50_us push_100_p50_us \
  commit_fsync_insecure_p50_us tls_commit_p50_ratio tls_commit_added_p50_us_memory \
  etcd_native_put_p50_us etcd_native_ops_per_s_64; do
  grep -q "\"$field\":" "$smoke/report.json" || { echo "compare --json lacks $field" >&2; exit 1; }
done
# The scale figures at small sizes: the state's (every point's child
# process runs) and one small real group with 20 light masters (the
# fleet, here in two child processes as 10,000 are, the recovery and
# crash measurements, the JSON's network fields).
"$bin/ramcoord-bench" scale --masters 10,100 --tablets 1000,10000 --reps 1 \
  --cluster-points 20:200 --fleet-per-process 10 --dir "$smoke/scale-data" --json --out "$smoke/results" > "$smoke/scale.json"
for field in snapshot_ms restart_ms recovery_plan_cpu_us points cluster_points \
  commit_p50_ratio_loaded recovery_plan_ms recovery_pushed_ms failure_detection_cpu_pct; do
  grep -q "\"$field\":" "$smoke/scale.json" || { echo "scale --json lacks $field" >&2; exit 1; }
done
grep -q '"cluster_points_failed":\[\]' "$smoke/scale.json" || { echo "scale: a cluster point failed" >&2; exit 1; }
grep -q '"fleet_processes":2' "$smoke/scale.json" || { echo "scale: the light masters did not run in two processes" >&2; exit 1; }
rm -rf "$smoke"
step "RDMA: verbs, transport, ring, fencing and a 3+2 cluster on soft-RoCE in a QEMU VM (scripts/rdma-vm.sh)"
# The binaries `cargo test` built above: same profile, packages and
# features, so this builds nothing.
RDMA_TARGET_DIR="$PWD/target" RDMA_CARGO_SELECT=--workspace PROFILE=test scripts/rdma-vm.sh > target/rdma-vm.log 2>&1 || { tail -n 400 target/rdma-vm.log >&2; echo "RDMA tests failed (log: target/rdma-vm.log)" >&2; exit 1; }
grep -E "^test |test result|^\[ " target/rdma-vm.log
step "clippy with --features rdma"
cargo clippy --workspace --all-targets "${rdma_features[@]}" -- -D warnings
step "all tests passed"
