#!/usr/bin/env bash
# System tests: berth under a real systemd (tests/testbed, booted with --userns so
# MemoryMax/TasksMax are enforced and MemoryCurrent/TasksCurrent reported), driven
# from the host over 127.0.0.1 with real clients (ssh, curl, wrk) against real
# peers (dropbear, lighttpd).
#
#   sudo tests/system/run.sh            # from anywhere; builds with cargo first
#
# Prints one `ok - NAME` / `not ok - NAME: WHY` line per test, diagnostics as
# `# ...`, and last exactly one line `N passed, M failed`; exits 1 if M > 0.
# On failure the testbed's whole journal is kept in target/system-test/journal.txt.
#
# Ports used on the host's loopback (the testbed shares the host network):
#   8080 web (berth serve, listen)   2222 ssh (berth serve, inetd)
#   2223 dropbear (systemd Accept=yes -> berth inetd)   2291 bomb, 2292 hog (berth serve, inetd)
#
# Runs are serialized on a host by flock on /run/lock/berth-system-test.lock (the
# ports are fixed by the shipped socket units). About 30 s with a cached tree.
#
# Environment:
#   BERTH_SYSTEM_CONFIG   the config/ directory to install (default: the repo's config/)
#   BERTH_SYSTEM_KEEP=1   leave the testbed running at the end (state dir printed; stop
#                         it with tests/testbed/stop.sh DIR)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
REPO=$PWD
CONFIG=$(realpath -e "${BERTH_SYSTEM_CONFIG:-config}") || exit 2
LOGDIR=$REPO/target/system-test

PORT_WEB=8080 PORT_SSH=2222 PORT_DROPBEAR=2223 PORT_BOMB=2291 PORT_HOG=2292

