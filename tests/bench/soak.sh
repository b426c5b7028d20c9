#!/usr/bin/env bash
# The soak benchmark (issue 10, point 1): BERTH_SOAK_N inetd connections
# (default 100,000) through `berth serve` (berth.service on testbed 1, each
# container in its own scope), with the supervisor's RSS, open descriptors
# and threads sampled once a second against containers served. Writes
# docs/soak.png (the plot), docs/soak.json (figures and samples) and
# docs/soak.csv (every sample). Then checks that nothing is left behind:
# scopes, cgroups, mounts, network and mount namespaces, stage processes,
# staging directories, supervisor descriptors. Exits 1 if something is left
# or the supervisor is not flat after warm-up, 2 if the benchmark could not run.
#
#   sudo tests/bench/soak.sh                       # 100,000 connections, 20-40 min on 2 cores
#   sudo BERTH_SOAK_N=2000 tests/bench/soak.sh     # a short try
#
# Environment:
#   BERTH_SOAK_N         connections (default 100000)
#   BERTH_SOAK_THREADS   client threads, closed loop (default 8)
#   BERTH_SOAK_OUT       where the results go (default docs/)
#   BERTH_SOAK_WARMUP    fraction of the run counted as warm-up (default 0.1)
#   BERTH_SOAK_KEEP=1    leave the testbed running at the end
# Ports: 2350 and 2351 on 127.0.0.1 (the testbed shares the host network).
# Not part of tests/ci.sh: it is a benchmark.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
REPO=$PWD
BENCH=$REPO/tests/bench
OUT=${BERTH_SOAK_OUT:-$REPO/docs}
N=${BERTH_SOAK_N:-100000}
THREADS=${BERTH_SOAK_THREADS:-8}
WARMUP=${BERTH_SOAK_WARMUP:-0.1}
PY=/usr/bin/python3
P_COLD=2350 P_WARM=2351
WARM_N=4

log() { echo "soak: $*" >&2; }
die() { echo "soak: ERROR: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root"
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 100 ] || die "BERTH_SOAK_N must be a number >= 100 (got '$N')"
[[ "$THREADS" =~ ^[0-9]+$ ]] && [ "$THREADS" -ge 1 ] || die "BERTH_SOAK_THREADS must be a number >= 1"
WORK=$(mktemp -d /tmp/berth-soak.XXXXXX)
mkdir -p "$OUT"

# ---------------------------------------------------------------- host tools
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    log "installing python3-matplotlib on the host"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null &&
        apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends python3-matplotlib >/dev/null ||
        die "apt-get install python3-matplotlib failed"
fi
for p in $P_COLD $P_WARM; do
    [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] || die "port $p is already in use on this host"
done

# ---------------------------------------------------------------- build
log "cargo build --release --bins"
cargo build --release --bins --quiet || die "cargo build --release failed"
BERTH=$REPO/target/release/berth
PROBE=$REPO/target/release/berth-probe

