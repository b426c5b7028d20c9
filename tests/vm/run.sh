#!/usr/bin/env bash
# Testbed 2: production parity on cgroup v2, in a qemu VM (see shared/TESTBED.md).
#
#   tests/vm/run.sh [--deb FILE]
#   tests/vm/run.sh --prepare      # only build (or check) the cached image
#
# Other guest scripts (the benchmark, tests/bench/vm.sh) reuse the image and
# the boot through the environment; unset, the VM test runs as always:
#   BERTH_VM_GUEST=FILE          run FILE in the guest instead of tests/vm/guest.sh
#   BERTH_VM_PAYLOAD_EXTRA="F.." more files for the payload (next to guest.sh)
#   BERTH_VM_GUEST_TIMEOUT=S     the guest's own limit for its script (540 s)
#   BERTH_VM_RESULTS=FILE        a third virtio disk (/dev/vdc, 64 MiB, written
#                                by the guest, e.g. a tar), copied to FILE after
#
# 1. Builds the package from the current tree (packaging/build-deb.sh), unless
#    --deb names one.
# 2. Builds (or reuses) a VM image: debootstrapped bookworm (minbase + kernel,
#    systemd, dbus, lighttpd, curl, procps), configured to boot fast, made into
#    an ext4 image with mkfs.ext4 -d. Cached under
#    ${BERTH_TESTBED_CACHE:-/var/tmp/berth-testbed}/vm-<hash>, where the hash
#    covers SUITE, PACKAGES, VM_VERSION and the text of configure_tree, so a
#    change to either builds a new image (about 3 minutes).
# 3. Boots it with qemu (TCG, never KVM) on the full cgroup v2 hierarchy. The
#    root image is used with -snapshot (never modified); a second virtio disk
#    holds a tar of the .deb and tests/vm/guest.sh. The image's enabled unit
#    berth-vm-test.service unpacks it and runs guest.sh, which prints
#    "berth-vm: ok - ..." / "berth-vm: not ok - ..." lines and a final
#    "berth-vm: N passed, M failed" line on the serial console, then the unit's
#    SuccessAction/FailureAction powers the VM off.
# 4. Prints those lines; exits 0 only if the guest reported no failure.
#    Timeout BERTH_VM_TIMEOUT (default 900 s) for the boot and the guest tests:
#    qemu is then killed by its pid and the console tail is printed.
#
# The console log and the payload are kept in BERTH_VM_WORK (default: a fresh
# directory below the cache, removed on success unless BERTH_VM_KEEP=1).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

SUITE=bookworm
# python3: tests/bench/client.py runs in the guest for the benchmark (tests/bench/vm.sh).
PACKAGES="linux-image-cloud-amd64,initramfs-tools,systemd,systemd-sysv,dbus,lighttpd,curl,procps,python3"
VM_VERSION=1
CACHE=${BERTH_TESTBED_CACHE:-/var/tmp/berth-testbed}
TIMEOUT=${BERTH_VM_TIMEOUT:-900}
GUEST=${BERTH_VM_GUEST:-$HERE/guest.sh}
GUEST_TIMEOUT=${BERTH_VM_GUEST_TIMEOUT:-540}
RESULTS_FILE=${BERTH_VM_RESULTS:-}

log() { echo "vm/run.sh: $*" >&2; }
die() { echo "vm/run.sh: ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

DEB=
PREPARE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) DEB=$(realpath -e "${2:?--deb needs a file}"); shift 2 ;;
        --prepare) PREPARE=1; shift ;;
        *) die "usage: tests/vm/run.sh [--deb FILE] | --prepare" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, mkfs.ext4 -d with ownership)"

ensure_host_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
    command -v bc >/dev/null || missing+=(bc)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >&2
}

