#!/usr/bin/env bash
# Stop a testbed started by boot.sh and clean up after it. Idempotent; safe in
# `trap '.../stop.sh DIR' EXIT`.
#
#   tests/testbed/stop.sh STATE_DIR
#
# SIGTERM to systemd-nspawn (the container powers off, ~0.3 s measured), SIGKILL to that
# pid after BERTH_TESTBED_STOP_TIMEOUT (default 20) s; then SIGKILL to whatever is
# still left in the testbed's own cgroup directories (only processes boot.sh
# started can be there), rmdir those directories depth-first, remove the root copy.
# Keeps STATE_DIR/console.log.
set -uo pipefail
STATE=${1:?usage: stop.sh STATE_DIR}
TIMEOUT=${BERTH_TESTBED_STOP_TIMEOUT:-20}
log() { echo "stop.sh: $*" >&2; }
[ -d "$STATE" ] || exit 0
rc=0

alive() { [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# Only directories named berth-testbed-* right below a hierarchy's root are ours.
ours() { [[ "$1" =~ ^/sys/fs/cgroup/[^/]+/berth-testbed-[0-9]+-[0-9]+-[0-9]+$ ]]; }

# pids in our cgroup dirs (recursively); these are only processes boot.sh started.
cgroup_pids() {
    [ -f "$STATE/cgroup.list" ] || return 0
    local d
    while read -r d; do
        ours "$d" || continue
        [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
    done <"$STATE/cgroup.list" | sort -un
}

# 1. Power off via systemd-nspawn.
if [ -f "$STATE/nspawn.pid" ]; then
    pid=$(cat "$STATE/nspawn.pid")
    start=$(cat "$STATE/nspawn.start" 2>/dev/null || true)
    if alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd-nspawn ] &&
       { [ -z "$start" ] || [ "$(awk '{print $22}' "/proc/$pid/stat")" = "$start" ]; }; then
        kill -TERM "$pid" 2>/dev/null
        end=$(( $(date +%s) + TIMEOUT ))
        while alive "$pid" && [ "$(date +%s)" -lt "$end" ]; do sleep 0.05; done
        if alive "$pid"; then
            log "systemd-nspawn $pid still running after ${TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null; rc=1
        fi
    fi
fi

# 2. Anything left in our cgroups (e.g. the container after nspawn was killed).
for i in $(seq 1 100); do
    pids=$(cgroup_pids)
    [ -z "$pids" ] && break
    [ "$i" = 1 ] && { log "killing leftover processes in the testbed cgroups: $(echo $pids)"; rc=1; }
    # the container's PID 1 first: its death empties its whole pid namespace
    lp=$(cat "$STATE/leader.pid" 2>/dev/null || true)
    if [ -n "$lp" ] && grep -qx "$lp" <<<"$pids"; then kill -KILL "$lp" 2>/dev/null; fi
    for p in $pids; do kill -KILL "$p" 2>/dev/null; done
    sleep 0.1
done

# 3. Remove the cgroup directories, deepest first.
if [ -f "$STATE/cgroup.list" ]; then
    left=0
    while read -r d; do
        ours "$d" || { log "refusing to touch $d"; continue; }
        [ -d "$d" ] || continue
        for i in $(seq 1 50); do
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
            [ -d "$d" ] || break
            sleep 0.1
        done
        [ -d "$d" ] && { log "could not remove $d"; left=1; }
    done <"$STATE/cgroup.list"
    if [ $left = 0 ]; then rm -f "$STATE/cgroup.list"; else rc=1; fi
fi

# 4. The throw-away root: unmount our tmpfs/overlay (only a mount named
#    berth-testbed), then remove what is left below STATE_DIR.
root=$(realpath -m "$STATE")/rootfs
if [ -d "$root" ]; then
    for i in 1 2 3; do
        mountpoint -q "$root" || break
        [ "$(findmnt -no SOURCE --mountpoint "$root" | tail -n1)" = berth-testbed ] ||
            { log "$root is a foreign mount: left alone"; rc=1; break; }
        umount "$root" 2>/dev/null || { sleep 0.2; [ $i = 3 ] && umount -l "$root"; }
    done
    if ! mountpoint -q "$root"; then
        rm -rf --one-file-system "$root" "$STATE/upper" "$STATE/work" || rc=1
    fi
fi
[ -e "$root" ] || rm -f "$STATE/root"
rm -f "$STATE"/{nspawn.pid,nspawn.start,leader.pid}
exit $rc
