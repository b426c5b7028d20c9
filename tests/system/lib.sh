# Shared by tests/system/run.sh and tests/demo-systemd.sh (sourced, not run):
# build berth, boot testbed 1 (tests/testbed, --userns) and install berth with
# the shipped examples into it exactly as an administrator would, plus the
# helpers both use to look at the result.
#
# The caller sets, before sourcing:
#   REPO   the repository root (absolute)
#   S      a scratch directory (the testbed's state goes to $S/tb, the ssh key to $S/key)
# and defines:
#   die MSG    a set-up step failed; must not return
#   note MSG   a diagnostic line on stderr
#
# Ports on the host's loopback (the testbed shares the host network), fixed by the
# shipped socket units in config/systemd/:
PORT_WEB=8080 PORT_SSH=2222 PORT_DROPBEAR=2223

# ---------------------------------------------------------------- host side
# lib_build: the Debian package (packaging/build-deb.sh); sets DEB. The testbed gets
# berth the way an administrator does: dpkg -i. BERTH is the host's copy of the
# binary the package holds (for --help probes on the host).
lib_build() {
    DEB=$(cd "$REPO" && bash packaging/build-deb.sh target/debian 2>&1 | tail -n1)
    [ -f "$DEB" ] || die "packaging/build-deb.sh failed: $DEB"
    BERTH=$REPO/target/release/berth
}

# lib_host_tools TOOL:PACKAGE...: install the packages of the missing tools.
lib_host_tools() {
    local need=() t
    for t in "$@"; do
        command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    note "installing on the host: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null &&
        apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
            $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null || die "apt-get install ${need[*]} failed"
}

# lib_lock: one user of the fixed ports at a time on a host (fd 4 holds the lock;
# boot.sh is started with 4>&- so the testbed does not inherit it).
lib_lock() {
    exec 4>/run/lock/berth-system-test.lock
    flock -n 4 || { note "waiting for another berth system test or demo to finish (flock /run/lock/berth-system-test.lock)"; flock -w 900 4; } || die "another berth system test or demo still holds /run/lock/berth-system-test.lock after 15 min"
}

# lib_ports_free PORT...: all free on the host (the testbed shares its network).
lib_ports_free() {
    local p
    for p in "$@"; do
        [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] ||
            die "port $p is already in use on this host (the testbed shares the host network)"
    done
}

# lib_boot: the cached tree (built on first use, ~45 s), booted with --userns into
# $S/tb. Sets TREE TB ROOT LEADER. Stop it with lib_stop.
lib_boot() {
    TREE=$("$REPO/tests/testbed/tree.sh" | tail -n1) || die "tests/testbed/tree.sh failed"
    # (stderr to a file, not a pipe: the testbed's processes would keep a pipe open)
    if ! "$REPO/tests/testbed/boot.sh" "$TREE" "$S/tb" --userns 2>"$S/boot.log" 4>&-; then
        sed 's/^/# /' "$S/boot.log" >&2; die "tests/testbed/boot.sh failed"
    fi
    TB=$S/tb
    ROOT=$(cat "$TB/root")
    LEADER=$(cat "$TB/leader.pid")
}
# lib_stop: power the testbed off and remove it (idempotent).
lib_stop() {
    [ -d "$S/tb" ] || return 0
    "$REPO/tests/testbed/stop.sh" "$S/tb"
}

# IN CMD...: run CMD inside the testbed (its exit code passed through).
IN() { "$REPO/tests/testbed/in.sh" "$TB" "$@"; }