# Make the tree boot fast on the serial console, straight into the test unit.
configure_tree() {
    local t=$1 u
    echo berth-vm >"$t/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tberth-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$t/etc/hosts"
    printf '/dev/vda\t/\text4\trw,noatime\t0\t0\n' >"$t/etc/fstab"
    # Root login locked: nobody logs in, the test unit runs by itself.
    sed -i 's/^root:[^:]*:/root:!:/' "$t/etc/shadow"
    for u in getty@.service serial-getty@.service console-getty.service getty.target \
             systemd-networkd-wait-online.service systemd-networkd.service systemd-networkd.socket \
             systemd-resolved.service systemd-timesyncd.service \
             apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
             e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer dpkg-db-backup.timer \
             systemd-firstboot.service systemd-hwdb-update.service systemd-fsck-root.service \
             systemd-journald-audit.socket systemd-logind.service \
             systemd-update-utmp.service systemd-update-utmp-runlevel.service; do
        ln -sfn /dev/null "$t/etc/systemd/system/$u"
    done
    # lighttpd runs only inside berth's containers.
    rm -f "$t/etc/systemd/system/multi-user.target.wants/lighttpd.service"
    mkdir -p "$t/etc/systemd/system.conf.d" "$t/etc/systemd/journald.conf.d"
    cat >"$t/etc/systemd/system.conf.d/berth-vm.conf" <<'CONF'
[Manager]
DefaultTimeoutStartSec=60s
DefaultTimeoutStopSec=10s
CONF
    cat >"$t/etc/systemd/journald.conf.d/berth-vm.conf" <<'CONF'
[Journal]
Storage=volatile
RateLimitBurst=0
CONF
    # The test runner: the payload disk (/dev/vdb) is a tar of guest.sh and the .deb.
    cat >"$t/etc/systemd/system/berth-vm-test.service" <<'UNIT'
[Unit]
Description=berth VM tests (payload on /dev/vdb)
After=multi-user.target dbus.service
ConditionPathExists=/dev/vdb

[Service]
Type=oneshot
# The payload's guest-timeout (seconds) bounds the script: the VM test's
# 540 s, longer for the benchmark ($$ is a literal $ for systemd).
ExecStart=/bin/sh -c 'mkdir -p /run/berth-vm && tar -xf /dev/vdb -C /run/berth-vm && exec timeout "$$(cat /run/berth-vm/guest-timeout 2>/dev/null || echo 540)" /bin/bash /run/berth-vm/guest.sh'
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
TimeoutStartSec=infinity
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Install]
WantedBy=multi-user.target
UNIT
    ln -sfn /etc/systemd/system/berth-vm-test.service \
        "$t/etc/systemd/system/multi-user.target.wants/berth-vm-test.service"
    # A small initramfs: only what finds an ext4 root on virtio (built in a
    # chroot, so MODULES=dep cannot work).
    sed -i 's/^MODULES=.*/MODULES=list/' "$t/etc/initramfs-tools/initramfs.conf"
    printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >>"$t/etc/initramfs-tools/modules"
    chroot "$t" update-initramfs -u -k all >&2
    systemd-id128 new >"$t/etc/machine-id"
    rm -rf "$t"/var/cache/apt/archives/*.deb "$t"/var/lib/apt/lists/*_* 2>/dev/null || true
    echo "$HASH" >"$t/etc/berth-vm-tree"
}

ensure_host_tools
T0=$(now)

# 1. The package.
if [ $PREPARE = 1 ]; then DEB=/dev/null; fi
WORK=${BERTH_VM_WORK:-}
if [ -z "$WORK" ]; then mkdir -p "$CACHE"; WORK=$(mktemp -d "$CACHE/vm-run.XXXXXX"); fi
mkdir -p "$WORK"
if [ -z "$DEB" ]; then
    log "building the package"
    DEB=$("$REPO/packaging/build-deb.sh" "$WORK" | tail -n1)
    [ -f "$DEB" ] || die "packaging/build-deb.sh did not produce a .deb"
fi
T_DEB=$(since "$T0")
log "package $DEB (${T_DEB}s)"

# 2. The image (cached).
HASH=$(printf '%s\n' "$SUITE" "$PACKAGES" "$VM_VERSION" "$(uname -m)" \
       "$(sed -n '/^configure_tree()/,/^}/p' "$0")" | sha256sum | cut -c1-16)
VM=$CACHE/vm-$HASH
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-vm-$HASH"
flock 9
if [ -f "$VM/ok" ]; then
    log "reusing cached $VM"
else
    T1=$(now)
    TMP=$(mktemp -d "$CACHE/.build-vm-$HASH.XXXXXX")
    trap 'rm -rf --one-file-system "$TMP"' EXIT
    log "debootstrap $SUITE into $TMP (a few minutes)"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$TMP/tree" >"$TMP/debootstrap.log" 2>&1; then
        tail -n 30 "$TMP/debootstrap.log" >&2
        [ -f "$TMP/tree/debootstrap/debootstrap.log" ] && tail -n 30 "$TMP/tree/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    configure_tree "$TMP/tree" >"$TMP/configure.log" 2>&1 || { tail -n 30 "$TMP/configure.log" >&2; die "configure_tree failed"; }
    kernel=$(ls "$TMP"/tree/boot/vmlinuz-* | sort -V | tail -n1)
    initrd=$(ls "$TMP"/tree/boot/initrd.img-* | sort -V | tail -n1)
    cp "$kernel" "$TMP/vmlinuz"
    cp "$initrd" "$TMP/initrd.img"
    # Room for the package, the containers' tmpfs-less writes and the logs.
    size_mb=$(( $(du -sm "$TMP/tree" | cut -f1) + 512 ))
    mkfs.ext4 -q -F -L berth-vm -E root_owner=0:0 -d "$TMP/tree" "$TMP/root.img" "${size_mb}M"
    rm -rf --one-file-system "$TMP/tree"
    echo "$HASH" >"$TMP/ok"
    rm -rf "$VM"
    mv -T "$TMP" "$VM"
    trap - EXIT
    log "built $VM in $(since "$T1")s (image ${size_mb} MB, sparse)"
fi
touch "$VM/ok"
exec 9>&-
# VM images of other hashes unused for 7 days are removed.
for old in "$CACHE"/vm-*/ok; do
    [ "$old" = "$VM/ok" ] && continue
    if [ -n "$(find "$old" -mtime +7)" ]; then rm -rf --one-file-system "${old%/ok}"; fi
