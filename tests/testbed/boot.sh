#!/usr/bin/env bash
# Boot a throw-away copy of a testbed tree with systemd-nspawn, in the background.
#
#   tests/testbed/boot.sh TREE STATE_DIR [--userns]
#
# TREE: a directory printed by tree.sh (never modified). STATE_DIR: created if
# missing; receives
#   nspawn.pid   the systemd-nspawn process (SIGTERM powers the container off)
#   leader.pid   the container's systemd (PID 1 inside; nsenter -t it -a ...)
#   cgroup.list  the dedicated cgroup directories (one per hierarchy) to remove
#   root         the container's root directory as seen from the host (STATE_DIR/rootfs)
#   userns       the uid/gid base, with --userns only
#   id           the testbed id (berth-testbed-...), also the cgroup directory name
#   console.log  nspawn's and the container's console output
# Returns once `systemctl is-system-running --wait` says running or degraded
# (timeout BERTH_TESTBED_BOOT_TIMEOUT, default 60 s). On failure it prints the
# failed units and the console log, runs stop.sh (unless
# BERTH_TESTBED_KEEP_ON_FAILURE=1) and exits 1.
#
# Root file system, BERTH_TESTBED_ROOTFS:
#   tmpfs   (default) a copy of the tree on a tmpfs mounted at STATE_DIR/rootfs
#           (size BERTH_TESTBED_TMPFS_SIZE, default 2G): ~0.5 s, steady, idmappable.
#   overlay overlayfs over the tree, upper/work dirs in STATE_DIR: instant, but
#           overlayfs cannot be idmapped, so not with --userns.
#   copy    cp -a into STATE_DIR/rootfs on STATE_DIR's file system (0.5-7 s on ext4 here).
#
# --userns: --private-users=BASE:524288 --private-users-ownership=map with
# BASE = (7 + random 0..1023) * 65536, i.e. 0x70000 .. 0x4070000 (clear of host
# uids, a small chance two parallel testbeds overlap), eight blocks of 65536: the
# testbed's own ids 0-65535 and seven, 65536-524287, for berth's nested user
# namespaces (private_users: the ssh examples, run.sh block c), and the cgroup
# directories chowned to BASE:BASE so the v1 controllers are writable inside:
# MemoryMax/TasksMax enforced, MemoryCurrent/TasksCurrent reported. Without it
# nspawn mounts the controllers read-only (limits recorded, not enforced,
# *Current "[not set]").
#
# Safety: the launcher moves itself into a fresh directory berth-testbed-<id> in
# every cgroup hierarchy, then enters a new cgroup namespace and a private mount
# namespace whose /sys/fs/cgroup/* mount points are bind mounts of those fresh
# directories, then execs systemd-nspawn. Both halves matter: nspawn joins the
# namespaced path from /proc/self/cgroup ("/") with the cgroupfs mounted at
# /sys/fs/cgroup; with the host's mounts left in place, it creates payload/ and
# supervisor/ in the host's ROOT cgroups (seen with unshare --cgroup alone).
# After start-up boot.sh checks that the container's systemd sits below
# /berth-testbed-<id> in every hierarchy and that no payload/supervisor/
# init.scope/*.slice appeared at a hierarchy's root, and stops it if not.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "boot.sh: ERROR: $*" >&2; exit 1; }
[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: boot.sh TREE STATE_DIR [--userns]"
USERNS=0
case "${3:-}" in "") ;; --userns) USERNS=1 ;; *) die "unknown option $3" ;; esac
TREE=$(realpath -e "$1") || die "no tree $1"
TIMEOUT=${BERTH_TESTBED_BOOT_TIMEOUT:-60}
MODE=${BERTH_TESTBED_ROOTFS:-tmpfs}

[ "$(id -u)" = 0 ] || die "must run as root"
[ -f "$TREE/etc/berth-testbed-tree" ] || die "$TREE is not a testbed tree (run tree.sh)"
command -v systemd-nspawn >/dev/null || die "systemd-nspawn missing (tree.sh installs it)"
case "$MODE" in tmpfs|copy) ;; overlay) [ $USERNS = 0 ] || die "BERTH_TESTBED_ROOTFS=overlay cannot be idmapped: not with --userns" ;;
    *) die "BERTH_TESTBED_ROOTFS must be tmpfs, overlay or copy" ;; esac