# ---------------------------------------------------------------- looking
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds or time runs out
wait_for() {
    local end=$(( $(now_ms) + $1 * 1000 )); shift
    while :; do
        "$@" && return 0
        [ "$(now_ms)" -lt "$end" ] || return 1
        sleep 0.1
    done
}
# scopes SERVICE: the active berth-SERVICE-*.scope units, one a line
scopes() {
    IN systemctl list-units --plain --no-legend --no-pager --state=active "berth-$1-*.scope" 2>/dev/null |
        awk '{print $1}'
}
has_scope()    { [ -n "$(scopes "$1")" ]; }
no_scope()     { [ -z "$(scopes "$1")" ]; }
scope_active() { [ "$(IN systemctl show -p ActiveState --value "$1" 2>/dev/null)" = active ]; }
scope_gone()   { ! scope_active "$1"; }
prop()         { IN systemctl show -p "$2" --value "$1" 2>/dev/null; }
is_number()    { [[ "$1" =~ ^[0-9]+$ ]]; }
container_id() { local u=${1%.scope}; echo "${u#berth-"$2"-}"; }   # UNIT SERVICE
journal_has()  { IN journalctl --no-pager -q -o cat "$@" 2>/dev/null | grep -q .; }  # MATCHES...
journal_grep() { local re=$1; shift; IN journalctl --no-pager -q -o cat "$@" 2>/dev/null | grep -Eq "$re"; }
berth_active() { [ "$(IN systemctl is-active berth.service 2>/dev/null)" = active ]; }

