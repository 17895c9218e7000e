#!/usr/bin/env bash
# Runs ramcoord's RDMA tests on soft-RoCE inside a throw-away QEMU VM.
#
# The host needs no RDMA: the guest boots Debian's kernel package into a
# small busybox initramfs holding the rxe modules, the verbs libraries and
# the project's RDMA binaries (built here with --features rdma into
# target/rdma, so the ordinary build is left alone; scripts/test.sh has
# it take them from its own build in target/ instead). Inside, two rxe
# devices sit on a veth pair (10.0.0.1 and 10.0.0.2, traffic forced across
# the wire), and there it runs:
#   1. the RDMA layer and transport tests (net/tests/rdma.rs),
#   2. a cluster of 3 coordinators and 2 masters as processes with
#      --transport rdma (tests/rdma_cluster.rs).
#
#   scripts/rdma-vm.sh            install what is missing, build, boot, test
#   TIMEOUT=400 scripts/rdma-vm.sh
#   FILTER=revoked scripts/rdma-vm.sh     only the tests whose name contains it
#   BENCH=1 scripts/rdma-vm.sh    run `ramcoord-bench rdma` instead of the tests
#   BENCH=1 PARTS=push scripts/rdma-vm.sh   only some parts (verbs,transport,commit,push)
#   BENCH=1 PARTS=commit COMMIT=tcp,rdma,rdma:5000 scripts/rdma-vm.sh
#                                 the commit part over these (rdma:US: masters look
#                                 at their regions every US µs between requests)
#   PERF=1 PARTS=transport scripts/rdma-vm.sh   profile the message round trips instead
#   PERF=1 scripts/rdma-vm.sh     profile the cluster's commit path: `perf record`
#                                 (whole VM, cpu-clock) around `ramcoord-bench rdma
#                                 --parts commit`, once per transport; the reports
#                                 go to bench/results/rdma-perf-<time>.txt
#   DEPS_ONLY=1 scripts/rdma-vm.sh   only install the host packages
#   PROFILE=test scripts/rdma-vm.sh   build with cargo's test profile (what
#                                 scripts/test.sh does: it has built the
#                                 dependencies that way already); the default,
#                                 release, is what BENCH=1 figures mean
#
# Exit status: the tests' (0 = all passed); 124 = the VM timed out; 125 = no
# result line in the console log; 2 = the host lacks something it could not
# install.
set -euo pipefail
cd "$(dirname "$0")/.."

TIMEOUT=${TIMEOUT:-400}
BENCH=${BENCH:-0}
PERF=${PERF:-0}
PARTS=${PARTS:-verbs,transport,commit,push}
COMMIT=${COMMIT:-tcp,rdma}
PROFILE=${PROFILE:-release}
WORK=$(mktemp -d /tmp/ramcoord-rdma-vm.XXXX)
trap 'rm -rf "$WORK"' EXIT
die() { echo "rdma-vm.sh: $*" >&2; exit 2; }

# --- host packages ----------------------------------------------------------
# What a build with the feature needs; the VM needs the rest.
# DEPS_ONLY=1 installs only the first (scripts/test.sh builds its whole
# suite with --features rdma, long before the VM step) and stops.
build_pkgs="libibverbs-dev librdmacm-dev clang libclang-dev pkg-config"
vm_pkgs="qemu-system-x86 linux-image-amd64 rdma-core ibverbs-providers busybox-static cpio kmod"
if [ "${DEPS_ONLY:-0}" = 1 ]; then vm_pkgs=""; fi
need_pkgs=()
for p in $build_pkgs $vm_pkgs; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "rdma-vm.sh: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" || die "cannot install ${need_pkgs[*]}"
fi
if [ "${DEPS_ONLY:-0}" = 1 ]; then exit 0; fi
KV=${KV:-$(ls /lib/modules | sort -V | tail -n1)}
KERNEL=/boot/vmlinuz-$KV
[ -r "$KERNEL" ] || die "no $KERNEL"

# --- the binaries ---------------------------------------------------------------
# A target directory of their own: the feature changes every crate above
# ramcoord-net, and sharing target/ would rebuild the ordinary binaries.
# scripts/test.sh instead builds its whole test suite with the feature
# and points RDMA_TARGET_DIR at target/ and RDMA_CARGO_SELECT at
# --workspace: the same packages and features as its `cargo test`, so the
# build below finds everything built already.
export CARGO_TARGET_DIR=${RDMA_TARGET_DIR:-$PWD/target/rdma}
SELECT=${RDMA_CARGO_SELECT:--p ramcoord-net -p ramcoord -p ramcoord-bench}
echo "rdma-vm.sh: building with --features rdma in $CARGO_TARGET_DIR ($SELECT)" >&2
# The two test targets run in the guest, and bench/tests/cli.rs only so
# that cargo builds the ramcoord-bench binary in the same resolution (an
# integration test's package has its binaries built for it).
build=(cargo test --profile "$PROFILE" $SELECT --features ramcoord/rdma,ramcoord-bench/rdma
    --test rdma --test rdma_cluster --test cli --no-run)