mkdir -p "$2"
STATE=$(realpath -e "$2")
if [ -f "$STATE/nspawn.pid" ] && [ -d "/proc/$(cat "$STATE/nspawn.pid")" ]; then
    die "$STATE already has a running testbed (stop.sh it first)"
fi
"$HERE/stop.sh" "$STATE" 2>/dev/null || true     # leftovers of an earlier run in this STATE_DIR

ID=berth-testbed-$(date +%s)-$$-$RANDOM
ROOT=$STATE/rootfs
rm -f "$STATE"/{userns,console.log}
echo "$ID" >"$STATE/id"

BOOTED=0
fail() {
    echo "boot.sh: ERROR: $*" >&2
    if [ -f "$STATE/leader.pid" ] && [ -d "/proc/$(cat "$STATE/leader.pid")" ]; then
        echo "--- failed units:" >&2
        timeout 5 nsenter -t "$(cat "$STATE/leader.pid")" -a systemctl --failed --no-pager >&2 || true
        echo "--- jobs:" >&2
        timeout 5 nsenter -t "$(cat "$STATE/leader.pid")" -a systemctl list-jobs --no-pager >&2 || true
    fi
    if [ -s "$STATE/console.log" ]; then
        echo "--- console log ($STATE/console.log):" >&2
        tail -n 60 "$STATE/console.log" >&2 || true
    fi
    exit 1
}
on_exit() {
    [ $BOOTED = 1 ] && return 0
    if [ "${BERTH_TESTBED_KEEP_ON_FAILURE:-0}" = 1 ]; then
        echo "boot.sh: keeping the failed testbed; clean up with: $HERE/stop.sh $STATE" >&2
    else
        "$HERE/stop.sh" "$STATE" >&2 || true
    fi
}
trap on_exit EXIT
t0=$(date +%s.%N)

# 1. The throw-away root.
mkdir -p "$ROOT"
echo "$ROOT" >"$STATE/root"
case "$MODE" in
    tmpfs)
        mount -t tmpfs -o "mode=0755,size=${BERTH_TESTBED_TMPFS_SIZE:-2G}" berth-testbed "$ROOT"
        cp -a "$TREE/." "$ROOT/" ;;
    overlay)
        mkdir -p "$STATE/upper" "$STATE/work"
        mount -t overlay berth-testbed \
            -o "lowerdir=$TREE,upperdir=$STATE/upper,workdir=$STATE/work" "$ROOT" ;;
    copy) cp -a --reflink=auto "$TREE/." "$ROOT/" ;;
esac
systemd-id128 new >"$ROOT/etc/machine-id"   # a fresh identity per boot, not a "first boot"
t1=$(date +%s.%N)

# 2. A fresh directory in every cgroup hierarchy (v1 controllers, name=systemd, cgroup2).
mapfile -t MOUNTS < <(awk '($9=="cgroup"||$9=="cgroup2") && $5 ~ "^/sys/fs/cgroup" {print $5}' \
                      /proc/self/mountinfo | sort -u)
