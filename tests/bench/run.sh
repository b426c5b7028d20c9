#!/usr/bin/env bash
# The benchmark: berth's figures next to their anchors, measured in one run on
# one testbed (tests/testbed, booted with --userns so limits and accounting are
# real), written to docs/benchmarks.json and rendered to docs/benchmarks.md.
#
#   sudo tests/bench/run.sh                 # full run, ~8 min plus the build
#   sudo BERTH_BENCH_QUICK=1 tests/bench/run.sh   # short run for development
#
# Figures (see docs/benchmarks.md for the method of each):
#   a  inetd cold start, connect -> first byte, 1 and 8 concurrent clients:
#      berth serve (warm = 0 and warm = 8), berth inetd under Accept=yes,
#      systemd Accept=yes bare, systemd Accept=yes with the sandboxing
#      directives of shared/TESTBED.md; /bin/echo hi as the service.
#   b  listen mode, warm: wrk req/s and p99, lighttpd in berth vs the same
#      lighttpd socket-activated by systemd.
#   c  wake from idle: first byte of the first request after the container
#      idled out vs lighttpd's own start-up (systemd-socket-activate execs it
#      on the first connection) and vs systemd restarting it from its socket.
#   f  frozen instead of stopped (freeze_after): first byte of the first request
#      after the container was frozen idle (the same container thawed), next to
#      c's variants; and the memory the frozen lighttpd keeps vs the same one
#      running (scope MemoryCurrent, lighttpd's RSS and PSS). Best run with c.
#   d  1000 concurrent inetd containers (/bin/cat) held open: supervisor RSS,
#      memory per container, start-all and teardown-all times, leftovers.
#   profile  perf tracepoints (fork, exec, unshare, accept, sendmsg, recvmsg)
#      over a few sequential cold starts of each variant, cut into the phases
#      of the critical path by timeline.py; smaps of the supervisor and the
#      kernel's slab caches while the 1000 containers of d are held.
#
# Environment:
#   BERTH_BENCH_QUICK=1     few samples per figure (minutes -> ~2 min)
#   BERTH_BENCH_PHASES      subset of "a b c f d profile" (default: all)
#   BERTH_BENCH_WAKE_N      samples per variant in c and f (default 20, quick 4 / 10)
#   BERTH_BENCH_OUT         where the results go (default: docs/)
#   BERTH_BENCH_BIN         the berth binary to install (default: the release build of
#                           this tree; e.g. a copy of another commit's, for before/after runs)
#   BERTH_BENCH_HOLD        containers for d (default 1000)
#   BERTH_BENCH_STATE       reuse a testbed already booted by boot.sh in this
#                           state dir (not stopped at the end); development only
#   BERTH_BENCH_KEEP=1      leave the testbed running at the end
#   BERTH_BENCH_KEEP_WORK=1 keep the raw files (perf.data, perf script output, per-step JSON)
# Ports: 19101-19131 on 127.0.0.1 (the testbed shares the host network) and
# 19190 for the client-overhead server on the host.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
REPO=$PWD
BENCH=$REPO/tests/bench
OUT=${BERTH_BENCH_OUT:-$REPO/docs}
QUICK=${BERTH_BENCH_QUICK:-0}
PHASES=" ${BERTH_BENCH_PHASES:-a b c f d profile} "
HOLD_N=${BERTH_BENCH_HOLD:-1000}
PY=/usr/bin/python3
CLIENT=("$PY" "$BENCH/client.py")

P_ECHO0=19101 P_ECHO8=19102 P_ECHOI=19103 P_BARE=19111 P_SANDBOXED=19112
P_DIRECT=19121 P_WEBWARM=19122 P_WEBIDLE=19123 P_SSA=19124 P_WEBWAKE=19125 P_WEBFRZ=19126 P_WEBRUN=19127 P_HOLD=19131 P_FLOOR=19190

if [ "$QUICK" = 1 ]; then
    A_ROUNDS=2 A_PER1=15 A_PER8=24 WRK_D=2s WRK_ROUNDS=1 WRK_PAR_ROUNDS=2 C_N=4 PROF_N=5 PROF_WAKE_N=2 PROF_CPU_N=24 PROF_CPU_ROUNDS=1
else
    A_ROUNDS=3 A_PER1=100 A_PER8=120 WRK_D=3s WRK_ROUNDS=6 WRK_PAR_ROUNDS=10 C_N=20 PROF_N=12 PROF_WAKE_N=5 PROF_CPU_N=120 PROF_CPU_ROUNDS=3
fi
F_N=$C_N; [ "$QUICK" = 1 ] && F_N=10
if [ -n "${BERTH_BENCH_WAKE_N:-}" ]; then C_N=$BERTH_BENCH_WAKE_N F_N=$BERTH_BENCH_WAKE_N; fi

log()  { echo "bench: $*" >&2; }
die()  { echo "bench: ERROR: $*" >&2; exit 2; }
now()  { date +%s.%N; }
diff_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }   # A B -> A-B in s, JSON-safe

[ "$(id -u)" = 0 ] || die "must run as root"
[ -x "$PY" ] || die "$PY missing"
T_START=$(now)
WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
RES=$WORK/res          # one JSON file per measurement; assembled at the end
mkdir -p "$RES" "$OUT"