done 2>/dev/null || true
# Work directories of earlier runs (kept on failure) older than a day.
find "$CACHE" -maxdepth 1 -name 'vm-run.*' -mmin +1440 -exec rm -rf --one-file-system {} + 2>/dev/null || true
T_IMG=$(since "$T0")
if [ $PREPARE = 1 ]; then [ -n "${BERTH_VM_WORK:-}" ] || rm -rf "$WORK"; log "image ready: $VM"; exit 0; fi

# 3. The payload disk and the boot.
mkdir -p "$WORK/payload"
cp "$DEB" "$WORK/payload/berth.deb"
cp "$GUEST" "$WORK/payload/guest.sh"
for f in ${BERTH_VM_PAYLOAD_EXTRA:-}; do cp "$f" "$WORK/payload/"; done
echo "$GUEST_TIMEOUT" >"$WORK/payload/guest-timeout"
tar -C "$WORK/payload" -cf "$WORK/payload.tar" .
RESULTS_DRIVE=()
if [ -n "$RESULTS_FILE" ]; then
    # Written by the guest: snapshot=off overrides -snapshot for this disk only.
    truncate -s 64M "$WORK/results.img"
    RESULTS_DRIVE=(-drive file="$WORK/results.img",if=virtio,format=raw,snapshot=off)
fi
CONSOLE=$WORK/console.log
: >"$CONSOLE"