# ---------------------------------------------------------------- configuration
# lib_net_admin: the testbed's PID 1 has CAP_NET_ADMIN, which berth needs to bring
# `lo` up in each container's new network namespace (boot.sh grants it with --userns).
lib_net_admin() {
    local capbnd
    capbnd=$(awk '/^CapBnd:/{print $2}' "/proc/$LEADER/status")
    (( (16#$capbnd >> 12) & 1 ))
}

# lib_stage_config CONFIG CFG IDLE: the shipped services and socket units from
# CONFIG (the repo's config/) copied to CFG/services and CFG/systemd, with one
# change: the web service's idle_timeout set to IDLE (e.g. "2s").
lib_stage_config() {
    local config=$1 cfg=$2 idle=$3
    mkdir -p "$cfg/services" "$cfg/systemd"
    cp "$config"/services/*.toml "$cfg/services/"
    cp "$config"/systemd/*.socket "$cfg/systemd/"
    sed -i -E "s/^idle_timeout *=.*/idle_timeout = \"$idle\"/" "$cfg/services/web.toml"
    # (no such line: add one at the top, where it is a top-level key)
    grep -q "^idle_timeout = \"$idle\"" "$cfg/services/web.toml" ||
        sed -i "1i idle_timeout = \"$idle\"" "$cfg/services/web.toml"
}

# lib_add_socket CFG NAME PORT: a socket unit berth-NAME.socket handing
# 127.0.0.1:PORT to berth.service under the fd name NAME.
lib_add_socket() {
    cat >"$1/systemd/berth-$2.socket" <<UNIT
[Socket]
ListenStream=127.0.0.1:$3
FileDescriptorName=$2
Service=berth.service

[Install]
WantedBy=sockets.target
UNIT
}

# lib_net_host FILE...: network = "host" in these service files (the fallback when
# the testbed lacks CAP_NET_ADMIN).
lib_net_host() {
    local f
    for f in "$@"; do
        if grep -q '^\[sandbox\]' "$f"; then
            sed -i 's/^\[sandbox\]$/[sandbox]\nnetwork = "host"/' "$f"
        else
            printf '\n[sandbox]\nnetwork = "host"\n' >>"$f"
        fi
    done
}

# lib_install CONFIG CFG: the berth package (binary, units, D-Bus policy, probe,
# examples), then what an administrator adds: the staged services and sockets, an ssh
# key (private half $S/key, authorized for root in the ssh containers) and dropbear's
# host key. Sets SSH (the ssh client command line with that key).
lib_install() {
    local config=$1 cfg=$2
    # /tmp inside is systemd's own tmpfs; /var/tmp is on the root.
    install -m644 "$DEB" "$ROOT/var/tmp/berth.deb"
    IN dpkg -i /var/tmp/berth.deb >/dev/null 2>&1 || die "dpkg -i berth.deb in the testbed failed"
    install -m644 "$cfg"/systemd/*.socket "$ROOT/etc/systemd/system/"
    # As units/berth-inetd@.service says: link it under the berth service's name.
    ln -sfn /lib/systemd/system/berth-inetd@.service "$ROOT/etc/systemd/system/dropbear@.service"
    mkdir -p "$ROOT/etc/berth/services" "$ROOT/usr/share/berth/web" "$ROOT/etc/berth/ssh"
    install -m644 "$cfg"/services/*.toml "$ROOT/etc/berth/services/"
    # The package ships the web example's content; a test may stage its own.
    cp -r "$config/web/." "$ROOT/usr/share/berth/web/"
    # The testbed maps seven blocks of ids for berth's user namespaces
    # (tests/testbed/boot.sh --userns): the ssh examples use private_users.
    printf 'private_users_range = "65536-524287"\n' >"$ROOT/etc/berth/berth.toml"
    rm -f "$S/key" "$S/key.pub"
    ssh-keygen -q -t ed25519 -N '' -C berth-system-test -f "$S/key" || die "ssh-keygen failed"
    # The ssh examples bind authorized_keys idmapped (private_users). The
    # testbed's root file system belongs to the host's user namespace and
    # cannot be idmapped from inside it; a tmpfs the testbed mounts itself
    # can (as ext4, xfs, btrfs or tmpfs can on a real host).
    IN mount -t tmpfs -o mode=0755,size=64k berth-ssh-keys /etc/berth/ssh ||
        die "mount of a tmpfs on /etc/berth/ssh inside the testbed failed"
    IN sh -c 'umask 022; cat >/etc/berth/ssh/authorized_keys' <"$S/key.pub" ||
        die "writing /etc/berth/ssh/authorized_keys inside the testbed failed"
    # A minbase tree has no /etc/hosts (no netbase); every installed system has one.
    [ -e "$ROOT/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$ROOT/etc/hosts"
    IN sh -c 'mkdir -p /etc/dropbear && dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key' \
        >/dev/null 2>&1 || die "dropbearkey inside the testbed failed"
    # OpenSSH's host keys (config/services/sshd.toml binds /etc/ssh read-only).
    IN ssh-keygen -A >/dev/null 2>&1 || die "ssh-keygen -A inside the testbed failed"
    SSH=(ssh -F /dev/null -i "$S/key" -o IdentitiesOnly=yes -o BatchMode=yes
         -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
         -o ConnectTimeout=10 -o ServerAliveInterval=5)
}

# lib_enable_sockets UNIT...: daemon-reload, then enable --now the socket units.
lib_enable_sockets() {
    IN systemctl daemon-reload && IN systemctl enable --now "$@" 2>&1
}

# lib_start_serve: enable and start berth.service after its sockets (so it is handed
# all of them); succeeds once it is active (15 s at most).
lib_start_serve() {
    IN systemctl enable berth.service >/dev/null 2>&1
    IN systemctl start --no-block berth.service
    wait_for 15 berth_active
}

# ---------------------------------------------------------------- a long ssh session
# A remote `sh` fed commands through a fifo (fds 5 and 6). The caller's BG_PIDS array,
# if any, gets the ssh client's pid so an exit trap can end it.
SESS_PID=
sess_open() { # PORT
    rm -f "$S/sin" "$S/sout"; mkfifo "$S/sin" "$S/sout"
    "${SSH[@]}" -p "$1" root@127.0.0.1 sh <"$S/sin" >"$S/sout" 2>&1 4>&- &
    SESS_PID=$!; BG_PIDS+=("$SESS_PID")
    exec 5>"$S/sin" 6<"$S/sout"
}
sess_run() { # CMD [TIMEOUT]: prints CMD's output; fails on timeout or a dead session
    local line out=
    ( trap '' PIPE; printf '%s\necho __berth_end__\n' "$1" >&5 ) 2>/dev/null || return 1
    while IFS= read -r -t "${2:-15}" -u 6 line; do
        if [ "$line" = __berth_end__ ]; then printf '%s' "$out"; return 0; fi
        out+="$line"$'\n'
    done
    printf '%s' "$out"; return 1
}
sess_close() {
    exec 5>&-
    local i
    for i in $(seq 100); do kill -0 "$SESS_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$SESS_PID" 2>/dev/null; wait "$SESS_PID" 2>/dev/null
    exec 6<&-
}