T0=$(date +%s)
PASSED=0 FAILED=0
ok()     { PASSED=$((PASSED + 1)); echo "ok - $1"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $1: $2"; }
check()  { # NAME WHY CMD...: ok if CMD succeeds, else not ok with WHY
    local name=$1 why=$2; shift 2
    if "$@"; then ok "$name"; else not_ok "$name" "$why"; fi
}
diag()   { sed 's/^/# /' >&2; }
note()   { echo "# $*" >&2; }
# A set-up step failed: one `not ok`, the summary line, exit 1 (the EXIT trap stops
# the testbed first).
die()    { not_ok "set-up" "$*"; exit 1; }

S=$(mktemp -d /tmp/berth-system.XXXXXX)
BG_PIDS=()
STOPPED=0
stop_testbed() {
    [ $STOPPED = 1 ] && return 0
    STOPPED=1
    local p t
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    if [ "${BERTH_SYSTEM_KEEP:-0}" = 1 ]; then
        note "testbed kept: $REPO/tests/testbed/in.sh $S/tb ...; stop with $REPO/tests/testbed/stop.sh $S/tb"
        return 0
    fi
    if [ -d "$S/tb" ]; then
        t=$(date +%s)
        "$REPO/tests/testbed/stop.sh" "$S/tb" 2>"$S/stop.log"; diag <"$S/stop.log"
        note "testbed stopped in $(( $(date +%s) - t )) s"
    fi
    if [ -e "$S/tb/rootfs" ]; then note "testbed root left in $S/tb"; else rm -rf "$S"; fi
}
# Always: stop the testbed, then the summary as the very last line.
on_exit() {
    if [ "$FAILED" -gt 0 ] && [ -s "$S/tb/leader.pid" ] && [ -d "/proc/$(cat "$S/tb/leader.pid")" ]; then
        mkdir -p "$LOGDIR"
        "$REPO/tests/testbed/in.sh" "$S/tb" journalctl --no-pager -o short-monotonic >"$LOGDIR/journal.txt" 2>&1
        note "full testbed journal: $LOGDIR/journal.txt; berth's last lines:"
        "$REPO/tests/testbed/in.sh" "$S/tb" journalctl --no-pager -o cat -n 15 _COMM=berth 2>/dev/null | diag
    fi
    stop_testbed
    note "took $(( $(date +%s) - T0 )) s"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ] && exit 0 || exit 1
}
trap on_exit EXIT
trap 'not_ok "interrupted" "by a signal"; exit 1' INT TERM HUP
[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- host side
echo "# building berth" >&2
cargo build --bins --quiet || die "cargo build failed"
BERTH=$REPO/target/debug/berth

need=()
for t in ssh:openssh-client ssh-keygen:openssh-client curl:curl wrk:wrk; do
    command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    note "installing on the host: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null &&
        apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
            $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null || die "apt-get install failed"
fi

# One run at a time on a host: the ports are fixed by the shipped socket units.
exec 4>/run/lock/berth-system-test.lock
flock -w 900 4 || die "another tests/system/run.sh still holds /run/lock/berth-system-test.lock after 15 min"
for p in $PORT_WEB $PORT_SSH $PORT_DROPBEAR $PORT_BOMB $PORT_HOG; do
    [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] ||
        die "port $p is already in use on this host (the testbed shares the host network)"
done

HAVE_SERVE=0 HAVE_INETD=0
"$BERTH" serve --help >/dev/null 2>&1 && HAVE_SERVE=1
"$BERTH" inetd --help >/dev/null 2>&1 && HAVE_INETD=1

TREE=$(tests/testbed/tree.sh | tail -n1) || die "tests/testbed/tree.sh failed"

# (stderr to a file, not a pipe: the testbed's processes would keep a pipe open)
if ! tests/testbed/boot.sh "$TREE" "$S/tb" --userns 2>"$S/boot.log" 4>&-; then
    diag <"$S/boot.log"; die "tests/testbed/boot.sh failed"
fi
diag <"$S/boot.log"
TB=$S/tb
ROOT=$(cat "$TB/root")
IN() { "$REPO/tests/testbed/in.sh" "$TB" "$@"; }

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

# ---------------------------------------------------------------- configuration under test
# The network sandbox needs CAP_NET_ADMIN in the container's user namespace to bring
# `lo` up in each new network namespace. systemd-nspawn drops CAP_NET_ADMIN when the
# container shares the host network unless told otherwise (--capability=CAP_NET_ADMIN).
LEADER=$(cat "$TB/leader.pid")
capbnd=$(awk '/^CapBnd:/{print $2}' "/proc/$LEADER/status")
NET_FALLBACK=0
if (( (16#$capbnd >> 12) & 1 )); then
    ok "testbed: the container has CAP_NET_ADMIN (needed to bring up lo in a private netns)"
else
    not_ok "testbed: the container has CAP_NET_ADMIN (needed to bring up lo in a private netns)" \
        "CapBnd of the testbed's PID 1 is $capbnd (no CAP_NET_ADMIN): tests/testbed/boot.sh must pass --capability=CAP_NET_ADMIN with --userns; the services below run with network = \"host\" instead, so the 'only lo' tests fail"
    NET_FALLBACK=1
fi

CFG=$S/cfg
mkdir -p "$CFG/services" "$CFG/systemd"
cp "$CONFIG"/services/*.toml "$CFG/services/"
cp "$CONFIG"/systemd/*.socket "$CFG/systemd/"
# The test's one change to the shipped web service: a short idle timeout.
sed -i -E 's/^idle_timeout *=.*/idle_timeout = "2s"/' "$CFG/services/web.toml"
grep -q '^idle_timeout = "2s"' "$CFG/services/web.toml" || echo 'idle_timeout = "2s"' >>"$CFG/services/web.toml"

cat >"$CFG/services/bomb.toml" <<'TOML'
# A fork bomb: TasksMax must hold it inside its scope.
mode = "inetd"
exec = ["/bin/bash", "-c", "exec 2>/dev/null; b(){ b|b& }; b; while :; do sleep 1; done"]
max_lifetime = "2min"

[sandbox]
tmp_size = "1M"

[resources]
tasks_max = 20
TOML
cat >"$CFG/services/hog.toml" <<'TOML'
# Eats memory after a short pause (tail keeps a "line" of /dev/zero): MemoryMax
# must get it OOM-killed inside its scope.
mode = "inetd"
exec = ["/bin/sh", "-c", "sleep 2; exec tail /dev/zero"]
max_lifetime = "2min"

[sandbox]
tmp_size = "1M"

[resources]
memory_max = "32M"
TOML
for svc in bomb:$PORT_BOMB hog:$PORT_HOG; do
    cat >"$CFG/systemd/berth-${svc%%:*}.socket" <<UNIT
[Socket]
ListenStream=127.0.0.1:${svc#*:}
FileDescriptorName=${svc%%:*}
Service=berth.service

[Install]
WantedBy=sockets.target
UNIT
done
if [ $NET_FALLBACK = 1 ]; then
    for f in "$CFG"/services/*.toml; do
        if grep -q '^\[sandbox\]' "$f"; then
            sed -i 's/^\[sandbox\]$/[sandbox]\nnetwork = "host"/' "$f"
        else
            printf '\n[sandbox]\nnetwork = "host"\n' >>"$f"
        fi
    done
fi

# ---------------------------------------------------------------- install into the testbed
install -m755 "$BERTH" "$ROOT/usr/bin/berth"
install -m644 "$REPO"/units/*.service "$ROOT/usr/lib/systemd/system/"
install -m644 "$CFG"/systemd/*.socket "$ROOT/etc/systemd/system/"
# As units/berth-inetd@.service says: link it under the berth service's name.
ln -sfn /lib/systemd/system/berth-inetd@.service "$ROOT/etc/systemd/system/dropbear@.service"
mkdir -p "$ROOT/etc/berth/services" "$ROOT/usr/share/berth/web" "$ROOT/usr/share/berth/ssh"
install -m644 "$CFG"/services/*.toml "$ROOT/etc/berth/services/"
cp -r "$CONFIG/web/." "$ROOT/usr/share/berth/web/"
# The supervisor's bus name (berth list/status/stop talk to it), as packaging installs it.
if [ -f "$REPO/packaging/dbus/org.berth.Supervisor1.conf" ]; then
    install -D -m644 "$REPO/packaging/dbus/org.berth.Supervisor1.conf" \
        "$ROOT/usr/share/dbus-1/system.d/org.berth.Supervisor1.conf"
    IN systemctl reload dbus.service >/dev/null 2>&1 || note "reloading dbus.service failed"
fi
ssh-keygen -q -t ed25519 -N '' -C berth-system-test -f "$S/key" || die "ssh-keygen failed"
install -m644 "$S/key.pub" "$ROOT/usr/share/berth/ssh/authorized_keys"
# A minbase tree has no /etc/hosts (no netbase); every installed system has one.
[ -e "$ROOT/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$ROOT/etc/hosts"
IN sh -c 'mkdir -p /etc/dropbear && dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key' \
    >/dev/null 2>&1 || die "dropbearkey inside the testbed failed"

if out=$(IN berth check 2>&1); then
    ok "berth check passes on the installed configuration"
else
    not_ok "berth check passes on the installed configuration" "$(echo "$out" | tr '\n' ' ')"
fi

SOCKETS="berth-web.socket berth-ssh.socket dropbear.socket berth-bomb.socket berth-hog.socket"
IN systemctl daemon-reload
if out=$(IN systemctl enable --now $SOCKETS 2>&1); then
    ok "socket units enabled and listening"
else
    not_ok "socket units enabled and listening" "$(echo "$out" | tr '\n' ' ')"
fi
# berth.service gets the sockets that name it (Service=berth.service); start it
# after them so it is handed all of them.
IN systemctl enable berth.service >/dev/null 2>&1
IN systemctl start --no-block berth.service
berth_active() { [ "$(IN systemctl is-active berth.service 2>/dev/null)" = active ]; }
SERVE_UP=0
if [ $HAVE_SERVE = 0 ]; then
    not_ok "berth.service (berth serve) is active" "this build has no 'berth serve' subcommand"
elif wait_for 15 berth_active; then
    ok "berth.service (berth serve) is active"; SERVE_UP=1
else
    not_ok "berth.service (berth serve) is active" \
        "state $(IN systemctl is-active berth.service); $(IN journalctl -u berth.service -n 5 -o cat --no-pager | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- ssh helpers
SSH=(ssh -F /dev/null -i "$S/key" -o IdentitiesOnly=yes -o BatchMode=yes
     -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
     -o ConnectTimeout=10 -o ServerAliveInterval=5)
PROBE='echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | sort | tr "\n" " ")
if touch /usr/berth-probe 2>/dev/null; then echo usr=rw; else echo usr=ro; fi
echo tmp=[$(ls -A /tmp)]
echo procs=$(ls /proc | grep -c "^[0-9]")'

# A long-lived session: a remote `sh` fed commands through a fifo.
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

# ssh_suite LABEL PORT SERVICE: the sandbox as seen from a login, and the scope of a session
ssh_suite() {
    local label=$1 port=$2 svc=$3 out unit cg v
    if out=$(timeout 30 "${SSH[@]}" -p "$port" root@127.0.0.1 "$PROBE" 2>&1) && [[ "$out" == *ifaces=* ]]; then
        ok "$label: key login runs a command"
    else
        not_ok "$label: key login runs a command" \
            "ssh -p $port said: '$(echo "$out" | tail -n 3 | tr '\n' ' ')'; journal: $(IN journalctl -q -o cat -t dropbear -n 2 --no-pager | tr '\n' ' ')"
        return
    fi
    v=$(sed -n 's/^ifaces=//p' <<<"$out" | xargs)
    check "$label: the network namespace holds only lo" "interfaces: '$v'" [ "$v" = lo ]
    v=$(sed -n 's/^usr=//p' <<<"$out")
    check "$label: /usr is read-only" "touch /usr/berth-probe succeeded" [ "$v" = ro ]
    v=$(sed -n 's/^tmp=//p' <<<"$out")
    check "$label: /tmp is empty" "ls -A /tmp: $v" [ "$v" = "[]" ]
    v=$(sed -n 's/^procs=//p' <<<"$out")
    check "$label: no host processes visible" "$v pids in /proc" eval '[ -n "$v" ] && [ "$v" -lt 10 ]'

    # An interactive login: dropbear allocates a pty (chown to group tty) and changes groups.
    out=$(timeout 30 "${SSH[@]}" -tt -p "$port" root@127.0.0.1 'echo tty=$(tty)' </dev/null 2>&1 | tr -d '\r')
    if [[ "$out" == *tty=/dev/pts/* ]]; then
        ok "$label: interactive login with a pty (ssh -tt)"
    else
        not_ok "$label: interactive login with a pty (ssh -tt)" \
            "got '$(echo "$out" | tail -n 2 | tr '\n' ' ')'; journal: $(IN journalctl -q -o cat -t dropbear -n 3 --no-pager | grep -v '^Child connection' | tr '\n' ' ')"
    fi

    sess_open "$port"
    if v=$(sess_run 'echo hello') && [ "$v" = hello ]; then
        ok "$label: interactive session answers"
    else
        not_ok "$label: interactive session answers" "got '$v'"; sess_close; return
    fi
    if wait_for 5 has_scope "$svc"; then
        unit=$(scopes "$svc" | head -n1)
        ok "$label: open session has a scope ($unit)"
        local n; n=$(scopes "$svc" | wc -l)
        check "$label: exactly one berth-$svc-*.scope for one session" "$n scopes: $(scopes "$svc" | xargs)" [ "$n" = 1 ]
        v=$(prop "$unit" Slice)
        check "$label: scope is in berth-$svc.slice" "Slice=$v" [ "$v" = "berth-$svc.slice" ]
        v=$(prop "$unit" MemoryMax)
        check "$label: scope MemoryMax=64M" "MemoryMax=$v" [ "$v" = 67108864 ]
        v=$(prop "$unit" TasksMax)
        check "$label: scope TasksMax=16" "TasksMax=$v" [ "$v" = 16 ]
        local mc tc
        mc=$(prop "$unit" MemoryCurrent); tc=$(prop "$unit" TasksCurrent)
        check "$label: scope reports MemoryCurrent and TasksCurrent" \
            "MemoryCurrent=$mc TasksCurrent=$tc" eval 'is_number "$mc" && is_number "$tc" && [ "$tc" -gt 0 ]'
        v=$(IN berth list --json 2>&1)
        check "$label: berth list --json shows the session's container" \
            "$(echo "$v" | tr -s ' \n' ' ' | cut -c1-300)" eval '[[ "$v" == *"\"unit\": \"$unit\""* ]]'
        if [ "$svc" = ssh ]; then
            check "$label: berth list --json answered by the running supervisor" \
                "no \"supervisor\": true (bus name not reachable?): $(IN journalctl -u berth.service -o cat --no-pager | grep -i 'org.berth.Supervisor1' | tail -n1)" \
                eval '[[ "$v" == *"\"supervisor\": true"* ]]'
        fi
        cg=$(prop "$unit" ControlGroup)
        v=$(IN cat "/sys/fs/cgroup/memory$cg/memory.limit_in_bytes" 2>&1)
        check "$label: memory.limit_in_bytes of the scope's cgroup is 64M" "$cg: '$v'" [ "$v" = 67108864 ]
        v=$(IN cat "/sys/fs/cgroup/pids$cg/pids.max" 2>&1)
        check "$label: pids.max of the scope's cgroup is 16" "$cg: '$v'" [ "$v" = 16 ]
        if [ "$svc" = dropbear ]; then
            local inst
            inst=$(IN systemctl list-units --plain --no-legend --no-pager --state=active 'dropbear@*.service' | awk '{print $1}' | head -n1)
            v=$(prop "${inst:-dropbear@none.service}" ExecStart)
            check "$label: the Accept=yes instance (dropbear@.service -> berth-inetd@.service) runs 'berth inetd dropbear'" \
                "instance '${inst}': $v" eval '[[ "$v" == *"argv[]=/usr/bin/berth inetd dropbear ;"* ]]'
        fi
    else
        not_ok "$label: open session has a scope" "no berth-$svc-*.scope while the session is open"
    fi
    sess_close
    if [ -n "${unit:-}" ]; then
        check "$label: scope gone after logout" "$unit still active 10 s after logout" wait_for 10 scope_gone "$unit"
        local id; id=$(container_id "$unit" "$svc")
        check "$label: dropbear's syslog lines are in the journal under the scope" \
            "journalctl -u $unit has no 'Pubkey auth succeeded'" \
            wait_for 5 journal_grep 'Pubkey auth succeeded' -u "$unit"
        check "$label: started/stopped events for the container" \
            "no BERTH_EVENT=started and stopped with BERTH_CONTAINER=$id" \
            wait_for 5 eval "journal_has BERTH_SERVICE=$svc BERTH_CONTAINER=$id BERTH_EVENT=started && journal_has BERTH_SERVICE=$svc BERTH_CONTAINER=$id BERTH_EVENT=stopped"
    fi
}

# ---------------------------------------------------------------- a. ssh
if [ $SERVE_UP = 1 ]; then
    ssh_suite "ssh via berth serve (:$PORT_SSH)" $PORT_SSH ssh
else
    not_ok "ssh via berth serve (:$PORT_SSH)" "berth.service is not up"
fi
if [ $HAVE_INETD = 1 ]; then
    ssh_suite "ssh via Accept=yes + berth inetd (:$PORT_DROPBEAR)" $PORT_DROPBEAR dropbear
else
    not_ok "ssh via Accept=yes + berth inetd (:$PORT_DROPBEAR)" "this build has no 'berth inetd' subcommand"
fi

# ---------------------------------------------------------------- b. web
web_page() { curl -sS -m 10 "http://127.0.0.1:$PORT_WEB/" 2>&1; }
web_ok()   { [[ "$(web_page)" == *"Hello from lighttpd"* ]]; }
W1=
if [ $SERVE_UP = 1 ]; then
    out=$(web_page)
    if [[ "$out" == *"Hello from lighttpd"* ]]; then
        ok "web: curl gets lighttpd's page through berth serve"
    else
        not_ok "web: curl gets lighttpd's page through berth serve" "curl: $(echo "$out" | head -n3 | tr '\n' ' ')"
    fi
    if wait_for 5 has_scope web; then
        W1=$(scopes web | head -n1); ok "web: the container has a scope ($W1)"
        v=$(prop "$W1" MemoryMax)
        check "web: scope MemoryMax=128M" "MemoryMax=$v" [ "$v" = 134217728 ]
    else
        not_ok "web: the container has a scope" "no berth-web-*.scope after a request"
    fi
    out=$(wrk -t2 -c16 -d10s --timeout 5s "http://127.0.0.1:$PORT_WEB/" 2>&1)
    reqs=$(awk '/requests in/{print $1}' <<<"$out")
    if [ -n "$reqs" ] && [ "$reqs" -gt 0 ] && ! grep -qE 'Socket errors|Non-2xx' <<<"$out"; then
        ok "web: wrk -t2 -c16 -d10s: $reqs requests, no socket errors ($(awk '/Requests\/sec/{print $2}' <<<"$out") req/s)"
    else
        not_ok "web: wrk -t2 -c16 -d10s without errors" "$(echo "$out" | grep -E 'requests in|errors|Non-2xx|unable' | tr '\n' ' ')"
    fi
    if [ -n "$W1" ]; then
        t=$(now_ms)
        if wait_for 15 scope_gone "$W1"; then
            ok "web: scope stopped after idle_timeout=2s ($(( $(now_ms) - t )) ms after wrk ended)"
        else
            not_ok "web: scope stopped after idle_timeout=2s" "$W1 still active 15 s after the last request"
        fi
        out=$(web_page)
        W2=$(scopes web | head -n1)
        check "web: the next request wakes a new container" "page: '$(echo "$out" | head -c 80)', scope '$W2' (before: $W1)" \
            eval '[[ "$out" == *"Hello from lighttpd"* ]] && [ -n "$W2" ] && [ "$W2" != "$W1" ]'

        # ------------------------------------------------------------ c. journal
        ID1=$(container_id "$W1" web)
        check "journal: lighttpd's stderr under its scope (journalctl -u $W1)" \
            "no 'server started' in journalctl -u $W1" wait_for 5 journal_grep 'server started' -u "$W1"
        check "journal: lighttpd's stderr under the service name (journalctl -t web)" \
            "no 'server started' in journalctl -t web" wait_for 5 journal_grep 'server started' -t web
        check "journal: BERTH_SERVICE=web BERTH_EVENT=started" "no such entry for container $ID1" \
            wait_for 5 journal_has BERTH_SERVICE=web BERTH_CONTAINER="$ID1" BERTH_EVENT=started
        check "journal: BERTH_SERVICE=web BERTH_EVENT=stopped" "no such entry for container $ID1" \
            wait_for 5 journal_has BERTH_SERVICE=web BERTH_CONTAINER="$ID1" BERTH_EVENT=stopped
        v=$(IN berth logs web 2>&1)
        check "journal: berth logs web shows lighttpd's start-up line" "$(echo "$v" | tail -n 2 | tr '\n' ' ')" \
            eval '[[ "$v" == *"server started"* ]]'
    fi
else
    not_ok "web via berth serve" "berth.service is not up"
fi

# ---------------------------------------------------------------- d. restart berth.service
if [ $SERVE_UP = 1 ]; then
    sess_open $PORT_SSH
    if [ "$(sess_run 'echo before')" = before ] && wait_for 5 has_scope ssh; then
        SS=$(scopes ssh | head -n1)
        # Wake the web container and keep one connection open so it cannot go idle
        # before the restart; closed afterwards, the adopted container must idle out.
        exec 7<>"/dev/tcp/127.0.0.1/$PORT_WEB"
        if wait_for 5 has_scope web; then
            WR=$(scopes web | head -n1)
            pid0=$(prop berth.service MainPID)
            IN systemctl restart berth.service
            pid1=$(prop berth.service MainPID)
            check "restart: berth.service active again with a new main pid" "MainPID $pid0 -> $pid1, $(IN systemctl is-active berth.service)" \
                eval 'berth_active && [ "$pid1" != "$pid0" ] && [ "$pid1" != 0 ]'
            check "restart: the web container survives the restart" "$WR not active after the restart" scope_active "$WR"
            check "restart: the ssh session's scope survives the restart" "$SS not active after the restart" scope_active "$SS"
            v=$(sess_run 'echo after')
            check "restart: the open ssh session still answers" "got '$v'" [ "$v" = after ]
            exec 7>&-
            t=$(now_ms)
            if wait_for 20 scope_gone "$WR"; then
                ok "restart: the new supervisor adopts the web container and stops it when idle ($(( $(now_ms) - t )) ms after the last connection closed)"
            else
                not_ok "restart: the new supervisor adopts the web container and stops it when idle" \
                    "$WR still active 20 s after its last connection closed (idle_timeout 2s)"
            fi
            check "restart: web answers after the restart" "curl failed" web_ok
        else
            exec 7>&-
            not_ok "restart: web container woken before the restart" "no berth-web-*.scope"
        fi
        sess_close
        check "restart: ssh scope gone after logout" "$SS still active" wait_for 10 scope_gone "$SS"
    else
        sess_close
        not_ok "restart: ssh session open before the restart" "no answer or no scope"
    fi
else
    not_ok "restart of berth.service" "berth.service is not up"
fi

# ---------------------------------------------------------------- e. limits
if [ $SERVE_UP = 1 ]; then
    exec 8<>"/dev/tcp/127.0.0.1/$PORT_BOMB"
    if wait_for 5 has_scope bomb; then
        B=$(scopes bomb | head -n1)
        v=$(prop "$B" TasksMax)
        check "bomb: scope TasksMax=20" "TasksMax=$v" [ "$v" = 20 ]
        cg=$(prop "$B" ControlGroup)
        v=$(IN cat "/sys/fs/cgroup/pids$cg/pids.max" 2>&1)
        check "bomb: pids.max of the scope's cgroup is 20" "$cg: '$v'" [ "$v" = 20 ]
        max=0 bad=
        for i in $(seq 25); do
            v=$(prop "$B" TasksCurrent)
            if is_number "$v"; then [ "$v" -gt "$max" ] && max=$v; else bad="TasksCurrent='$v'"; fi
            sleep 0.1
        done
        check "bomb: TasksCurrent never exceeds 20 (peak $max)" "${bad:-peak $max}" eval '[ -z "$bad" ] && [ "$max" -le 20 ] && [ "$max" -ge 10 ]'
        check "bomb: the scope holds the bomb" "$B ended" scope_active "$B"
        check "bomb: web still answers during the fork bomb" "curl failed" web_ok
        check "bomb: berth.service unaffected" "berth.service $(IN systemctl is-active berth.service)" berth_active
        out=$(IN berth stop bomb 2>&1)
        if wait_for 15 scope_gone "$B"; then
            ok "bomb: berth stop bomb ends the container (scope gone)"
        else
            not_ok "bomb: berth stop bomb ends the container (scope gone)" "$B still active; berth stop said: $out"
            IN systemctl kill --signal=SIGKILL "$B" >/dev/null 2>&1
            wait_for 15 scope_gone "$B"
        fi
        exec 8>&-
        # berth stop leaves the socket working: the next connection starts a new container.
        exec 8<>"/dev/tcp/127.0.0.1/$PORT_BOMB"
        if wait_for 5 eval '[ -n "$(scopes bomb)" ] && [ "$(scopes bomb)" != "$B" ]'; then
            ok "bomb: the socket still starts containers after berth stop"
            B2=$(scopes bomb | head -n1)
            IN berth stop bomb >/dev/null 2>&1 || IN systemctl kill --signal=SIGKILL "$B2" >/dev/null 2>&1
            wait_for 15 scope_gone "$B2" || IN systemctl kill --signal=SIGKILL "$B2" >/dev/null 2>&1
        else
            not_ok "bomb: the socket still starts containers after berth stop" "no new berth-bomb-*.scope"
        fi
    else
        not_ok "bomb: a connection starts a container with a scope" "no berth-bomb-*.scope"
    fi
    exec 8>&-

    exec 9<>"/dev/tcp/127.0.0.1/$PORT_HOG"
    if wait_for 5 has_scope hog; then
        H=$(scopes hog | head -n1)
        v=$(prop "$H" MemoryMax)
        check "hog: scope MemoryMax=32M" "MemoryMax=$v" [ "$v" = 33554432 ]
        cg=$(prop "$H" ControlGroup)
        v=$(IN cat "/sys/fs/cgroup/memory$cg/memory.limit_in_bytes" 2>&1)
        check "hog: memory.limit_in_bytes of the scope's cgroup is 32M" "$cg: '$v'" [ "$v" = 33554432 ]
        check "hog: web answers while the hog runs" "curl failed" web_ok
        if wait_for 15 scope_gone "$H"; then
            ok "hog: container ended"
            HID=$(container_id "$H" hog)
            wait_for 5 journal_has BERTH_SERVICE=hog BERTH_CONTAINER="$HID" BERTH_EVENT=stopped
            ev=$(IN journalctl --no-pager -q -o cat BERTH_SERVICE=hog BERTH_CONTAINER="$HID" BERTH_EVENT=stopped 2>/dev/null)
            check "hog: stop event says killed by SIGKILL (OOM)" "stop event: '${ev:-none}'" \
                eval 'grep -Eq "exited.*(SIGKILL|signal 9)" <<<"$ev"'
        else
            not_ok "hog: OOM-killed inside its scope" "$H still active after 15 s (MemoryCurrent=$(prop "$H" MemoryCurrent))"
            IN systemctl kill --signal=SIGKILL "$H" >/dev/null 2>&1
        fi
        check "hog: web still answers after the OOM kill" "curl failed" web_ok
        check "hog: berth.service unaffected" "berth.service $(IN systemctl is-active berth.service)" berth_active
    else
        not_ok "hog: a connection starts a container with a scope" "no berth-hog-*.scope"
    fi
    exec 9>&-
else
    not_ok "limits (bomb, hog)" "berth.service is not up"
fi

# ---------------------------------------------------------------- the end
v=$(IN systemctl list-units --plain --no-legend --no-pager --state=failed 2>/dev/null | awk '{print $1}' | xargs)
check "no failed units in the testbed" "failed: $v" [ -z "$v" ]

exit   # on_exit: stops the testbed, prints the summary, exits 1 if anything failed
