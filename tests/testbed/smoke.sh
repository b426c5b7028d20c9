#!/usr/bin/env bash
# Smoke test of testbed 1: builds (or reuses) the tree, boots it without and with
# --userns, and checks the real systemd, bus, journal, cgroup limits and socket
# activation reachable from the host. Exit 0 only if every check passed; the
# last line is "N passed, N failed". Always stops the testbeds (trap).
#
#   tests/testbed/smoke.sh            (as root)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "smoke.sh: must run as root" >&2; exit 2; }

PASS=0 FAIL=0
TIMINGS=()
now() { date +%s.%N; }
since() { printf '%.2f' "$(echo "$(now) - $1" | bc)"; }
ok()   { PASS=$((PASS + 1)); echo "  ok   $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "  FAIL $*"; }
note() { echo "  note $*"; }
# check DESC EXPECTED-REGEX CMD...: CMD must exit 0 and print a line matching the regex.
check() {
    local desc=$1 re=$2 out rc; shift 2
    out=$("$@" 2>&1); rc=$?
    if [ $rc -eq 0 ] && grep -qE -- "$re" <<<"$out"; then ok "$desc"
    else bad "$desc: exit $rc, wanted /$re/, got: $(head -c 600 <<<"$out")"; fi
}

PID1_CGROUP_BEFORE=$(cat /proc/1/cgroup)
WORK=$(mktemp -d /tmp/berth-testbed-smoke.XXXXXX)
STATES=()
cleanup() {
    local s
    for s in "${STATES[@]}"; do "$HERE/stop.sh" "$s" || echo "smoke.sh: stop.sh $s failed" >&2; done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM HUP

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 20000))
        [ -z "$(ss -Htan "sport = :$p")" ] && { echo $p; return; }
    done
    echo 0
}

