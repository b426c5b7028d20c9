#!/usr/bin/env bash
# Build (or reuse) a debootstrapped Debian bookworm root for the nspawn testbed.
#
#   tests/testbed/tree.sh            # prints the tree path on its last stdout line
#
# Cache: ${BERTH_TESTBED_CACHE:-/var/tmp/berth-testbed}/tree-<hash>, where the hash
# covers SUITE, PACKAGES and TREE_VERSION (bump it when configure_tree changes).
# The tree is built in a temporary directory and renamed when complete, so an
# interrupted build is never reused. Progress goes to stderr.
set -euo pipefail

SUITE=bookworm
# Real peers berth is tested against, plus the systemd/dbus base.
PACKAGES="systemd,systemd-sysv,dbus,iproute2,dropbear-bin,lighttpd,openssh-client,openssh-server,curl,procps,util-linux"
TREE_VERSION=3

CACHE=${BERTH_TESTBED_CACHE:-/var/tmp/berth-testbed}

log() { echo "tree.sh: $*" >&2; }
die() { echo "tree.sh: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

ensure_host_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
        debootstrap systemd-container >&2
}

# Make the tree boot fast and quietly inside systemd-nspawn.
configure_tree() {
    local t=$1 u
    echo berth-tb >"$t/etc/hostname"
    # Root login locked: the testbed is entered with nsenter, never a password.
    sed -i 's/^root:[^:]*:/root:!:/' "$t/etc/shadow"
    # Units that are slow, useless or failing in a container sharing the host network.
    for u in systemd-networkd-wait-online.service getty@.service serial-getty@.service \
             console-getty.service container-getty@.service getty.target \
             systemd-resolved.service systemd-timesyncd.service systemd-networkd.service \
             systemd-networkd.socket apt-daily.timer apt-daily-upgrade.timer \
             apt-daily.service apt-daily-upgrade.service e2scrub_all.timer \
             e2scrub_reap.service fstrim.timer man-db.timer dpkg-db-backup.timer \
             systemd-journald-audit.socket \
             systemd-remount-fs.service systemd-firstboot.service \
             systemd-hwdb-update.service; do
        ln -sfn /dev/null "$t/etc/systemd/system/$u"
    done
    # Peers are started by the tests (socket activation), not at boot: lighttpd would
    # bind port 80 of the host's network namespace, which the container shares.
    rm -f "$t/etc/systemd/system/multi-user.target.wants/lighttpd.service"
    # OpenSSH is run by berth (config/services/sshd.toml), never by its own units: they
    # would take port 22 of the shared network. Its host keys are made at install time.
    for u in ssh.service sshd.service ssh.socket ssh@.service rescue-ssh.target; do
        rm -f "$t/etc/systemd/system/multi-user.target.wants/$u" "$t/etc/systemd/system/sockets.target.wants/$u"
        ln -sfn /dev/null "$t/etc/systemd/system/$u"
    done
    rm -f "$t"/etc/ssh/ssh_host_*
    mkdir -p "$t/etc/systemd/system.conf.d" "$t/etc/systemd/journald.conf.d"
    cat >"$t/etc/systemd/system.conf.d/berth-testbed.conf" <<'CONF'
[Manager]
DefaultTimeoutStartSec=20s
DefaultTimeoutStopSec=5s
CONF
    cat >"$t/etc/systemd/journald.conf.d/berth-testbed.conf" <<'CONF'
[Journal]
Storage=volatile
RateLimitBurst=0
CONF
    # A set machine-id (an empty one would mean "first boot": presets applied);
    # boot.sh writes a fresh one into each throw-away root.
    systemd-id128 new >"$t/etc/machine-id"
    # Shrink: drop downloaded packages and apt lists.
    rm -rf "$t"/var/cache/apt/archives/*.deb "$t"/var/lib/apt/lists/*_* 2>/dev/null || true
    echo "$HASH" >"$t/etc/berth-testbed-tree"
}

ensure_host_tools

HASH=$(printf '%s\n' "$SUITE" "$PACKAGES" "$TREE_VERSION" "$(uname -m)" | sha256sum | cut -c1-16)
TREE=$CACHE/tree-$HASH

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$HASH"
flock 9   # one builder per hash; a concurrent caller waits and then reuses

if [ -f "$TREE/etc/berth-testbed-tree" ]; then
    log "reusing cached $TREE"
else
    TMP=$(mktemp -d "$CACHE/.build-$HASH.XXXXXX")
    trap 'rm -rf --one-file-system "$TMP"' EXIT
    log "debootstrap $SUITE into $TMP (this takes about a minute)"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$TMP/root" >"$TMP.log" 2>&1; then
        tail -n 30 "$TMP.log" >&2
        [ -f "$TMP/root/debootstrap/debootstrap.log" ] && tail -n 30 "$TMP/root/debootstrap/debootstrap.log" >&2
        rm -f "$TMP.log"
        die "debootstrap failed"
    fi
    rm -f "$TMP.log"
    configure_tree "$TMP/root"
    rm -rf "$TREE"
    mv -T "$TMP/root" "$TREE"
    rm -rf "$TMP"; trap - EXIT
    log "built $TREE ($(du -sh "$TREE" | cut -f1))"
fi
touch "$TREE.last-used"
# Trees of other package lists/versions unused for 7 days, and build
# directories of interrupted runs older than a day, are removed.
for old in "$CACHE"/tree-*.last-used; do
    [ "$old" = "$TREE.last-used" ] && continue
    if [ -n "$(find "$old" -mtime +7)" ]; then rm -rf --one-file-system "${old%.last-used}" "$old"; fi
done 2>/dev/null || true
# Remove stale build directories of interrupted runs (older than a day) of this hash.
find "$CACHE" -maxdepth 1 -name ".build-$HASH.*" -mmin +1440 -exec rm -rf --one-file-system {} + 2>/dev/null || true
echo "$TREE"