# Build first with the errors shown, then ask cargo (no-op) where they are.
"${build[@]}" -q || die "could not build the RDMA tests and binaries"
# `|| true`: a target cargo did not report is said by the check below,
# not by set -e's silent exit.
ARTIFACTS=$("${build[@]}" --message-format=json 2>/dev/null | grep '"reason":"compiler-artifact"' || true)
exe() { # exe KIND NAME: the executable cargo reported for that target
    { grep "\"kind\":\[\"$1\"\]" <<<"$ARTIFACTS" | grep "\"name\":\"$2\"" || true; } |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1
}
NET_TEST=$(exe test rdma)
CLUSTER_TEST=$(exe test rdma_cluster)
RAMCOORD=$(exe bin ramcoord)
BENCHBIN=$(exe bin ramcoord-bench)
for f in "$NET_TEST" "$CLUSTER_TEST" "$RAMCOORD" "$BENCHBIN"; do
    [ -x "$f" ] || die "cargo reported no executable for one of the RDMA tests or binaries (got '$f')"
done

# --- initramfs ----------------------------------------------------------------
R=$WORK/root
mkdir -p "$R"/usr/{bin,lib/x86_64-linux-gnu/libibverbs,lib64} "$R"/{etc/libibverbs.d,proc,sys,dev,tmp}
ln -s usr/bin "$R/bin"; ln -s usr/bin "$R/sbin"; ln -s usr/lib "$R/lib"; ln -s usr/lib64 "$R/lib64"
cp -L "$(command -v busybox)" "$R/usr/bin/busybox"
cp -L /usr/sbin/ip "$R/usr/bin/ip.full" 2>/dev/null || cp -L /sbin/ip "$R/usr/bin/ip.full"
cp -L "$(command -v rdma)" "$R/usr/bin/rdma"
cp -L "$NET_TEST" "$R/usr/bin/rdma-tests"
cp -L "$CLUSTER_TEST" "$R/usr/bin/rdma-cluster-tests"
cp -L "$RAMCOORD" "$R/usr/bin/ramcoord"
cp -L "$BENCHBIN" "$R/usr/bin/ramcoord-bench"
objs="$NET_TEST $CLUSTER_TEST $RAMCOORD $BENCHBIN $(command -v rdma) /usr/sbin/ip"
if [ "$PERF" = 1 ]; then
    # The guest boots the host's Debian kernel, so the host's perf matches it.
    command -v perf >/dev/null || { apt-get install -y -qq linux-perf >/dev/null || die "no perf"; }
    cp -L "$(command -v perf)" "$R/usr/bin/perf"
    objs="$objs $(command -v perf)"
fi
for prov in /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav*.so; do
    cp -L "$prov" "$R/usr/lib/x86_64-linux-gnu/libibverbs/"
    objs="$objs $prov"
done
cp /etc/libibverbs.d/rxe.driver "$R/etc/libibverbs.d/"
# Shared libraries of everything above.
{ ldd $objs 2>/dev/null || true; } | awk '/=> \//{print $3} /^\t\/lib64/{print $1}' | sort -u |
    while read -r l; do
        case "$l" in
        */ld-linux-x86-64.so.2) cp -L "$l" "$R/usr/lib64/" ;;
        *) cp -L "$l" "$R/usr/lib/x86_64-linux-gnu/" ;;
        esac
    done