T2=$(now)
log "booting the VM (TCG, timeout ${TIMEOUT}s); console: $CONSOLE"
TMPDIR=$WORK qemu-system-x86_64 \
    -accel tcg -cpu max -m 1024 -smp 2 \
    -nodefaults -no-user-config -display none -nic none \
    -kernel "$VM/vmlinuz" -initrd "$VM/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 panic=-1 loglevel=4 systemd.log_color=0" \
    -drive file="$VM/root.img",if=virtio,format=raw \
    -drive file="$WORK/payload.tar",if=virtio,format=raw,readonly=on "${RESULTS_DRIVE[@]}" \
    -snapshot -serial file:"$CONSOLE" -no-reboot \
    </dev/null >"$WORK/qemu.log" 2>&1 &
QEMU=$!
echo "$QEMU" >"$WORK/qemu.pid"
stop_qemu() {
    if [ -d "/proc/$QEMU" ]; then
        kill -TERM "$QEMU" 2>/dev/null || true
        for _ in $(seq 1 50); do [ -d "/proc/$QEMU" ] || break; sleep 0.1; done
        kill -KILL "$QEMU" 2>/dev/null || true
    fi
}
trap stop_qemu EXIT

deadline=$(( $(date +%s) + TIMEOUT ))
TIMED_OUT=0
SUMMARY_SEEN=0
while [ -d "/proc/$QEMU" ] && [ "$(awk '{print $3}' "/proc/$QEMU/stat" 2>/dev/null)" != Z ]; do
    # The results are in once the guest printed its summary; its power-off
    # gets 60 s more, then qemu is ended (a slow TCG shutdown is no failure).
    if [ $SUMMARY_SEEN = 0 ] && tr -d '\r' <"$CONSOLE" | grep -Eq 'berth-vm: [0-9]+ passed, [0-9]+ failed$'; then
        SUMMARY_SEEN=1
        deadline=$(( $(date +%s) + 60 ))
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        [ $SUMMARY_SEEN = 1 ] || TIMED_OUT=1
        break
    fi
    sleep 1
done
if [ $TIMED_OUT = 1 ]; then
    log "timeout after ${TIMEOUT}s: killing qemu $QEMU"
    stop_qemu
elif [ -d "/proc/$QEMU" ] && [ "$(awk '{print $3}' "/proc/$QEMU/stat" 2>/dev/null)" != Z ]; then
    log "the guest reported its results but did not power off within 60 s: ending qemu $QEMU"
    stop_qemu
fi
QRC=0
wait "$QEMU" || QRC=$?
trap - EXIT
T_RUN=$(since "$T2")

# 4. Results.
RESULTS=$(tr -d '\r' <"$CONSOLE" | sed -n 's/^.*berth-vm: //p')
printf '%s\n' "$RESULTS"
SUMMARY=$(printf '%s\n' "$RESULTS" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n1 || true)
STATUS=0
if [ $TIMED_OUT = 1 ]; then
    STATUS=1; echo "not ok - the VM did not finish within ${TIMEOUT}s"
elif [ -z "$SUMMARY" ]; then
    STATUS=1; echo "not ok - no summary line from the guest (qemu exit $QRC)"
elif [ "$(echo "$SUMMARY" | awk '{print $3}')" != 0 ] || [ "$(echo "$SUMMARY" | awk '{print $1}')" = 0 ]; then
    STATUS=1
fi
if [ $STATUS != 0 ]; then
    echo "--- console tail ($CONSOLE):"
    tr -d '\r' <"$CONSOLE" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g; s/\x1b[A-Z]//g' | grep -v 'berth-vm: ' | tail -n 60
    [ -s "$WORK/qemu.log" ] && { echo "--- qemu:"; cat "$WORK/qemu.log"; }
fi
if [ -n "$RESULTS_FILE" ]; then cp "$WORK/results.img" "$RESULTS_FILE"; log "guest results disk copied to $RESULTS_FILE"; fi
log "timings: package ${T_DEB}s, image ready at ${T_IMG}s, VM boot+tests+poweroff ${T_RUN}s, total $(since "$T0")s"
if [ $STATUS = 0 ] && [ "${BERTH_VM_KEEP:-0}" != 1 ] && [ -z "${BERTH_VM_WORK:-}" ]; then
    rm -rf --one-file-system "$WORK"
else
    log "kept $WORK"
fi
exit $STATUS