# ---------------------------------------------------------------- testbed
TB=
cleanup() {
    if [ -n "$TB" ]; then
        if [ "${BERTH_SOAK_KEEP:-0}" = 1 ]; then
            log "testbed kept: $REPO/tests/testbed/in.sh $TB ...; stop with $REPO/tests/testbed/stop.sh $TB"
            return
        fi
        "$REPO/tests/testbed/stop.sh" "$TB" 2>/dev/null
        if mountpoint -q "$TB/rootfs" 2>/dev/null; then log "testbed root still mounted: $WORK left"; return; fi
    fi
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TREE=$(tests/testbed/tree.sh | tail -n1) || die "tests/testbed/tree.sh failed"
TB=$WORK/tb
log "booting the testbed (--userns)"
tests/testbed/boot.sh "$TREE" "$TB" --userns || die "tests/testbed/boot.sh failed"
ROOT=$(cat "$TB/root")
TB_ID=$(cat "$TB/id")
IN() { "$REPO/tests/testbed/in.sh" "$TB" "$@"; }

# ---------------------------------------------------------------- install
log "installing berth and the soak services"
install -m755 "$BERTH" "$ROOT/usr/bin/berth"
install -D -m755 "$PROBE" "$ROOT/usr/lib/berth/berth-probe"
install -m644 "$REPO"/units/*.service "$ROOT/usr/lib/systemd/system/"
mkdir -p "$ROOT/etc/berth/services"
SVC=$ROOT/etc/berth/services
UNITS=$ROOT/etc/systemd/system
rm -f "$SVC"/*.toml
. "$REPO/tests/bench/lib.sh"   # echo_toml
# Both launch paths: a sandbox built per connection, and one taken from a warm pool.
echo_toml 0 >"$SVC/soakcold.toml"
echo_toml $WARM_N >"$SVC/soakwarm.toml"
for s in soakcold:$P_COLD soakwarm:$P_WARM; do
    cat >"$UNITS/berth-${s%%:*}.socket" <<UNIT
[Socket]
ListenStream=127.0.0.1:${s#*:}
FileDescriptorName=${s%%:*}
Service=berth.service
Backlog=4096
UNIT
done
if [ -f "$REPO/packaging/dbus/org.berth.Supervisor1.conf" ]; then
    install -D -m644 "$REPO/packaging/dbus/org.berth.Supervisor1.conf" "$ROOT/usr/share/dbus-1/system.d/org.berth.Supervisor1.conf"
    IN systemctl reload dbus.service 2>/dev/null || true
fi
IN berth check >/dev/null || { IN berth check; die "berth check failed on the soak configuration"; }
IN systemctl daemon-reload
IN systemctl start berth-soakcold.socket berth-soakwarm.socket || die "starting the socket units failed"
IN systemctl start berth.service || die "berth.service did not start: $(IN journalctl -u berth.service -n 20 -o cat --no-pager)"

berth_host_pid() {
    local p
    for p in $(pgrep -x berth); do
        grep -q "$TB_ID" "/proc/$p/cgroup" 2>/dev/null || continue
        [ "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" = "/usr/bin/berth serve " ] && { echo "$p"; return 0; }
    done
    return 1
}
wait_until() { # SECONDS CMD...
    local end=$(( $(date +%s) + $1 )); shift
    until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.2; done
}
count_lines() { grep -c . || true; }
active_scopes() { IN systemctl list-units --plain --no-legend --no-pager --state=active 'berth-soak*.scope' 2>/dev/null | count_lines; }
warm_ready() { [ "$(active_scopes)" -ge $WARM_N ]; }

# What a container could leave behind, one "name value" per line. Taken with
# the warm pool full and no connection open, before and after the run: the two
# must be equal (descriptors: no more after than before).
leftovers() {
    local bp=$1
    echo "scopes_any_state $(IN systemctl list-units --all --plain --no-legend --no-pager 'berth-soak*.scope' | count_lines)"
    echo "failed_units $(IN systemctl list-units --failed --plain --no-legend --no-pager | count_lines)"
    echo "scope_cgroups $(IN find /sys/fs/cgroup -type d -name 'berth-soak*.scope' 2>/dev/null | count_lines)"
    echo "mounts_pid1 $(IN cat /proc/1/mountinfo | count_lines)"
    echo "mounts_supervisor $(IN cat "/proc/$(IN systemctl show -p MainPID --value berth.service)/mountinfo" | count_lines)"
    echo "net_namespaces $(IN lsns -n -t net -o NS | count_lines)"
    echo "mnt_namespaces $(IN lsns -n -t mnt -o NS | count_lines)"
    echo "staging_entries $(IN sh -c 'ls -A /run/berth/root 2>/dev/null' | count_lines)"
    echo "container_processes $(grep -l "$TB_ID" /proc/[0-9]*/cgroup 2>/dev/null | xargs -r grep -l 'berth-soak.*\.scope' 2>/dev/null | count_lines)"
    echo "supervisor_fds $(ls "/proc/$bp/fd" 2>/dev/null | count_lines)"
}
settled() { # the warm pool full again and nothing else running
    [ "$(active_scopes)" = $WARM_N ] &&
        [ "$(IN sh -c 'ls -A /run/berth/root 2>/dev/null' | count_lines)" = "$(awk '$1 == "staging_entries" {print $2}' "$WORK/before.txt")" ]
}

wait_until 60 warm_ready || die "the warm pool of soakwarm did not fill ($(active_scopes) scopes)"
BP=$(berth_host_pid) || die "no berth serve process found"
DRIVE=("$PY" "$BENCH/soak.py" drive --pid "$BP" --port $P_COLD --port $P_WARM --threads "$THREADS")
# A short warm-up outside the record, so that what the first connections set
# up once (the zygote, the slices, the bus objects) is in the baseline.
"${DRIVE[@]}" --n 200 >/dev/null || die "the warm-up connections failed"
wait_until 60 warm_ready || die "the warm pool did not fill again after the warm-up"
sleep 2
leftovers "$BP" >"$WORK/before.txt"