[ -e "$R/usr/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$R/usr/lib64/"
for b in $(busybox --list); do [ -e "$R/usr/bin/$b" ] || ln -s busybox "$R/usr/bin/$b"; done
# Kernel modules with their dependencies, in load order. crc32_generic: rxe
# needs the "crc32" crypto driver for its ICRC; rdma_ucm is rdma_cm for
# user space (/dev/infiniband/rdma_cm).
declare -A SEEN
moddeps() {
    local m=${1//-/_} d f
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    for d in $(modinfo -k "$KV" -F depends "$m" | tr ',' ' '); do moddeps "$d"; done
    f=$(modinfo -k "$KV" -F filename "$m")
    case "$f" in /*) echo "$f" ;; esac
}
mkdir -p "$R/modules"
for m in crc32_generic rdma_rxe rdma_ucm veth; do moddeps "$m"; done | while read -r f; do
    case "$f" in
    *.ko.xz) xz -dc "$f" >"$R/modules/$(basename "$f" .xz)" ;;
    *) cp "$f" "$R/modules/" ;;
    esac
    basename "${f%.xz}" >>"$R/modules/order"
done
cat >"$R/init" <<'GUEST'
#!/bin/sh
export PATH=/usr/bin
IP=/usr/bin/ip.full
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
finish() { echo "RDMA_VM_RESULT rc=$1"; sync; poweroff -f; sleep 5; echo o > /proc/sysrq-trigger; }
for m in $(cat /modules/order); do insmod /modules/$m || { echo "insmod $m failed"; finish 3; }; done
$IP link set lo up
$IP link add va type veth peer name vb || finish 4
$IP link set va up; $IP link set vb up
$IP addr add 10.0.0.1/32 dev va
$IP addr add 10.0.0.2/32 dev vb
for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done
rdma link add rxe0 type rxe netdev va || finish 5
rdma link add rxe1 type rxe netdev vb || finish 5
# Make 10.0.0.1 <-> 10.0.0.2 cross the veth pair instead of lo (rxe drops
# looped-back traffic): routes through the other end, both addresses out of
# the local table into table 100, consulted only for packets from va/vb.
$IP route add 10.0.0.2/32 dev va src 10.0.0.1
$IP route add 10.0.0.1/32 dev vb src 10.0.0.2
$IP route del local 10.0.0.1 table local
$IP route del local 10.0.0.2 table local
$IP route add local 10.0.0.1 dev va table 100
$IP route add local 10.0.0.2 dev vb table 100
$IP rule add pref 100 iif va lookup 100
$IP rule add pref 101 iif vb lookup 100
sleep 1
rdma link show
echo "=== ramcoord RDMA tests"
# Registered memory is locked memory; a hundred stand-in masters hold
# more descriptors than the default 1024.
ulimit -l unlimited
ulimit -n 65536
FILTER=$(sed -n 's/.*rdmatests=\([^ ]*\).*/\1/p' /proc/cmdline)
BENCH=$(sed -n 's/.*rdmabench=\([^ ]*\).*/\1/p' /proc/cmdline)
COMMIT=$(sed -n 's/.*rdmacommit=\([^ ]*\).*/\1/p' /proc/cmdline)
PARTS=$(sed -n 's/.*rdmaparts=\([^ ]*\).*/\1/p' /proc/cmdline)
PERF=$(sed -n 's/.*rdmaperf=\([^ ]*\).*/\1/p' /proc/cmdline)
export RAMCOORD_LOG=$(sed -n 's/.*rdmalog=\([^ ]*\).*/\1/p' /proc/cmdline)
export RUST_BACKTRACE=1 RAMCOORD_RDMA_SERVER=10.0.0.1 RAMCOORD_RDMA_HOSTS=10.0.0.1,10.0.0.2
export RAMCOORD_BIN=/usr/bin/ramcoord TMPDIR=/tmp
if [ "$PERF" = 1 ] && [ "$PARTS" = transport ]; then
    # The message round trips (and the verbs they are compared with),
    # whole run profiled.
    echo "=== perf of the message round trips"
    echo -1 > /proc/sys/kernel/perf_event_paranoid; echo 0 > /proc/sys/kernel/kptr_restrict
    perf record -q -e cpu-clock/freq=999/ -e context-switches/period=1/ -a -o /tmp/perf-transport.data -- \
        /usr/bin/ramcoord-bench rdma --hosts 10.0.0.1,10.0.0.2 --ramcoord /usr/bin/ramcoord \
        --parts verbs,transport >/tmp/bench-transport.out 2>/tmp/bench-transport.err
    rc=$?
    echo "PERF_BEGIN"
    echo "## round trips"; echo; cat /tmp/bench-transport.out
    echo; echo "### by process and object"; echo
    perf report -i /tmp/perf-transport.data --stdio -n --sort comm,dso --percent-limit 0.4 2>/dev/null | grep -v "^$"
    echo; echo "### by symbol"; echo
    perf report -i /tmp/perf-transport.data --stdio -n --sort dso,sym --percent-limit 0.4 2>/dev/null | grep -v "^$"
    echo "PERF_END"
elif [ "$PERF" = 1 ]; then
    echo "=== perf of the commit path"
    echo -1 > /proc/sys/kernel/perf_event_paranoid; echo 0 > /proc/sys/kernel/kptr_restrict
    rc=0
    for t in tcp rdma; do
        # The profile covers the measured operations only (not the
        # cluster's start): it starts when the benchmark says it is warm.
        /usr/bin/ramcoord-bench rdma --hosts 10.0.0.1,10.0.0.2 --ramcoord /usr/bin/ramcoord \
            --parts commit --commit-transports $t --commit-ops 1500 >/tmp/bench-$t.out 2>/tmp/bench-$t.err &
        B=$!
        while kill -0 $B 2>/dev/null && ! grep -q measuring /tmp/bench-$t.err; do sleep 0.2; done
        perf record -q -e cpu-clock/freq=999/ -e context-switches/period=1/ -a -o /tmp/perf-$t.data -- sleep 8
        wait $B || rc=1
        echo "PERF_BEGIN"
        echo "## commit over $t"; echo; cat /tmp/bench-$t.out; tail -n 3 /tmp/bench-$t.err
        echo; echo "### CPU by process and object (whole VM, cpu-clock samples)"; echo
        perf report -i /tmp/perf-$t.data --stdio -n --sort comm,dso --percent-limit 0.4 2>/dev/null | grep -v "^$"
        echo; echo "### CPU by symbol"; echo
        perf report -i /tmp/perf-$t.data --stdio -n --sort dso,sym --percent-limit 0.4 2>/dev/null | grep -v "^$"
        echo "PERF_END"
    done
elif [ "$BENCH" = 1 ]; then
    echo "=== ramcoord-bench rdma"
    timeout 600 /usr/bin/ramcoord-bench rdma --hosts 10.0.0.1,10.0.0.2 --ramcoord /usr/bin/ramcoord --parts "$PARTS" --commit-transports "$COMMIT" --json >/tmp/bench.out
    rc=$?
    echo "BENCH_BEGIN"; cat /tmp/bench.out; echo "BENCH_END"
else
    # A hung test (a peer that died mid-exchange) fails here, not at the
    # VM's timeout.
    timeout 120 /usr/bin/rdma-tests --include-ignored --test-threads 1 --nocapture $FILTER
    rc=$?
    if [ $rc = 0 ]; then
        echo "=== ramcoord cluster over RDMA"
        timeout 240 /usr/bin/rdma-cluster-tests --include-ignored --test-threads 1 --nocapture $FILTER
        rc=$?
    fi
fi
for d in rxe0 rxe1; do echo "$d: sent_pkts=$(cat /sys/class/infiniband/$d/ports/1/hw_counters/sent_pkts) rcvd_pkts=$(cat /sys/class/infiniband/$d/ports/1/hw_counters/rcvd_pkts)"; done
finish $rc
GUEST
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) >"$WORK/initrd.img"
echo "rdma-vm.sh: initramfs $(du -h "$WORK/initrd.img" | cut -f1), kernel $KV" >&2

# --- boot -----------------------------------------------------------------------
# TCG: the host's /dev/kvm (nested, kvm_pvm) does not boot a stock kernel.
LOG=$WORK/console.log
set +e
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 2 \
    -kernel "$KERNEL" -initrd "$WORK/initrd.img" -nic none -no-reboot \
    -display none -monitor none -serial stdio \
    -append "console=ttyS0 panic=-1 loglevel=3 rdmatests=${FILTER:-} rdmabench=$BENCH rdmaperf=$PERF rdmaparts=$PARTS rdmacommit=$COMMIT rdmalog=${RAMCOORD_LOG:-warn}" </dev/null | tee "$LOG"
QRC=${PIPESTATUS[0]}
set -e
RC=$(sed -n 's/.*RDMA_VM_RESULT rc=\([0-9]*\).*/\1/p' "$LOG" | tail -n1)
if [ "$QRC" = 124 ]; then RC=124; elif [ -z "$RC" ]; then RC=125; fi
if [ "$BENCH" = 1 ] && [ "$RC" = 0 ]; then
    OUT=bench/results/rdma-$(date -u +%Y-%m-%dT%H-%M-%SZ).md
    { echo "# ramcoord-bench rdma ($(date -u +%FT%TZ), soft-RoCE in a QEMU TCG VM on $(nproc) host cores)"; echo
      sed -n '/BENCH_BEGIN/,/BENCH_END/p' "$LOG" | sed '1d;$d' | tr -d '\r'; } >"$OUT"
    echo "rdma-vm.sh: benchmark written to $OUT" >&2
fi
if [ "$PERF" = 1 ]; then
    OUT=bench/results/rdma-perf-$(date -u +%Y-%m-%dT%H-%M-%SZ).txt
    { echo "# perf of the commit path over TCP and RDMA ($(date -u +%FT%TZ), soft-RoCE in a QEMU TCG VM on $(nproc) host cores)"; echo
      sed -n '/PERF_BEGIN/,/PERF_END/p' "$LOG" | grep -v 'PERF_BEGIN\|PERF_END' | tr -d '\r'; } >"$OUT"
    echo "rdma-vm.sh: profile written to $OUT" >&2
fi
echo "rdma-vm.sh: result rc=$RC" >&2
exit "$RC"