[ ${#MOUNTS[@]} -gt 0 ] || fail "no cgroup hierarchies mounted below /sys/fs/cgroup"
: >"$STATE/cgroup.list"
for m in "${MOUNTS[@]}"; do
    d=$m/$ID
    echo "$d" >>"$STATE/cgroup.list"     # recorded first: stop.sh cleans even a half-made set
    mkdir "$d"
    if [ -f "$d/cpuset.cpus" ]; then
        cat "$m/cpuset.cpus" >"$d/cpuset.cpus"
        cat "$m/cpuset.mems" >"$d/cpuset.mems"
    fi
done

# Cgroups a systemd would create; none may appear at a hierarchy's root.
host_root_intruders() {
    local m n
    for m in "${MOUNTS[@]}"; do
        for n in payload supervisor init.scope system.slice user.slice machine.slice; do
            if [ -d "$m/$n" ]; then echo "$m/$n"; fi
        done
    done
}
INTRUDERS_BEFORE=$(host_root_intruders)

NSPAWN_ARGS=(-D "$ROOT" -b --register=no --keep-unit --link-journal=no
             --console=read-only --machine="tb-${ID##*-}" --setenv=SYSTEMD_COLORS=0)
BASE=
if [ $USERNS = 1 ]; then
    BASE=$(( (7 + RANDOM % 1024) * 65536 ))
    echo "$BASE" >"$STATE/userns"
    while read -r d; do chown -R "$BASE:$BASE" "$d"; done <"$STATE/cgroup.list"
    NSPAWN_ARGS+=(--private-users="$BASE:524288" --private-users-ownership=map)
    # nspawn drops CAP_NET_ADMIN when it shares the host network; berth needs
    # it to bring lo up in each container's new network namespace. Inside its
    # own user namespace this grants nothing over the host's network.
    NSPAWN_ARGS+=(--capability=CAP_NET_ADMIN)
fi

# 3. Launch. The subshell moves itself into every fresh directory first, then
#    (no fork from here on: the pid stays that of systemd-nspawn) a new session,
#    a new cgroup namespace and a private mount namespace in which each
#    hierarchy's mount point gets a bind mount of its fresh directory.
(
    while read -r d; do echo "$BASHPID" >"$d/cgroup.procs"; done <"$STATE/cgroup.list"
    exec setsid unshare --cgroup --mount --propagation=private -- /bin/bash -c '
        set -e
        list=$1 id=$2; shift 2
        while read -r d; do mount --bind "$d" "${d%/"$id"}"; done <"$list"
        exec systemd-nspawn "$@"' boot-launch "$STATE/cgroup.list" "$ID" "${NSPAWN_ARGS[@]}" \
        </dev/null >"$STATE/console.log" 2>&1
) &
NSPAWN=$!
disown "$NSPAWN"
echo "$NSPAWN" >"$STATE/nspawn.pid"

# 4. The leader: the child of systemd-nspawn once it has exec'd systemd.
deadline=$(( $(date +%s) + TIMEOUT ))
LEADER=
while :; do
    [ -d "/proc/$NSPAWN" ] || fail "systemd-nspawn exited during start-up"
    # its start time guards stop.sh against a recycled pid
    [ -s "$STATE/nspawn.start" ] || awk '{print $22}' "/proc/$NSPAWN/stat" >"$STATE/nspawn.start"
    for c in $(cat /proc/"$NSPAWN"/task/*/children 2>/dev/null); do
        if [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ]; then LEADER=$c; fi
    done
    [ -n "$LEADER" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || fail "no container systemd after ${TIMEOUT}s"
    sleep 0.02
done
echo "$LEADER" >"$STATE/leader.pid"

# Guards: the container's systemd lives below our directories in every hierarchy
# (as seen from the host's cgroup namespace); nothing new at the hierarchy roots.
while IFS=: read -r _ ctrl path; do
    case "$path" in "/$ID"|"/$ID/"*) ;;
        *) fail "container systemd is in cgroup ${ctrl:-cgroup2}:$path, outside /$ID" ;;
    esac
done <"/proc/$LEADER/cgroup"
[ "$(host_root_intruders)" = "$INTRUDERS_BEFORE" ] ||
    fail "new cgroups at a hierarchy root: $(host_root_intruders | tr '\n' ' ')- check they are empty and rmdir them"

# 5. Wait for the boot to finish (the bus may not be up yet: retry).
state=
while :; do
    left=$(( deadline - $(date +%s) ))
    [ "$left" -gt 0 ] || fail "boot not finished after ${TIMEOUT}s (state: ${state:-unknown})"
    state=$(timeout "$left" nsenter -t "$LEADER" -a systemctl is-system-running --wait 2>/dev/null) || true
    case "$state" in
        running) break ;;
        degraded)
            echo "boot.sh: warning: system degraded; failed units:" >&2
            nsenter -t "$LEADER" -a systemctl --failed --no-legend --no-pager >&2 || true
            break ;;
        # "offline": asked before systemd created /run/systemd/system; not up yet.
        maintenance|stopping) fail "system state $state" ;;
    esac
    [ -d "/proc/$NSPAWN" ] || fail "systemd-nspawn exited during boot"
    sleep 0.1
done
BOOTED=1
t2=$(date +%s.%N)
printf 'boot.sh: %s %s (%s, rootfs %s): rootfs %.2fs, boot %.2fs; nspawn %s, leader %s\n' \
    "$ID" "$state" "$([ $USERNS = 1 ] && echo "userns base $BASE" || echo "no userns")" "$MODE" \
    "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$NSPAWN" "$LEADER" >&2
