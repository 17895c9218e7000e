#!/usr/bin/env bash
# Builds every fuzz target (fuzz/fuzz_targets/*.rs) with libFuzzer's
# coverage instrumentation on the stable toolchain, then runs each for a
# bounded time from its seed corpus. Fails if any target finds a crash,
# printing the input's path and the crash. See fuzz/README.md.
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS (8) each
#   scripts/fuzz.sh frame record    only these targets
#
# Environment: FUZZ_SECONDS (per target, default 8), FUZZ_TIMEOUT (seconds
# one input may take, default 10), CARGO_TARGET_DIR (default: target/),
# CARGO_BUILD_JOBS (cargo's own). New corpus entries go to a temporary
# directory, never into the committed fuzz/corpus; crash inputs go to
# $CARGO_TARGET_DIR/fuzz-artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
seconds="${FUZZ_SECONDS:-8}"
timeout="${FUZZ_TIMEOUT:-10}"
host=$(rustc -vV | sed -n 's/^host: //p')

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$f" .rs)")
  done
fi

# The codegen flags cargo-fuzz uses with `--sanitizer none` (stable rustc):
# SanitizerCoverage's inline 8-bit counters, PC table and comparison
# tracing for libFuzzer, `cfg(fuzzing)`, and debug assertions and overflow
# checks (a silent wrap-around in a decoder is a finding). `--target` keeps
# them off build scripts and proc macros, which run on the host unlinked
# to libFuzzer.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
unset CARGO_ENCODED_RUSTFLAGS

echo "== fuzz: building ${#targets[@]} targets (release, debug assertions on) into $CARGO_TARGET_DIR/$host/release"
build_start=$SECONDS
bins=()
for t in "${targets[@]}"; do
  bins+=(--bin "$t")
done
cargo build --manifest-path fuzz/Cargo.toml --locked --release --target "$host" "${bins[@]}"
build_secs=$((SECONDS - build_start))
echo "== fuzz: build took ${build_secs}s"

work=$(mktemp -d "${TMPDIR:-/tmp}/ramcoord-fuzz.XXXXXX")
# Targets that go through files (hard_state, disk_open) work in here: in
# memory where there is a tmpfs, so their fsyncs cost nothing.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  scratch=$(mktemp -d /dev/shm/ramcoord-fuzz.XXXXXX)
else
  scratch="$work/scratch"
  mkdir -p "$scratch"
fi
trap 'rm -rf "$work" "$scratch"' EXIT
export RAMCOORD_FUZZ_TMPDIR="$scratch"

corpus_sum() { find fuzz/corpus -type f -print0 | sort -z | xargs -0 cat | cksum; }
corpus_before=$(corpus_sum)

stat() { sed -n "s/^stat::$2: *//p" "$1" | tail -n1; }

run_start=$SECONDS
failed=()
summary=()
for t in "${targets[@]}"; do
  bin="$CARGO_TARGET_DIR/$host/release/$t"
  seeds="fuzz/corpus/$t"
  new="$work/corpus/$t"
  artifacts="$CARGO_TARGET_DIR/fuzz-artifacts/$t"
  log="$work/$t.log"
  mkdir -p "$new" "$artifacts" "$seeds"
  echo "== fuzz: $t (${seconds}s)"
  status=0
  # The first corpus directory receives new inputs; the seeds are only read.
  "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout="$timeout" \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$new" "$seeds" >"$log" 2>&1 || status=$?
  cov=$(grep -E '^#[0-9]+' "$log" | tail -n1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
  line=$(printf '%-18s %10s runs %8s exec/s  %s  %s new' "$t" "$(stat "$log" number_of_executed_units)" \
    "$(stat "$log" average_exec_per_sec)" "${cov:-cov: ?}" "$(stat "$log" new_units_added)")
  summary+=("$line")
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    echo "!! fuzz: $t FAILED (exit $status)" >&2
    crash=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -n1 | sed 's/Test unit written to //' || true)
    echo "!! input: ${crash:-(none written; see the log below)}" >&2
    if [ -n "$crash" ] && [ -f "$crash" ]; then
      echo "!! input (hex, first 512 bytes): $(head -c 512 "$crash" | od -An -tx1 -v | tr -d ' \n')" >&2
      echo "!! reproduce: $bin $crash" >&2
    fi
    # The panic and the stack, without libFuzzer's dictionary noise.
    grep -vE '^(\"|###### |#[0-9]+ +(NEW|REDUCE|pulse|INITED|RELOAD))' "$log" | tail -n 80 >&2
  else
    echo "   $line"
  fi
done
run_secs=$((SECONDS - run_start))

if [ "$(corpus_sum)" != "$corpus_before" ]; then
  echo "!! fuzz: the committed corpus in fuzz/corpus changed during the run" >&2
  failed+=("(corpus)")
fi

echo "== fuzz: summary (build ${build_secs}s, run ${run_secs}s)"
printf '   %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "!! fuzz: failures: ${failed[*]} (inputs in $CARGO_TARGET_DIR/fuzz-artifacts/)" >&2
  exit 1
fi
echo "== fuzz: no crashes"
