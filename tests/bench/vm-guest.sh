#!/bin/bash
# The benchmark on testbed 2 (cgroup v2, qemu TCG): runs inside the VM as the
# payload's guest.sh, started by tests/bench/vm.sh through tests/vm/run.sh.
# The payload (/run/berth-vm) also holds berth.deb, client.py, cgattach.py,
# lib.sh and bench.env (the sample counts). Results: one JSON file per
# measurement in /run/bench-results, written as a tar to /dev/vdc at the end;
# progress and the "berth-vm: N passed, M failed" summary on the console.
#
# Measured with the cgroup2 hierarchy as systemd mounted it and again after
# `mount -o remount,favordynmods /sys/fs/cgroup` (then back):
#   cgattach  tests/bench/cgattach.py: one cgroup.procs write after a pause / back to back
#   fork      fork+exit and posix_spawn+exit of /bin/true (the cost favordynmods moves there)
#   a         figure a of tests/bench/run.sh: /bin/echo hi, berth warm = 0 and warm = 8
#             (berth.service), systemd Accept=yes bare and sandboxed, 1 and 8 clients
#   c         wake from idle (berth warm = 1 and warm = 0 vs lighttpd's own start-up), as mounted only
set -uo pipefail
P=/run/berth-vm
R=/run/bench-results
mkdir -p "$R"
# shellcheck source=/dev/null
. "$P/bench.env"     # A_ROUNDS A_PER1 A_PER8 C_N CGA_N FORK_N PHASES MODES
# shellcheck source=lib.sh
. "$P/lib.sh"        # echo_toml bare_unit sandboxed_unit
PY=/usr/bin/python3
CLIENT=("$PY" "$P/client.py")
P_ECHO0=19101 P_ECHO8=19102 P_BARE=19111 P_SANDBOXED=19112 P_WEBIDLE=19123 P_SSA=19124 P_WEBWAKE=19125 P_FLOOR=19190
HTTP_REQ='GET / HTTP/1.0\r\nHost: localhost\r\n\r\n'