{
    echo "{\"machine\": {"
    echo "\"nproc\": $(nproc),"
    echo "\"cpu\": \"$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)\","
    echo "\"mem_total_kib\": $(awk '/^MemTotal/{print $2}' /proc/meminfo),"
    echo "\"kernel\": \"$(uname -r)\","
    echo "\"host_os\": \"Debian $(cat /etc/debian_version)\","
    echo "\"testbed_systemd\": \"$(IN systemctl --version | head -n1)\","
    echo "\"berth_commit\": \"$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+local changes')\","
    echo "\"loadavg_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
    echo "\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
    echo "}}"
} >"$WORK/machine.json"

# ---------------------------------------------------------------- the run
log "$N connections, $THREADS client threads, ports $P_COLD (warm = 0) and $P_WARM (warm = $WARM_N); supervisor host pid $BP"
"${DRIVE[@]}" --n "$N" --csv "$WORK/soak.csv" --progress 60 >"$WORK/drive.json"
drive_rc=$?
cat "$WORK/drive.json" >&2
[ "$drive_rc" = 0 ] || log "the client reported a failure (rc $drive_rc)"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
IN berth metrics >"$WORK/metrics.txt" 2>/dev/null || true

# ---------------------------------------------------------------- afterwards
log "waiting for the containers to end, then comparing with before the run"
wait_until 180 settled || log "not settled after 180 s: $(active_scopes) active scopes"
sleep 2
leftovers "$BP" >"$WORK/after.txt"
fail=0
left_json=""
while read -r k before; do
    after=$(awk -v k="$k" '$1 == k {print $2}' "$WORK/after.txt")
    if [ "$k" = supervisor_fds ]; then bad=$([ "$after" -le "$before" ] && echo 0 || echo 1)
    else bad=$([ "$after" = "$before" ] && echo 0 || echo 1); fi
    if [ "$bad" = 1 ]; then log "LEFT BEHIND: $k was $before before the run, $after after"; fail=1
    else log "ok: $k $before before, $after after"; fi
    left_json+="${left_json:+, }\"$k\": {\"before\": $before, \"after\": $after, \"ok\": $([ "$bad" = 0 ] && echo true || echo false)}"
done <"$WORK/before.txt"
BP2=$(berth_host_pid)
[ "$BP2" = "$BP" ] || { log "the supervisor changed during the run (pid $BP, now ${BP2:-none})"; fail=1; }

{
    # figures the supervisor counted itself, for the served count's cross-check
    started=$(awk '/^berth_containers_started_total\{.*soak/ {s += $NF} END {print s + 0}' "$WORK/metrics.txt")
    echo "{\"machine_end\": {\"loadavg_end\": \"$LOAD_END\"},"
    failed=$(awk '/^berth_containers_failed_total\{.*soak/ {s += $NF} END {print s + 0}' "$WORK/metrics.txt")
    echo " \"metrics_containers_started_total\": $started, \"metrics_containers_failed_total\": $failed,"
    echo " \"leftovers\": {$left_json, \"all_ok\": $([ $fail = 0 ] && echo true || echo false)}}"
} >"$WORK/extra2.json"
"$PY" - "$WORK/machine.json" "$WORK/extra2.json" >"$WORK/extra.json" <<'PY'
import json, sys
out = {}
for p in sys.argv[1:]:
    out.update(json.load(open(p)))
json.dump(out, sys.stdout)
PY

cp "$WORK/soak.csv" "$OUT/soak.csv"
"$PY" "$BENCH/soak.py" plot --csv "$WORK/soak.csv" --drive "$WORK/drive.json" --extra "$WORK/extra.json" \
    --png "$OUT/soak.png" --json "$OUT/soak.json" --warmup "$WARMUP" >"$WORK/verdict.json" || die "soak.py plot failed"
log "verdict: $(cat "$WORK/verdict.json")"
log "results: $OUT/soak.png, $OUT/soak.json, $OUT/soak.csv"
grep -q '"flat": true' "$WORK/verdict.json" || { log "FAIL: the supervisor is not flat after warm-up"; fail=1; }
[ "$drive_rc" = 0 ] || fail=1
errs=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["errors"])' "$WORK/drive.json")
[ "$errs" = 0 ] || { log "FAIL: $errs connections failed"; fail=1; }
if [ $fail = 0 ]; then log "PASS: flat after warm-up, nothing left behind"; else log "FAIL (see above)"; fi
exit $fail