run_mode() {   # run_mode NAME [--userns]
    local name=$1 flag=${2:-} S=$WORK/$1 t IN id port out
    S=$WORK/$name; STATES+=("$S")
    IN=("$HERE/in.sh" "$S")
    echo "== $name: boot"
    t=$(now)
    if ! "$HERE/boot.sh" "$TREE" "$S" $flag; then
        bad "$name: boot"; TIMINGS+=("boot $name: FAILED"); return
    fi
    TIMINGS+=("boot $name: $(since "$t")s"); ok "$name: booted to $("${IN[@]}" systemctl is-system-running)"
    id=$(cat "$S/id")
    t=$(now)

    check "$name: systemd is PID 1 inside" '^systemd$' "${IN[@]}" cat /proc/1/comm
    check "$name: PID 1 runs /usr/lib/systemd/systemd" 'systemd/systemd$' "${IN[@]}" readlink /proc/1/exe
    check "$name: busctl --system reads Manager.Version" '^v s "252' \
        "${IN[@]}" busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
        org.freedesktop.DBus.Properties Get ss org.freedesktop.systemd1.Manager Version
    check "$name: dbus-daemon is the bus" 'org.freedesktop.DBus' "${IN[@]}" busctl --system list --no-pager
    check "$name: systemd-run with MemoryMax/TasksMax runs in its own unit cgroup" \
        '^[0-9]+:name=systemd:/system.slice/run-.*\.service$' \
        "${IN[@]}" systemd-run --wait --pipe --quiet -p MemoryMax=64M -p TasksMax=16 /bin/sh -c 'cat /proc/self/cgroup'

    # journald
    "${IN[@]}" systemd-run --wait --quiet --unit=tb-hello sh -c 'echo hello-tb >&2' >/dev/null 2>&1
    out=
    for _ in $(seq 1 20); do
        out=$("${IN[@]}" journalctl -u tb-hello --no-pager -o cat 2>&1) && grep -q '^hello-tb$' <<<"$out" && break
        sleep 0.1
    done
    if grep -q '^hello-tb$' <<<"$out"; then ok "$name: journald has the unit's stderr (journalctl -u tb-hello)"
    else bad "$name: journald: journalctl -u tb-hello gave: $out"; fi

    # transient service with limits
    "${IN[@]}" systemd-run --quiet --unit=tb-probe -p MemoryMax=50M -p TasksMax=8 sleep 30 >/dev/null 2>&1
    check "$name: tb-probe records MemoryMax=50M TasksMax=8" '^MemoryMax=52428800$' \
        "${IN[@]}" systemctl show -p MemoryMax,TasksMax tb-probe
    check "$name: tb-probe TasksMax=8" '^TasksMax=8$' "${IN[@]}" systemctl show -p TasksMax tb-probe
    if [ "$flag" = --userns ]; then
        check "$name: memory.limit_in_bytes of tb-probe is 50M (inside)" '^52428800$' \
            "${IN[@]}" cat /sys/fs/cgroup/memory/system.slice/tb-probe.service/memory.limit_in_bytes
        check "$name: pids.max of tb-probe is 8 (inside)" '^8$' \
            "${IN[@]}" cat /sys/fs/cgroup/pids/system.slice/tb-probe.service/pids.max
        check "$name: host sees it in /sys/fs/cgroup/memory/$id/system.slice/tb-probe.service" '^52428800$' \
            cat "/sys/fs/cgroup/memory/$id/system.slice/tb-probe.service/memory.limit_in_bytes"
        check "$name: MemoryCurrent is reported" '^MemoryCurrent=[0-9]+$' \
            "${IN[@]}" systemctl show -p MemoryCurrent tb-probe
        check "$name: TasksCurrent is reported" '^TasksCurrent=1$' \
            "${IN[@]}" systemctl show -p TasksCurrent tb-probe
        # enforcement, not just bookkeeping
        out=$("${IN[@]}" systemd-run --wait --pipe --quiet -p TasksMax=4 \
              sh -c 'for i in 1 2 3 4 5 6 7 8; do sleep 3 & done; echo all-forked' 2>&1); rc=$?
        if [ $rc -ne 0 ] && grep -qi 'fork' <<<"$out" && ! grep -q all-forked <<<"$out"; then
            ok "$name: TasksMax=4 is enforced (fork fails)"
        else bad "$name: TasksMax=4 not enforced: exit $rc: $out"; fi
        out=$("${IN[@]}" systemd-run --wait --quiet -p MemoryMax=32M -p MemorySwapMax=0 \
              sh -c 'head -c 256M /dev/zero | tail -n 1 >/dev/null' 2>&1); rc=$?
        if [ $rc -ne 0 ]; then ok "$name: MemoryMax=32M is enforced (256M allocation: exit $rc)"
        else bad "$name: MemoryMax=32M not enforced (256M allocation succeeded)"; fi
        check "$name: unshare -m -p -f --mount-proc inside a service: the child is PID 1" '^1 \(cat\)' \
            "${IN[@]}" systemd-run --wait --pipe --quiet unshare -m -p -f --mount-proc cat /proc/self/stat
        out=$("${IN[@]}" systemd-run --wait --pipe --quiet unshare -n ip -o link 2>&1); rc=$?
        if [ $rc -eq 0 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q '^1: lo:' <<<"$out"; then
            ok "$name: unshare -n inside a service: only lo"
        else bad "$name: unshare -n inside a service: exit $rc: $out"; fi
    else
        out=$("${IN[@]}" systemctl show -p MemoryCurrent,TasksCurrent tb-probe | tr '\n' ' ')
        note "$name: without userns limits are recorded only: $out"
    fi
    "${IN[@]}" systemctl stop tb-probe >/dev/null 2>&1

    # socket unit reachable from the host's loopback
    port=$(free_port)
    "${IN[@]}" sh -c "cat >/etc/systemd/system/tb-echo.socket" <<UNIT
[Socket]
ListenStream=127.0.0.1:$port
Accept=yes
UNIT
    "${IN[@]}" sh -c "cat >/etc/systemd/system/tb-echo@.service" <<'UNIT'
[Service]
ExecStart=/bin/echo hi
StandardInput=socket
UNIT
    "${IN[@]}" systemctl daemon-reload && "${IN[@]}" systemctl start tb-echo.socket
    check "$name: tb-echo.socket listens on 127.0.0.1:$port" '^active$' "${IN[@]}" systemctl is-active tb-echo.socket
    check "$name: host connects to 127.0.0.1:$port and reads hi" '^hi$' \
        timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; cat <&3"
    check "$name: a second connection spawns another instance" '^hi$' \
        timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; cat <&3"
    TIMINGS+=("checks $name: $(since "$t")s")

    echo "== $name: stop"
    t=$(now)
    local npid; npid=$(cat "$S/nspawn.pid")
    if "$HERE/stop.sh" "$S"; then ok "$name: stop.sh clean"; else bad "$name: stop.sh reported leftovers"; fi
    TIMINGS+=("stop $name: $(since "$t")s")
    if [ -d "/proc/$npid" ] && [ "$(awk '{print $3}' "/proc/$npid/stat")" != Z ]; then
        bad "$name: systemd-nspawn $npid still running"; else ok "$name: systemd-nspawn $npid gone"; fi
    if ls -d /sys/fs/cgroup/*/"$id" >/dev/null 2>&1; then
        bad "$name: cgroup dirs left: $(ls -d /sys/fs/cgroup/*/"$id")"; else ok "$name: cgroup dirs $id removed"; fi
    if "$HERE/stop.sh" "$S"; then ok "$name: stop.sh again is a no-op"; else bad "$name: second stop.sh failed"; fi
    if [ -e "$S/rootfs" ]; then bad "$name: $S/rootfs left"; fi
}

echo "== tree"
t=$(now)
TREE=$("$HERE/tree.sh" | tail -n 1)
if [ -f "$TREE/etc/berth-testbed-tree" ]; then ok "tree $TREE"; else bad "tree.sh gave no tree"; echo "0 passed, 1 failed"; exit 1; fi
TIMINGS+=("tree: $(since "$t")s")

run_mode plain
run_mode userns --userns

echo "== host"
if [ "$(cat /proc/1/cgroup)" = "$PID1_CGROUP_BEFORE" ]; then ok "host PID 1 cgroups unchanged"
else bad "host PID 1 cgroups CHANGED: $(cat /proc/1/cgroup | tr '\n' ' ')"; fi
for m in /sys/fs/cgroup/*; do
    for n in payload supervisor init.scope system.slice; do
        [ -d "$m/$n" ] && bad "host cgroup root has $m/$n"
    done
done
echo "== timings"
printf '  %s\n' "${TIMINGS[@]}"
echo "$PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