PASS=0 FAIL=0 T0=$(date +%s.%N)
el() { awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{printf "%.0f", a-b}'; }
say() { echo "berth-vm: $*"; }
note() { say "# [$(el)s] $*"; }
ok() { PASS=$((PASS + 1)); say "ok - $*"; }
nok() { FAIL=$((FAIL + 1)); say "not ok - $*"; }
# json_ok FILE DESCRIPTION: ok if FILE holds JSON
json_ok() { if "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; then ok "$2"; else nok "$2: $(head -c 300 "$1" 2>/dev/null)"; fi; }
wait_until() { # SECONDS CMD...
    local end=$(( $(date +%s) + $1 )); shift
    until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.2; done
}
finish() {
    if [ "$FAIL" -gt 0 ]; then
        journalctl -b -u berth.service --no-pager -o short-monotonic | tail -n 40 | sed 's/^/berth-vm: #   /'
    fi
    echo "{\"duration_s\": $(el), \"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >"$R/end.json"
    if [ -b /dev/vdc ]; then
        if tar -cf /dev/vdc -C "$R" . && sync; then ok "results written to /dev/vdc ($(ls "$R" | wc -l) files)"
        else nok "writing the results to /dev/vdc"; fi
    else
        nok "no results disk /dev/vdc"
    fi
    note "done"
    say "$PASS passed, $FAIL failed"
    sleep 1   # let the UART drain before the power-off
    [ "$FAIL" = 0 ]
    exit
}
cg_opts() { findmnt -n -o OPTIONS /sys/fs/cgroup; }

# ---------------------------------------------------------------- set-up
note "kernel $(uname -r), $(nproc) cpus, systemd $(systemctl --version | awk 'NR==1{print $2}'), cgroup2: $(cg_opts)"
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && ok "cgroup v2 only" || nok "cgroup v2 only: $(stat -fc %T /sys/fs/cgroup)"
if out=$(dpkg -i "$P/berth.deb" 2>&1); then ok "dpkg -i berth.deb"; else nok "dpkg -i berth.deb"; echo "$out" | sed 's/^/berth-vm: #   /'; finish; fi
SVC=/etc/berth/services UNITS=/etc/systemd/system
mkdir -p "$SVC" /etc/lighttpd
echo_toml 0 >"$SVC/echo0.toml"
echo_toml 8 >"$SVC/echo8.toml"
EX=/usr/share/doc/berth/examples/services/web.toml
for w in webidle:1s webwake:1s; do
    sed -E "s/^idle_timeout *=.*/idle_timeout = \"${w#*:}\"/" "$EX" >"$SVC/${w%%:*}.toml"
done
sed -i -E 's/^(idle_timeout *=.*)$/\1\nwarm = 1/' "$SVC/webwake.toml"
sed 's|^server.document-root.*|server.document-root = "/usr/share/berth/web/www"|' \
    /usr/share/berth/web/lighttpd.conf >/etc/lighttpd/bench-direct.conf
# The socket units as tests/bench/run.sh writes them.
for s in echo0:$P_ECHO0 echo8:$P_ECHO8 webidle:$P_WEBIDLE webwake:$P_WEBWAKE; do
    printf '[Socket]\nListenStream=127.0.0.1:%s\nFileDescriptorName=%s\nService=berth.service\nBacklog=4096\n' \
        "${s#*:}" "${s%%:*}" >"$UNITS/berth-${s%%:*}.socket"
done
for s in bench-bare:$P_BARE bench-sandboxed:$P_SANDBOXED; do
    printf '[Socket]\nListenStream=127.0.0.1:%s\nAccept=yes\nMaxConnections=1024\nTriggerLimitIntervalSec=0\nBacklog=4096\n' \
        "${s#*:}" >"$UNITS/${s%%:*}.socket"
done
bare_unit >"$UNITS/bench-bare@.service"
sandboxed_unit >"$UNITS/bench-sandboxed@.service"
if out=$(berth check 2>&1); then ok "berth check"; else nok "berth check"; echo "$out" | sed 's/^/berth-vm: #   /'; finish; fi
systemctl daemon-reload
if systemctl start berth-echo0.socket berth-echo8.socket berth-webidle.socket berth-webwake.socket \
        bench-bare.socket bench-sandboxed.socket && systemctl start berth.service; then
    ok "sockets and berth.service started"
else
    nok "starting the sockets and berth.service"; finish
fi
active_scopes() { systemctl list-units --plain --no-legend --no-pager --state=active "berth-$1-*.scope" 2>/dev/null | grep -c .; }
warm_ready() { [ "$(active_scopes echo8)" -ge 8 ]; }
container_states() { # SERVICE -> the states of its containers, space-separated
    berth list --json 2>/dev/null | "$PY" -c '
import json, sys
print(" ".join(x["state"] for x in json.load(sys.stdin)["containers"] if x["service"] == sys.argv[1]))' "$1"
}
webidle_gone() { [ "$(active_scopes webidle)" = 0 ]; }
webwake_ready() { [ "$(container_states webwake)" = warm ]; }
# a listening socket on 127.0.0.1:PORT (no ss in the image; connecting would start lighttpd)
listening() { grep -qi "^ *[0-9]*: 0100007F:$(printf %04X "$1") 00000000:0000 0A " /proc/net/tcp; }
if wait_until 600 warm_ready; then ok "the warm pool of echo8 is full ($(el) s after boot)"
else nok "the warm pool of echo8 has $(active_scopes echo8) of 8 scopes after 600 s"; fi

{
    echo "{"
    echo "\"nproc\": $(nproc),"
    echo "\"cpu\": \"$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)\","
    echo "\"mem_total_kib\": $(awk '/^MemTotal/{print $2}' /proc/meminfo),"
    echo "\"kernel\": \"$(uname -r)\","
    echo "\"kernel_version\": \"$(uname -v)\","
    echo "\"os\": \"Debian $(cat /etc/debian_version)\","
    echo "\"systemd\": \"$(systemctl --version | head -n1)\","
    echo "\"cgroup2_mount_options\": \"$(cg_opts)\","
    echo "\"cgroup_favordynmods_config\": \"$(grep -h CGROUP_FAVOR_DYNMODS /boot/config-"$(uname -r)" 2>/dev/null || echo unknown)\","
    echo "\"cmdline\": \"$(cat /proc/cmdline)\","
    echo "\"berth\": \"$(dpkg-query -W -f '${Version}' berth)\","
    echo "\"python\": \"$($PY --version 2>&1)\","
    echo "\"lighttpd\": \"$(/usr/sbin/lighttpd -v 2>&1 | head -n1)\","
    echo "\"loadavg_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
    echo "\"bench\": {\"a_rounds\": $A_ROUNDS, \"a_per1\": $A_PER1, \"a_per8\": $A_PER8, \"c_n\": $C_N, \"cgattach_n\": $CGA_N, \"fork_n\": $FORK_N, \"phases\": \"$PHASES\", \"modes\": \"$MODES\"}"
    echo "}"
} >"$R/machine.json"
json_ok "$R/machine.json" "machine.json"

# ---------------------------------------------------------------- measurements
# fork+exit and posix_spawn+exit of /bin/true: with favordynmods both pay the
# slow (non-per-CPU) read side of cgroup_threadgroup_rwsem.
fork_bench() { # OUT
    "$PY" - "$FORK_N" >"$1" <<'EOF'
import json, os, sys, time
n = int(sys.argv[1])
def med(v):
    v = sorted(v); return round(v[len(v) // 2], 1)
fork_us, spawn_us = [], []
for _ in range(n):
    t0 = time.perf_counter()
    p = os.fork()
    if p == 0:
        os._exit(0)
    os.waitpid(p, 0)
    fork_us.append((time.perf_counter() - t0) * 1e6)
    t0 = time.perf_counter()
    p = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(p, 0)
    spawn_us.append((time.perf_counter() - t0) * 1e6)
print(json.dumps({"n": n, "fork_exit_us_median": med(fork_us), "spawn_true_us_median": med(spawn_us),
                  "fork_exit_us_p90": round(sorted(fork_us)[int(n * 0.9)], 1),
                  "spawn_true_us_p90": round(sorted(spawn_us)[int(n * 0.9)], 1)}))
EOF
}
phase_a() { # MODE
    local c per
    "${CLIENT[@]}" floor-server $P_FLOOR & local floor=$!
    wait_until 10 listening $P_FLOOR || true
    wait_until 300 warm_ready || note "warning: echo8 has only $(active_scopes echo8) warm scopes"
    for c in 1 8; do
        per=$A_PER1; [ $c = 8 ] && per=$A_PER8
        note "a ($1): $c concurrent, $A_ROUNDS rounds x $per connections per target"
        "${CLIENT[@]}" latency --target "berth_warm0=$P_ECHO0" --target "berth_warm8=$P_ECHO8" \
            --target "systemd_bare=$P_BARE" --target "systemd_sandboxed=$P_SANDBOXED" --target "client_floor=$P_FLOOR" \
            --concurrency $c --rounds "$A_ROUNDS" --per-round "$per" --warmup 2 --timeout 120 >"$R/a_${1}_c$c.json"
        json_ok "$R/a_${1}_c$c.json" "a ($1), $c client(s)"
        wait_until 300 warm_ready || note "warning: echo8 has only $(active_scopes echo8) warm scopes"
    done
    kill "$floor" 2>/dev/null; wait "$floor" 2>/dev/null
}
phase_c() { # MODE
    local i
    note "c ($1): wake from idle, $C_N times each"
    : >"$R/c_${1}_raw.txt"
    for i in $(seq "$C_N"); do
        wait_until 60 webidle_gone || note "warning: webidle container still up"
        sleep 0.3
        echo "berth $("${CLIENT[@]}" first-byte --port $P_WEBIDLE --send "$HTTP_REQ" --timeout 120)" >>"$R/c_${1}_raw.txt"
        wait_until 120 webwake_ready || note "warning: webwake has no warm container: '$(container_states webwake)'"
        sleep 0.3
        echo "berthwarm $("${CLIENT[@]}" first-byte --port $P_WEBWAKE --send "$HTTP_REQ" --timeout 120)" >>"$R/c_${1}_raw.txt"
        systemd-run --quiet --unit=bench-ssa -p User=www-data /usr/bin/systemd-socket-activate \
            -l 127.0.0.1:$P_SSA /usr/sbin/lighttpd -D -f /etc/lighttpd/bench-direct.conf
        wait_until 30 listening $P_SSA || note "warning: systemd-socket-activate not listening"
        sleep 0.1
        echo "ssa $("${CLIENT[@]}" first-byte --port $P_SSA --send "$HTTP_REQ" --timeout 120)" >>"$R/c_${1}_raw.txt"
        systemctl stop bench-ssa.service; systemctl reset-failed bench-ssa.service 2>/dev/null
    done
    if [ "$(grep -c '"error": null' "$R/c_${1}_raw.txt")" = $((3 * C_N)) ]; then ok "c ($1): $((3 * C_N)) wakes answered"
    else nok "c ($1): $(grep -vc '"error": null' "$R/c_${1}_raw.txt") of $((3 * C_N)) wakes failed"; fi
}
measure() { # MODE
    local m=$1
    echo "{\"mode\": \"$m\", \"cgroup2_mount_options\": \"$(cg_opts)\", \"at_s\": $(el)}" >"$R/mode_$m.json"
    if [[ " $PHASES " == *" cgattach "* ]]; then
        note "cgattach ($m), $CGA_N moves per series"
        CGATTACH_N=$CGA_N "$PY" "$P/cgattach.py" >"$R/cgattach_$m.json"
        json_ok "$R/cgattach_$m.json" "cgattach ($m)"
        fork_bench "$R/fork_$m.json"
        json_ok "$R/fork_$m.json" "fork and spawn ($m): $(cat "$R/fork_$m.json")"
    fi
    if [[ " $PHASES " == *" a "* ]]; then phase_a "$m"; fi
    if [[ " $PHASES " == *" c "* ]] && [ "${m%%[0-9]*}" = default ]; then phase_c "$m"; fi
}
remount() { # favordynmods|default
    if [ "$1" = favordynmods ]; then
        # mount(8) merges the options already in place (nsdelegate, memory_recursiveprot) with the new one.
        mount -o remount,favordynmods /sys/fs/cgroup
    else
        # "no"-prefixed options do not exist: a remount with a source lists every option to keep.
        mount -t cgroup2 -o "remount,$(cg_opts | tr ',' '\n' | grep -vx favordynmods | paste -sd, -)" none /sys/fs/cgroup
    fi
    local now; now=$(cg_opts)
    if [ "$1" = favordynmods ]; then
        [[ ",$now," == *,favordynmods,* ]] && ok "remounted with favordynmods: $now" || nok "remount with favordynmods: $now"
    else
        [[ ",$now," != *,favordynmods,* ]] && ok "remounted without favordynmods: $now" || nok "remount without favordynmods: $now"
    fi
    [[ ",$now," == *,nsdelegate,* ]] || nok "nsdelegate lost in the remount: $now"
}

# MODES: in order, e.g. "default favordynmods" or "default favordynmods favordynmods2 default2"
# (a digit suffix repeats a mode, so drift over the run shows).
for m in $MODES; do
    case "${m%%[0-9]*}" in
        favordynmods) [[ ",$(cg_opts)," == *,favordynmods,* ]] || remount favordynmods ;;
        default) [[ ",$(cg_opts)," != *,favordynmods,* ]] || remount default ;;
    esac
    measure "$m"
done
if [[ ",$(cg_opts)," == *,favordynmods,* ]]; then remount default; fi
finish