# ---------------------------------------------------------------- host tools
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v strace >/dev/null || need+=(strace)
command -v ss >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
    log "installing on the host: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null &&
        apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
        die "apt-get install ${need[*]} failed"
fi

for p in $P_ECHO0 $P_ECHO8 $P_ECHOI $P_BARE $P_SANDBOXED $P_DIRECT $P_WEBWARM $P_WEBIDLE $P_SSA $P_WEBWAKE $P_WEBFRZ $P_WEBRUN $P_HOLD $P_FLOOR; do
    if [ -z "${BERTH_BENCH_STATE:-}" ] && [ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then
        die "port $p is already in use on this host (the testbed shares the host network)"
    fi
done

# ---------------------------------------------------------------- build
log "cargo build --release --bins"
cargo build --release --bins --quiet || die "cargo build --release failed"
T_BUILT=$(now)
# BERTH_BENCH_BIN=PATH: measure that berth binary instead (another commit's
# release build, side by side with this one).
BERTH_BENCH_BIN=${BERTH_BENCH_BIN:-}
BERTH=${BERTH_BENCH_BIN:-$REPO/target/release/berth}
[ -x "$BERTH" ] || die "no berth binary at $BERTH"
PROBE=$REPO/target/release/berth-probe

# ---------------------------------------------------------------- testbed
FLOOR_PID=
cleanup() {
    [ -n "$FLOOR_PID" ] && kill "$FLOOR_PID" 2>/dev/null
    [ -n "${HOLD_PID:-}" ] && kill "$HOLD_PID" 2>/dev/null
    [ -n "${PERF_PID:-}" ] && kill -INT "$PERF_PID" 2>/dev/null
    local keep=${BERTH_BENCH_KEEP_WORK:-0}
    if [ -z "${BERTH_BENCH_STATE:-}" ] && [ -n "${TB:-}" ]; then
        if [ "${BERTH_BENCH_KEEP:-0}" = 1 ]; then
            log "testbed kept: $REPO/tests/testbed/in.sh $TB ...; stop with $REPO/tests/testbed/stop.sh $TB"
            keep=1
        else
            "$REPO/tests/testbed/stop.sh" "$TB" 2>/dev/null
            # never delete through a root that is still mounted
            if mountpoint -q "$TB/rootfs" 2>/dev/null; then log "testbed root still mounted: $TB left"; keep=1; fi
        fi
    fi
    if [ "$keep" = 1 ]; then log "work directory kept: $WORK"; else rm -rf --one-file-system "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${BERTH_BENCH_STATE:-}" ]; then
    TB=$(realpath -e "$BERTH_BENCH_STATE") || die "no state dir $BERTH_BENCH_STATE"
else
    TREE=$(tests/testbed/tree.sh | tail -n1) || die "tests/testbed/tree.sh failed"
    TB=$WORK/tb
    log "booting the testbed (--userns)"
    tests/testbed/boot.sh "$TREE" "$TB" --userns || die "tests/testbed/boot.sh failed"
fi
ROOT=$(cat "$TB/root")
TB_ID=$(cat "$TB/id")
IN() { "$REPO/tests/testbed/in.sh" "$TB" "$@"; }

# ---------------------------------------------------------------- install
log "installing berth and the benchmark units"
install -m755 "$BERTH" "$ROOT/usr/bin/berth"
install -D -m755 "$PROBE" "$ROOT/usr/lib/berth/berth-probe"
install -m644 "$REPO"/units/*.service "$ROOT/usr/lib/systemd/system/"
mkdir -p "$ROOT/etc/berth/services" "$ROOT/usr/share/berth/web" "$ROOT/etc/lighttpd"
cp -r "$REPO/config/web/." "$ROOT/usr/share/berth/web/"
# systemd's direct lighttpd: the same configuration, document root where the file is.
sed 's|^server.document-root.*|server.document-root = "/usr/share/berth/web/www"|' \
    "$REPO/config/web/lighttpd.conf" >"$ROOT/etc/lighttpd/bench-direct.conf"
[ -e "$ROOT/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$ROOT/etc/hosts"
SVC=$ROOT/etc/berth/services
UNITS=$ROOT/etc/systemd/system
rm -f "$SVC"/*.toml

# The inetd service of figure a: the same resources as the sandboxed systemd unit.
. "$REPO/tests/bench/lib.sh"   # echo_toml, bare_unit, sandboxed_unit
echo_toml 0 >"$SVC/echo0.toml"
echo_toml 8 >"$SVC/echo8.toml"
echo_toml 0 >"$SVC/echoi.toml"     # for `berth inetd echoi` under Accept=yes
cat >"$SVC/hold.toml" <<TOML
# benchmark d: one container per held connection, cat echoes what it reads
mode = "inetd"
exec = ["/bin/cat"]
max_connections = $((HOLD_N + 100))

[resources]
memory_max = "16M"
tasks_max = 4
TOML
for w in webwarm:10min webidle:1s webwake:1s; do
    sed -E "s/^idle_timeout *=.*/idle_timeout = \"${w#*:}\"/" "$REPO/config/services/web.toml" >"$SVC/${w%%:*}.toml"
done
# webwake: as webidle, with the next container prepared while idle (warm = 1)
sed -i -E 's/^(idle_timeout *=.*)$/\1\nwarm = 1/' "$SVC/webwake.toml"
grep -q '^warm = 1$' "$SVC/webwake.toml" || die "could not set warm = 1 in webwake.toml"
# f: the same lighttpd, frozen after 1 s idle instead of stopped (stopped only after 10 min)
sed -E 's/^idle_timeout *=.*/idle_timeout = "10min"\nfreeze_after = "1s"/' "$REPO/config/services/web.toml" >"$SVC/webfrz.toml"
grep -q '^freeze_after = "1s"$' "$SVC/webfrz.toml" || die "could not set freeze_after in webfrz.toml"
# f's reference: its twin without freeze_after, running idle
sed -E 's/^idle_timeout *=.*/idle_timeout = "10min"/' "$REPO/config/services/web.toml" >"$SVC/webrun.toml"

berth_socket() { # NAME PORT
    cat >"$UNITS/berth-$1.socket" <<UNIT
[Socket]
ListenStream=127.0.0.1:$2
FileDescriptorName=$1
Service=berth.service
Backlog=4096
UNIT
}
berth_socket echo0 $P_ECHO0
berth_socket echo8 $P_ECHO8
berth_socket hold $P_HOLD
berth_socket webwarm $P_WEBWARM
berth_socket webidle $P_WEBIDLE
berth_socket webwake $P_WEBWAKE
berth_socket webfrz $P_WEBFRZ
berth_socket webrun $P_WEBRUN

accept_socket() { # NAME PORT
    cat >"$UNITS/$1.socket" <<UNIT
[Socket]
ListenStream=127.0.0.1:$2
Accept=yes
MaxConnections=1024
# No trigger rate limit: the benchmark opens a few hundred connections a second.
TriggerLimitIntervalSec=0
Backlog=4096
UNIT
}
accept_socket bench-bare $P_BARE
accept_socket bench-sandboxed $P_SANDBOXED
accept_socket echoi $P_ECHOI
ln -sfn /lib/systemd/system/berth-inetd@.service "$UNITS/echoi@.service"
bare_unit >"$UNITS/bench-bare@.service"
sandboxed_unit >"$UNITS/bench-sandboxed@.service"
cat >"$UNITS/lighttpd-direct.socket" <<UNIT
[Socket]
ListenStream=127.0.0.1:$P_DIRECT
Backlog=4096
UNIT
cat >"$UNITS/lighttpd-direct.service" <<'UNIT'
[Unit]
Description=benchmark: lighttpd socket-activated by systemd directly
# c stops it and lets its socket start it again, 20 times in a row.
StartLimitIntervalSec=0
[Service]
ExecStart=/usr/sbin/lighttpd -D -f /etc/lighttpd/bench-direct.conf
User=www-data
UNIT

# The D-Bus policy the package installs (berth owns org.berth.Supervisor1), if this tree has one.
if [ -f "$REPO/packaging/dbus/org.berth.Supervisor1.conf" ]; then
    install -D -m644 "$REPO/packaging/dbus/org.berth.Supervisor1.conf" "$ROOT/usr/share/dbus-1/system.d/org.berth.Supervisor1.conf"
    IN systemctl reload dbus.service 2>/dev/null || true
fi
IN berth check >/dev/null || { IN berth check; die "berth check failed on the benchmark configuration"; }
IN systemctl daemon-reload
IN systemctl start berth-echo0.socket berth-echo8.socket berth-hold.socket \
    berth-webwarm.socket berth-webidle.socket berth-webwake.socket berth-webfrz.socket berth-webrun.socket bench-bare.socket bench-sandboxed.socket echoi.socket \
    lighttpd-direct.socket || die "starting the socket units failed"
# restart, not start: a testbed reused with BERTH_BENCH_STATE may still run the
# berth installed by an earlier run (another BERTH_BENCH_BIN).
IN systemctl restart berth.service || die "berth.service did not start: $(IN journalctl -u berth.service -n 20 -o cat --no-pager)"

# host pid of `berth serve` of this testbed
berth_host_pid() {
    local p
    for p in $(pgrep -x berth); do
        grep -q "$TB_ID" "/proc/$p/cgroup" 2>/dev/null || continue
        [ "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" = "/usr/bin/berth serve " ] && { echo "$p"; return 0; }
    done
    return 1
}
active_scopes() { # SERVICE
    IN systemctl list-units --plain --no-legend --no-pager --state=active "berth-$1-*.scope" 2>/dev/null | grep -c .
}
wait_until() { # SECONDS CMD...
    local end=$(( $(date +%s) + $1 )); shift
    until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.1; done
}
warm_ready() { [ "$(active_scopes echo8)" -ge 8 ]; }
wait_until 30 warm_ready || log "warning: the warm pool of echo8 has only $(active_scopes echo8) scopes"

HTTP_REQ='GET / HTTP/1.0\r\nHost: localhost\r\n\r\n'
webidle_gone() { [ "$(active_scopes webidle)" = 0 ]; }
# webwake: the last container is gone and the next one waits prepared ("warm")
webwake_ready() {
    IN berth list --json 2>/dev/null | "$PY" -c '
import json, sys
c = [x for x in json.load(sys.stdin)["containers"] if x["service"] == "webwake"]
sys.exit(0 if len(c) == 1 and c[0]["state"] == "warm" else 1)'
}
# the state of a service's containers in `berth list --json`, space-separated
berth_states() { # SERVICE
    IN berth list --json 2>/dev/null | "$PY" -c '
import json, sys
print(" ".join(x["state"] for x in json.load(sys.stdin)["containers"] if x["service"] == sys.argv[1]))' "$1"
}
webfrz_is() { [ "$(berth_states webfrz)" = "$1" ]; }   # STATE: one container, in that state
listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
testbed_pids() { grep -l "$TB_ID" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3; }   # host pids of the testbed

# ---------------------------------------------------------------- machine
{
    echo "{"
    echo "\"nproc\": $(nproc),"
    echo "\"cpu\": \"$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)\","
    echo "\"mem_total_kib\": $(awk '/^MemTotal/{print $2}' /proc/meminfo),"
    echo "\"kernel\": \"$(uname -r)\","
    echo "\"host_os\": \"Debian $(cat /etc/debian_version)\","
    echo "\"cgroups\": \"$(if [ -d /sys/fs/cgroup/unified ]; then echo 'hybrid (v1 controllers, cgroup2 without controllers)'; else stat -fc %T /sys/fs/cgroup; fi)\","
    echo "\"testbed_systemd\": \"$(IN systemctl --version | head -n1)\","
    echo "\"lighttpd\": \"$(IN /usr/sbin/lighttpd -v 2>&1 | head -n1)\","
    echo "\"wrk\": \"$(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2)\","
    echo "\"python\": \"$($PY --version 2>&1)\","
    echo "\"berth_binary_mb\": $(awk -v b="$(stat -c %s "$BERTH")" 'BEGIN { printf "%.1f", b / 1048576 }'),"
    echo "\"berth_commit\": \"$(if [ -n "${BERTH_BENCH_BIN:-}" ]; then echo "binary $BERTH_BENCH_BIN"; else git rev-parse --short HEAD; git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+local changes'; fi | tr -d '\n')\","
    echo "\"loadavg_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
    echo "\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "\"quick\": $([ "$QUICK" = 1 ] && echo true || echo false)"
    echo "}"
} >"$RES/machine.json"

# ---------------------------------------------------------------- a. inetd cold start
if [[ "$PHASES" == *" a "* ]]; then
    "${CLIENT[@]}" floor-server $P_FLOOR & FLOOR_PID=$!
    sleep 0.3
    TARGETS=(--target "berth_warm0=$P_ECHO0" --target "berth_warm8=$P_ECHO8" --target "berth_inetd_acceptyes=$P_ECHOI"
             --target "systemd_bare=$P_BARE" --target "systemd_sandboxed=$P_SANDBOXED" --target "client_floor=$P_FLOOR")
    for c in 1 8; do
        per=$A_PER1; [ $c = 8 ] && per=$A_PER8
        log "a: inetd cold start, $c concurrent, $A_ROUNDS rounds x $per connections per target"
        "${CLIENT[@]}" latency "${TARGETS[@]}" --concurrency $c --rounds $A_ROUNDS --per-round $per --warmup 10 \
            >"$RES/a_c$c.json" || die "client failed"
    done
    kill "$FLOOR_PID" 2>/dev/null; FLOOR_PID=
fi

# ---------------------------------------------------------------- b. listen mode, warm (wrk)
wrk_json() { # PORT OUT [THREADS CONNS]
    local out
    out=$(wrk -t"${3:-2}" -c"${4:-16}" -d"$WRK_D" --timeout 5s --latency "http://127.0.0.1:$1/" 2>&1)
    awk -v port="$1" '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        /Requests\/sec/ { rps=$2 }
        /^ +50%/ { p50=ms($2) } /^ +90%/ { p90=ms($2) } /^ +99%/ { p99=ms($2) }
        /requests in/ { reqs=$1 }
        /Socket errors/ { err=$0 } /Non-2xx/ { non2xx=$NF }
        END { printf "{\"port\": %s, \"requests\": %s, \"rps\": %s, \"p50_ms\": %s, \"p90_ms\": %s, \"p99_ms\": %s, \"socket_errors\": \"%s\", \"non2xx\": %s}\n",
              port, reqs+0, rps+0, p50+0, p90+0, p99+0, err, non2xx+0 }' <<<"$out" >"$2"
}
if [[ "$PHASES" == *" b "* ]]; then
    log "b: wrk -t2 -c16 -d$WRK_D, $WRK_ROUNDS rounds, lighttpd direct vs in berth"
    curl -s -o /dev/null "http://127.0.0.1:$P_DIRECT/" || true
    curl -s -o /dev/null "http://127.0.0.1:$P_WEBWARM/" || true
    wrk -t2 -c16 -d1s "http://127.0.0.1:$P_DIRECT/" >/dev/null 2>&1
    wrk -t2 -c16 -d1s "http://127.0.0.1:$P_WEBWARM/" >/dev/null 2>&1
    for r in $(seq "$WRK_ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then order="direct berth"; else order="berth direct"; fi
        for v in $order; do
            port=$P_DIRECT; [ $v = berth ] && port=$P_WEBWARM
            wrk_json "$port" "$RES/b_${v}_$r.json"
        done
    done
    # The same at the same time: two wrk (-t1 -c8 each), one per variant, so that
    # both see the same load from the rest of the machine; the ratio of each
    # round is the figure (they share the CPUs alike: the two lighttpd are in
    # sibling cgroups of equal weight).
    log "b: $WRK_PAR_ROUNDS rounds of both at once (wrk -t1 -c8 each)"
    for r in $(seq "$WRK_PAR_ROUNDS"); do
        wrk_json "$P_DIRECT" "$RES/bp_direct_$r.json" 1 8 &
        wrk_json "$P_WEBWARM" "$RES/bp_berth_$r.json" 1 8
        wait
    done
fi

# ---------------------------------------------------------------- c. wake from idle
if [[ "$PHASES" == *" c "* ]]; then
    log "c: wake from idle, $C_N times each (berth idle_timeout 1s; lighttpd start-up; systemd restart)"
    : >"$RES/c_raw.txt"
    IN systemctl stop lighttpd-direct.service 2>/dev/null
    for i in $(seq "$C_N"); do
        # berth: wait for the container to be gone, give berth a moment to watch the socket again
        wait_until 20 webidle_gone || log "warning: webidle container still up"
        sleep 0.3
        echo "berth $("${CLIENT[@]}" first-byte --port $P_WEBIDLE --send "$HTTP_REQ")" >>"$RES/c_raw.txt"
        # berth with warm = 1: the next container waits prepared
        wait_until 20 webwake_ready || log "warning: webwake has no warm container"
        sleep 0.3
        echo "berthwarm $("${CLIENT[@]}" first-byte --port $P_WEBWAKE --send "$HTTP_REQ")" >>"$RES/c_raw.txt"
        # lighttpd's own start-up: systemd-socket-activate execs it on the first connection
        IN systemd-run --quiet --unit=bench-ssa -p User=www-data /usr/bin/systemd-socket-activate \
            -l 127.0.0.1:$P_SSA /usr/sbin/lighttpd -D -f /etc/lighttpd/bench-direct.conf
        wait_until 5 listening $P_SSA || log "warning: systemd-socket-activate not listening"
        sleep 0.1
        echo "ssa $("${CLIENT[@]}" first-byte --port $P_SSA --send "$HTTP_REQ")" >>"$RES/c_raw.txt"
        IN systemctl stop bench-ssa.service; IN systemctl reset-failed bench-ssa.service 2>/dev/null
        # systemd: lighttpd stopped, its socket kept; the request starts it again
        IN systemctl stop lighttpd-direct.service 2>/dev/null
        sleep 0.1
        echo "direct $("${CLIENT[@]}" first-byte --port $P_DIRECT --send "$HTTP_REQ")" >>"$RES/c_raw.txt"
    done
fi

# ---------------------------------------------------------------- f. frozen instead of stopped
# Memory of a service's one container: the scope's MemoryCurrent (v1
# memory.usage_in_bytes and kmem in this testbed) and memstat's RSS/PSS of
# lighttpd and of berth's stage processes.
web_mem() { # SERVICE OUT
    local unit cur
    unit=$(IN systemctl list-units --plain --no-legend --no-pager --state=active "berth-$1-*.scope" 2>/dev/null | awk 'NR==1{print $1}')
    cur=$(IN systemctl show -p MemoryCurrent --value "${unit:-none}" 2>/dev/null)
    [[ "$cur" =~ ^[0-9]+$ ]] || cur=null
    "${CLIENT[@]}" memstat --cgroup-marker "$TB_ID" --service "$1" --app lighttpd |
        "$PY" -c 'import json,sys; d=json.load(sys.stdin); d["scope"]={"unit": sys.argv[1], "memory_current_bytes": None if sys.argv[2]=="null" else int(sys.argv[2])}; d["state"]=sys.argv[3]; print(json.dumps(d))' \
            "$unit" "$cur" "$(berth_states "$1")" >"$2"
}
if [[ "$PHASES" == *" f "* ]]; then
    log "f: frozen instead of stopped, $F_N wakes (freeze_after 1s, idle_timeout 10min) and memory frozen vs running"
    : >"$RES/f_raw.txt"
    # the first request starts the container; it is frozen 1 s after it served
    "${CLIENT[@]}" first-byte --port $P_WEBFRZ --send "$HTTP_REQ" >/dev/null
    "${CLIENT[@]}" first-byte --port $P_WEBRUN --send "$HTTP_REQ" >/dev/null
    for i in $(seq "$F_N"); do
        wait_until 20 webfrz_is frozen || log "warning: webfrz not frozen: '$(berth_states webfrz)'"
        web_mem webfrz "$RES/f_mem_frozen_$i.json"
        web_mem webrun "$RES/f_mem_twin_$i.json"
        # berth watches the listeners of a frozen container: no pause needed once it shows frozen
        echo "frozen $("${CLIENT[@]}" first-byte --port $P_WEBFRZ --send "$HTTP_REQ")" >>"$RES/f_raw.txt"
        # running: a silent connection keeps the thawed container from freezing again
        exec 7<>"/dev/tcp/127.0.0.1/$P_WEBFRZ"
        wait_until 10 webfrz_is running || log "warning: webfrz not running: '$(berth_states webfrz)'"
        web_mem webfrz "$RES/f_mem_running_$i.json"
        # for reference, the same request to the same container running (no thaw on the path)
        echo "running $("${CLIENT[@]}" first-byte --port $P_WEBFRZ --send "$HTTP_REQ")" >>"$RES/f_raw.txt"
        # and to its twin without freeze_after, which has run idle all along
        echo "twin $("${CLIENT[@]}" first-byte --port $P_WEBRUN --send "$HTTP_REQ")" >>"$RES/f_raw.txt"
        exec 7>&-
    done
    # the whole phase was one container, thawed each time (berth list: started once)
    IN berth list --json 2>/dev/null | "$PY" -c '
import json, sys
c = [x for x in json.load(sys.stdin)["containers"] if x["service"] == "webfrz"]
print(json.dumps({"containers": c}))' >"$RES/f_list.json"
    IN journalctl -u berth.service -o cat --no-pager 2>/dev/null | grep -F 'webfrz: idle container frozen' | tail -n1 |
        "$PY" -c 'import json,sys; print(json.dumps({"last_frozen_message": sys.stdin.read().strip()}))' >"$RES/f_journal.json"
fi

# ---------------------------------------------------------------- d. 1000 containers held open
count_lines() { grep -c . || true; }
leftovers() { # -> JSON object: what berth could leave behind
    local scopes_all mnt1 mntb netns mntns staged
    scopes_all=$(IN systemctl list-units --all --plain --no-legend --no-pager 'berth-hold-*' 2>/dev/null | count_lines)
    mnt1=$(IN cat /proc/1/mountinfo | count_lines)
    mntb=$(IN sh -c 'cat /proc/$(systemctl show -p MainPID --value berth.service)/mountinfo' | count_lines)
    netns=$(IN lsns -n -t net -o NS | count_lines)
    mntns=$(IN lsns -n -t mnt -o NS | count_lines)
    staged=$(IN sh -c 'ls -A /run/berth/root 2>/dev/null' | count_lines)
    printf '{"hold_units_any_state": %s, "mounts_pid1": %s, "mounts_berth": %s, "net_namespaces": %s, "mnt_namespaces": %s, "staging_entries": %s}\n' \
        "$scopes_all" "$mnt1" "$mntb" "$netns" "$mntns" "$staged"
}
hold_stage_procs() { "${CLIENT[@]}" memstat --cgroup-marker "$TB_ID" --service hold --app cat |
    $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["stage"]["count"] + d["app"]["count"])'; }
if [[ "$PHASES" == *" d "* ]]; then
    log "d: $HOLD_N concurrent inetd containers held open"
    # A fresh supervisor, so its peak RSS (VmHWM) is that of this figure.
    IN systemctl restart berth.service
    sleep 2
    D_SINCE=$(IN date +%s)
    leftovers >"$RES/d_before.json"
    "${CLIENT[@]}" memstat --cgroup-marker "$TB_ID" --service hold --app cat >"$RES/d_mem_idle.json"
    cat /proc/slabinfo >"$RES/d_slab_idle.txt"
    rm -f "$WORK/hold.ready" "$WORK/hold.close"
    "${CLIENT[@]}" hold --port $P_HOLD --n "$HOLD_N" --ready-file "$WORK/hold.ready" \
        --close-file "$WORK/hold.close" --timeout 240 --wave 100 >"$RES/d_hold_close.json" &
    HOLD_PID=$!
    wait_until 260 [ -e "$WORK/hold.ready" ] || log "warning: hold client not ready"
    cp "$WORK/hold.ready" "$RES/d_hold_up.json" 2>/dev/null
    # Why containers failed to start, if some did (container ids and unit names blanked).
    IN journalctl -u berth.service --since "@$D_SINCE" -o cat --no-pager |
        grep -E 'failed to start|throttled|refused' | sed -E 's/[0-9a-f]{12}/ID/g; s/[0-9]+ failed starts/N failed starts/; s/delayed [0-9.]+[a-z]+/delayed T/' |
        sort | uniq -c | sort -rn | head -n 5 >"$RES/d_failures.txt"
    sleep 1
    "${CLIENT[@]}" memstat --cgroup-marker "$TB_ID" --service hold --app cat >"$RES/d_mem_held.json"
    cat /proc/slabinfo >"$RES/d_slab_held.txt"
    if BP=$(berth_host_pid); then
        # the supervisor's resident memory by mapping, while the containers are held
        awk '/^[0-9a-f]+-[0-9a-f]+ /{name=$6; if (name=="") name="[anon]"} /^Rss:/{rss[name]+=$2} END {for (n in rss) if (rss[n] > 0) printf "%d\t%s\n", rss[n], n}' \
            "/proc/$BP/smaps" | sort -rn | head -n 10 >"$RES/d_supervisor_smaps.txt"
        grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem|Threads)' "/proc/$BP/status" >"$RES/d_supervisor_status.txt"
    fi
    echo "{\"active_scopes\": $(active_scopes hold), \"status\": \"$(IN systemctl show -p StatusText --value berth.service)\"}" >"$RES/d_held.json"
    # Reference: the application alone (cat with a pipe as stdin), outside any sandbox.
    IN sh -c 'f=$(mktemp -u); mkfifo $f; exec 3<>$f; rm $f; cat <&3 >/dev/null & p=$!; sleep 0.3; grep -E "^(Rss|Pss):" /proc/$p/smaps_rollup; kill $p' \
        | awk '{k=tolower($1); sub(":", "", k); printf "%s\"%s_kib\": %s", (NR>1?", ":"{"), k, $2} END {print "}"}' >"$RES/d_app_alone.json"
    # Teardown: the clients close; measured until no container process and no scope is left.
    t0=$(now)
    touch "$WORK/hold.close"
    gone() { [ "$(active_scopes hold)" = 0 ] && [ "$(hold_stage_procs)" = 0 ]; }
    wait_until 240 gone || log "warning: hold containers still there after 240 s"
    echo "{\"teardown_all_s\": $(diff_s "$(now)" "$t0")}" >"$RES/d_teardown.json"
    wait "$HOLD_PID" 2>/dev/null; HOLD_PID=
    sleep 2
    leftovers >"$RES/d_after.json"
    "${CLIENT[@]}" memstat --cgroup-marker "$TB_ID" --service hold --app cat >"$RES/d_mem_after.json"
fi

# ---------------------------------------------------------------- profile
# Where a cold start's time goes: kernel tracepoints recorded system-wide with
# perf (no ptrace, so the timeline is not distorted the way strace -f would
# distort it: every traced syscall would cost a context switch pair), over a
# few sequential connections with pauses between them, then cut into phases
# by timeline.py.
PROF_EVENTS=cgroup:cgroup_attach_task,sched:sched_process_fork,sched:sched_process_exec,syscalls:sys_enter_connect,syscalls:sys_exit_accept4,syscalls:sys_enter_unshare,syscalls:sys_exit_unshare,syscalls:sys_enter_sendmsg,syscalls:sys_exit_recvmsg,syscalls:sys_exit_recvfrom,syscalls:sys_enter_pivot_root,syscalls:sys_enter_mount,syscalls:sys_enter_mount_setattr,syscalls:sys_enter_open_tree,syscalls:sys_enter_move_mount
if [[ "$PHASES" == *" profile "* ]]; then
    if ! command -v perf >/dev/null; then
        log "profile: installing linux-perf"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends linux-perf >/dev/null 2>&1 || true
    fi
    BP=$(berth_host_pid) || die "no berth serve process found"
    if command -v perf >/dev/null; then
        log "profile: perf tracepoints over $PROF_N sequential cold starts per variant"
        wait_until 30 warm_ready || true
        perf record -q -o "$WORK/perf.data" -e "$PROF_EVENTS" -a >/dev/null 2>"$WORK/perf.log" & PERF_PID=$!
        sleep 1.5
        "${CLIENT[@]}" latency --target "berth_warm0=$P_ECHO0" --target "berth_warm8=$P_ECHO8" \
            --target "systemd_bare=$P_BARE" --target "systemd_sandboxed=$P_SANDBOXED" \
            --concurrency 1 --rounds 1 --per-round "$PROF_N" --warmup 0 --gap 250 >"$RES/prof_client.json" & CPID=$!
        wait "$CPID"
        # listen mode woken from idle: the pause lets the container idle out (idle_timeout 1s)
        wait_until 20 webidle_gone || true
        sleep 0.5
        "${CLIENT[@]}" latency --target "berth_wake=$P_WEBIDLE" --concurrency 1 --rounds 1 --per-round "$PROF_WAKE_N" \
            --warmup 0 --gap 3500 --send "$HTTP_REQ" >"$RES/prof_client_wake.json" & CPID2=$!
        wait "$CPID2"
        # the same with warm = 1: the next container waits prepared when the request comes
        wait_until 20 webwake_ready || true
        sleep 0.5
        "${CLIENT[@]}" latency --target "berth_wakewarm=$P_WEBWAKE" --concurrency 1 --rounds 1 --per-round "$PROF_WAKE_N" \
            --warmup 0 --gap 3500 --send "$HTTP_REQ" >"$RES/prof_client_wakewarm.json" & CPID4=$!
        wait "$CPID4"
        # the anchor of c: lighttpd exec'd by systemd-socket-activate on the first connection
        SSA_PIDS=()
        for i in $(seq "$PROF_WAKE_N"); do
            IN systemd-run --quiet --unit=bench-ssa -p User=www-data /usr/bin/systemd-socket-activate \
                -l 127.0.0.1:$P_SSA /usr/sbin/lighttpd -D -f /etc/lighttpd/bench-direct.conf
            wait_until 5 listening $P_SSA || true
            sleep 0.3
            "${CLIENT[@]}" first-byte --port $P_SSA --send "$HTTP_REQ" >>"$RES/prof_client_ssa.txt" & SSA_PIDS+=(--client $!)
            wait $!
            sleep 0.2
            IN systemctl stop bench-ssa.service; IN systemctl reset-failed bench-ssa.service 2>/dev/null
        done
        sleep 0.5
        kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null; PERF_PID=
        perf script -i "$WORK/perf.data" -F comm,pid,tid,time,event,trace 2>/dev/null >"$WORK/perf.txt"
        $PY "$BENCH/timeline.py" "$WORK/perf.txt" --client "$CPID" --per-target "$PROF_N" \
            --targets berth_warm0,berth_warm8,systemd_bare,systemd_sandboxed \
            --accepter "berth_warm0=$BP" --accepter "berth_warm8=$BP" \
            --accepter "systemd_bare=$(cat "$TB/leader.pid")" --accepter "systemd_sandboxed=$(cat "$TB/leader.pid")" \
            --app /bin/echo --systemd "$(cat "$TB/leader.pid")" >"$RES/prof_timeline.json" || log "warning: timeline.py failed"
        $PY "$BENCH/timeline.py" "$WORK/perf.txt" --client "$CPID2" --per-target "$PROF_WAKE_N" \
            --targets berth_wake --accepter "berth_wake=$BP" --app /usr/sbin/lighttpd --systemd "$(cat "$TB/leader.pid")" \
            >"$RES/prof_timeline_wake.json" || log "warning: timeline.py failed (wake)"
        $PY "$BENCH/timeline.py" "$WORK/perf.txt" --client "$CPID4" --per-target "$PROF_WAKE_N" \
            --targets berth_wakewarm --accepter "berth_wakewarm=$BP" --app /usr/sbin/lighttpd --systemd "$(cat "$TB/leader.pid")" \
            >"$RES/prof_timeline_wakewarm.json" || log "warning: timeline.py failed (wake, warm)"
        $PY "$BENCH/timeline.py" "$WORK/perf.txt" "${SSA_PIDS[@]}" --per-target "$PROF_WAKE_N" \
            --targets lighttpd_startup --accepter "lighttpd_startup=$(cat "$TB/leader.pid")" --app /usr/sbin/lighttpd \
            >"$RES/prof_timeline_ssa.json" || log "warning: timeline.py failed (lighttpd start-up)"
        # what one cgroup.procs write costs this kernel (our own sleep, our own cgroup; removed after)
        $PY "$BENCH/cgattach.py" >"$RES/prof_cgattach.json" 2>>"$WORK/perf.log" || log "warning: cgattach.py failed"
        # CPU per connection with 8 clients, by process (cpu-clock sampling, 999 Hz per CPU,
        # with kernel call chains so the testbed's samples can be sorted by kernel work),
        # in rounds that rotate the variants' order so drift in the machine's load hits all alike;
        # cpuprof.py --merge sums the rounds of each variant.
        log "profile: CPU per connection with 8 clients (perf cpu-clock, $PROF_CPU_ROUNDS rounds)"
        CPU_VARIANTS=(berth_warm0:$P_ECHO0 berth_warm8:$P_ECHO8 systemd_bare:$P_BARE systemd_sandboxed:$P_SANDBOXED)
        per=$(( PROF_CPU_N / PROF_CPU_ROUNDS ))
        for r in $(seq 0 $(( PROF_CPU_ROUNDS - 1 ))); do
            for k in $(seq 0 $(( ${#CPU_VARIANTS[@]} - 1 ))); do
                v=${CPU_VARIANTS[$(( (k + r) % ${#CPU_VARIANTS[@]} ))]}
                testbed_pids >"$WORK/tbpids.txt"
                perf record -q -o "$WORK/cpu.data" -F 999 -e cpu-clock,sched:sched_process_fork -a \
                    -g --kernel-callchains >/dev/null 2>>"$WORK/perf.log" & PERF_PID=$!
                sleep 1
                "${CLIENT[@]}" latency --target "${v%%:*}=${v#*:}" --concurrency 8 --rounds 1 --per-round "$per" \
                    --warmup 0 >/dev/null & CPID3=$!
                wait "$CPID3"
                kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null; PERF_PID=
                perf script -i "$WORK/cpu.data" -F comm,pid,tid,time,event,trace,ip,sym 2>/dev/null >"$WORK/cpu.txt"
                $PY "$BENCH/cpuprof.py" "$WORK/cpu.txt" --connections "$per" --freq 999 \
                    --testbed-pids "$WORK/tbpids.txt" --client "$CPID3" >"$WORK/prof_cpu_${v%%:*}.$r.json" ||
                    log "warning: cpuprof.py failed"
            done
        done
        for v in "${CPU_VARIANTS[@]}"; do
            $PY "$BENCH/cpuprof.py" --merge "$WORK/prof_cpu_${v%%:*}".*.json >"$RES/prof_cpu_${v%%:*}.json" ||
                log "warning: cpuprof.py --merge failed"
        done
    else
        log "profile: perf not available; no timeline"
    fi
fi

echo "{\"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"duration_s\": $(diff_s "$(now)" "$T_BUILT"), \"build_s\": $(diff_s "$T_BUILT" "$T_START")}" >"$RES/end.json"

# ---------------------------------------------------------------- results
$PY "$BENCH/report.py" "$RES" "$OUT" || die "report.py failed"
log "results: $OUT/benchmarks.md, $OUT/benchmarks.json ($(diff_s "$(now)" "$T_START") s)"
