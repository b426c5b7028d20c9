#!/usr/bin/env bash
# The benchmark on testbed 2: cgroup v2 in a qemu VM (TCG; Debian 12, its 6.1
# kernel and systemd 252), with the anchors of tests/bench/run.sh's figure a,
# the cgroup-attach micro-benchmark, and both again with the cgroup2
# hierarchy remounted with `favordynmods`. Not part of tests/ci.sh.
#
#   sudo tests/bench/vm.sh                       # ~20 min with the image cached
#   sudo BERTH_BENCH_QUICK=1 tests/bench/vm.sh   # a few samples, for development
#
# Reuses tests/vm/run.sh (package, cached image, boot) with
# BERTH_VM_GUEST=tests/bench/vm-guest.sh and a results disk; then
# tests/bench/vm-report.py writes docs/benchmarks-vm.json and the section
# "cgroup v2 (testbed 2, qemu TCG)" at the end of docs/benchmarks.md, next to
# testbed 1's ratios from docs/benchmarks.json.
#
# Environment:
#   BERTH_BENCH_QUICK=1       few samples (calibration)
#   BERTH_BENCH_MODES         cgroup2 mount states in order (default
#                             "default favordynmods favordynmods2 default2": A B B A)
#   BERTH_BENCH_PHASES        subset of "cgattach a c" (default all)
#   BERTH_BENCH_OUT           where the results go (default docs/)
#   BERTH_BENCH_KEEP_WORK=1   keep the work directory (console log, results)
#   BERTH_VM_*                passed on to tests/vm/run.sh (BERTH_VM_TIMEOUT: 2400 s here)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
REPO=$PWD
OUT=${BERTH_BENCH_OUT:-$REPO/docs}
log() { echo "bench/vm: $*" >&2; }
die() { echo "bench/vm: ERROR: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root (tests/vm/run.sh)"

if [ "${BERTH_BENCH_QUICK:-0}" = 1 ]; then
    A_ROUNDS=1 A_PER1=6 A_PER8=8 C_N=2 CGA_N=4 FORK_N=50
else
    # TCG is 10-30x slower than the host: fewer connections than testbed 1's 3 x 100 / 3 x 120.
    A_ROUNDS=3 A_PER1=12 A_PER8=16 C_N=6 CGA_N=10 FORK_N=200
fi
MODES=${BERTH_BENCH_MODES:-default favordynmods favordynmods2 default2}
PHASES=${BERTH_BENCH_PHASES:-cgattach a c}

WORK=$(mktemp -d /var/tmp/berth-bench-vm.XXXXXX)
cleanup() { if [ "${BERTH_BENCH_KEEP_WORK:-0}" = 1 ]; then log "work directory kept: $WORK"; else rm -rf --one-file-system "$WORK"; fi; }
trap cleanup EXIT
cat >"$WORK/bench.env" <<ENV
A_ROUNDS=$A_ROUNDS A_PER1=$A_PER1 A_PER8=$A_PER8 C_N=$C_N CGA_N=$CGA_N FORK_N=$FORK_N
PHASES="$PHASES"
MODES="$MODES"
ENV

T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log "tests/vm/run.sh with tests/bench/vm-guest.sh (modes: $MODES; phases: $PHASES)"
BERTH_VM_GUEST=$REPO/tests/bench/vm-guest.sh \
BERTH_VM_PAYLOAD_EXTRA="$REPO/tests/bench/client.py $REPO/tests/bench/cgattach.py $REPO/tests/bench/lib.sh $WORK/bench.env" \
BERTH_VM_GUEST_TIMEOUT=${BERTH_VM_GUEST_TIMEOUT:-2100} \
BERTH_VM_TIMEOUT=${BERTH_VM_TIMEOUT:-2400} \
BERTH_VM_RESULTS=$WORK/results.img \
BERTH_VM_WORK=$WORK/vm \
    tests/vm/run.sh >"$WORK/run.log" 2>&1
RC=$?
cat "$WORK/run.log" >&2
[ -s "$WORK/results.img" ] || die "no results disk from the VM (tests/vm/run.sh exit $RC)"
mkdir -p "$WORK/res"
tar -xf "$WORK/results.img" -C "$WORK/res" || die "the results disk holds no tar (guest failed early?)"
[ $RC = 0 ] || log "warning: tests/vm/run.sh exit $RC (a guest check failed); reporting what was measured"
{
    echo "{"
    echo "\"berth_commit\": \"$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+local changes')\","
    echo "\"host_cpu\": \"$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)\","
    echo "\"host_nproc\": $(nproc),"
    echo "\"host_kernel\": \"$(uname -r)\","
    echo "\"qemu\": \"$(qemu-system-x86_64 --version | head -n1)\","
    echo "\"host_loadavg_start\": \"$LOAD0\","
    echo "\"host_loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
    echo "\"vm_run_s\": $(( $(date +%s) - T0 )),"
    echo "\"vm_timings\": \"$(grep -o 'timings: .*' "$WORK/run.log" | tail -n1)\","
    echo "\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "\"quick\": $([ "${BERTH_BENCH_QUICK:-0}" = 1 ] && echo true || echo false)"
    echo "}"
} >"$WORK/res/host.json"
python3 tests/bench/vm-report.py "$WORK/res" "$OUT" || die "vm-report.py failed"
log "results: $OUT/benchmarks-vm.json, section at the end of $OUT/benchmarks.md ($(( $(date +%s) - T0 )) s)"
exit $RC
