#!/usr/bin/env bash
# System tests: berth under a real systemd (tests/testbed, booted with --userns so
# MemoryMax/TasksMax are enforced and MemoryCurrent/TasksCurrent reported), driven
# from the host over 127.0.0.1 with real clients (ssh, curl, wrk) against real
# peers (dropbear, lighttpd) and the probe (src/bin/berth-probe.rs).
#
#   sudo tests/system/run.sh            # from anywhere; builds with cargo first
#
# Prints one `ok - NAME` / `not ok - NAME: WHY` line per test, diagnostics as
# `# ...`, and last exactly one line `N passed, M failed`; exits 1 if M > 0.
# On failure the testbed's whole journal is kept in target/system-test/journal.txt.
#
# Ports used on the host's loopback (the testbed shares the host network):
#   8080 web (berth serve, listen)   2222 ssh (berth serve, inetd)
#   2223 dropbear (systemd Accept=yes -> berth inetd)   2291 bomb, 2292 hog,
#   2293 probe, 2294 crash, 2297 warm, 2298 forger, 2299 victim, 2300-2301 gen,
#   2302 dirs, 2303 stubborn, 2304 slicebomb, 2310 OpenSSH sshd -i (berth serve, inetd),
#   2311 faults (blocks x, y), 2312 f2 (block f2.), 2320 frz (freeze_after, listen,
#   generated socket), 2330 zed (block z: reload of the warm pool, berth top),
#   2340 pu (private_users)
#   9464 berth-metrics.socket (Accept=yes)
#
# Runs are serialized on a host by flock on /run/lock/berth-system-test.lock (the
# ports are fixed by the shipped socket units; tests/demo-systemd.sh takes it too).
# About 60 s with a cached tree. The boot and install steps are shared with
# tests/demo-systemd.sh in tests/system/lib.sh.
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
# shellcheck source=tests/system/lib.sh
. "$REPO/tests/system/lib.sh"

PORT_BOMB=2291 PORT_HOG=2292 PORT_PROBE=2293 PORT_CRASH=2294 PORT_PROBE2=2295 PORT_NOSUCH=2296 PORT_WARM=2297
PORT_FORGER=2298 PORT_VICTIM=2299 PORT_SSHD=2310

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
        lib_stop 2>"$S/stop.log"; diag <"$S/stop.log"
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
lib_build
lib_host_tools ssh:openssh-client ssh-keygen:openssh-client curl:curl wrk:wrk jq:jq
lib_lock
lib_ports_free $PORT_WEB $PORT_SSH $PORT_DROPBEAR $PORT_BOMB $PORT_HOG $PORT_PROBE $PORT_CRASH $PORT_WARM $PORT_FORGER $PORT_VICTIM $PORT_SSHD

HAVE_SERVE=0 HAVE_INETD=0
"$BERTH" serve --help >/dev/null 2>&1 && HAVE_SERVE=1
"$BERTH" inetd --help >/dev/null 2>&1 && HAVE_INETD=1

lib_boot
diag <"$S/boot.log"

# ---------------------------------------------------------------- configuration under test
NET_FALLBACK=0
if lib_net_admin; then
    ok "testbed: the container has CAP_NET_ADMIN (needed to bring up lo in a private netns)"
else
    not_ok "testbed: the container has CAP_NET_ADMIN (needed to bring up lo in a private netns)" \
        "CapBnd of the testbed's PID 1 is $(awk '/^CapBnd:/{print $2}' "/proc/$LEADER/status") (no CAP_NET_ADMIN): tests/testbed/boot.sh must pass --capability=CAP_NET_ADMIN with --userns; the services below run with network = \"host\" instead, so the 'only lo' tests fail"
    NET_FALLBACK=1
fi

CFG=$S/cfg
# The test's one change to the shipped web service: a short idle timeout.
lib_stage_config "$CONFIG" "$CFG" 2s

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
# probe_toml [TOP-LEVEL LINES]: the probe (installed as /usr/lib/berth/berth-probe,
# under /usr so every container sees it), inetd style: one command a connection.
probe_toml() {
    cat <<TOML
# berth-probe: reports what it sees from inside its container (src/bin/berth-probe.rs).
mode = "inetd"
exec = ["/usr/lib/berth/berth-probe"]
max_lifetime = "2min"
${1:-}

[sandbox]
tmp_size = "1M"
$([ $NET_FALLBACK = 1 ] && echo 'network = "host"')

[resources]
memory_max = "64M"
tasks_max = 16
TOML
}
probe_toml >"$CFG/services/probe.toml"
cat >"$CFG/services/crash.toml" <<'TOML'
# Exits with status 3 at once, every time: a crash loop berth must throttle.
mode = "inetd"
exec = ["/usr/lib/berth/berth-probe", "--exit-now", "3"]

[sandbox]
tmp_size = "1M"
TOML
lib_add_socket "$CFG" bomb $PORT_BOMB
lib_add_socket "$CFG" hog $PORT_HOG
lib_add_socket "$CFG" probe $PORT_PROBE
# Several sockets may share one name: a second one for the probe service.
sed -i "s|^ListenStream=127.0.0.1:$PORT_PROBE\$|&\nListenStream=127.0.0.1:$PORT_PROBE2|" "$CFG/systemd/berth-probe.socket"
# A socket whose name matches no service: logged and ignored.
lib_add_socket "$CFG" nosuch $PORT_NOSUCH
lib_add_socket "$CFG" crash $PORT_CRASH
# Journal forgery (block p): forger writes syslog lines as "victim"; victim
# (user nobody, the default) writes its own syslog and stderr lines.
# The writers stay alive (logger reading its stdin, sh waiting for it) while
# journald looks them up: journald reads a sender's cgroup from /proc when it
# processes the line, so a sender that has already exited gets no
# _SYSTEMD_UNIT at all (docs/security.md, 9.6).
cat >"$CFG/services/forger.toml" <<'TOML'
mode = "inetd"
exec = ["/bin/sh", "-c", "{ echo forged-7c1e; sleep 2; } | logger -t victim; echo done"]
[sandbox]
tmp_size = "1M"
TOML
cat >"$CFG/services/victim.toml" <<'TOML'
mode = "inetd"
exec = ["/bin/sh", "-c", "echo victim-stderr-7c1e >&2; { echo victim-syslog-7c1e; sleep 2; } | logger -t victim; echo done"]
[sandbox]
tmp_size = "1M"
TOML
lib_add_socket "$CFG" forger $PORT_FORGER
lib_add_socket "$CFG" victim $PORT_VICTIM
if [ $NET_FALLBACK = 1 ]; then
    lib_net_host $(ls "$CFG"/services/*.toml | grep -v '/probe\.toml$')
fi

# ---------------------------------------------------------------- install into the testbed
lib_install "$CONFIG" "$CFG"
# The probe comes with the package, at /usr/lib/berth/berth-probe.

if out=$(IN berth check 2>&1); then
    ok "berth check passes on the installed configuration"
else
    not_ok "berth check passes on the installed configuration" "$(echo "$out" | tr '\n' ' ')"
fi

SOCKETS="berth-web.socket berth-ssh.socket dropbear.socket berth-bomb.socket berth-hog.socket berth-probe.socket berth-crash.socket berth-nosuch.socket berth-forger.socket berth-victim.socket berth-sshd.socket"
if out=$(lib_enable_sockets $SOCKETS); then
    ok "socket units enabled and listening"
else
    not_ok "socket units enabled and listening" "$(echo "$out" | tr '\n' ' ')"
fi
# berth.service gets the sockets that name it (Service=berth.service); start it
# after them so it is handed all of them.
SERVE_UP=0
if [ $HAVE_SERVE = 0 ]; then
    not_ok "berth.service (berth serve) is active" "this build has no 'berth serve' subcommand"
elif lib_start_serve; then
    ok "berth.service (berth serve) is active"; SERVE_UP=1
else
    not_ok "berth.service (berth serve) is active" \
        "state $(IN systemctl is-active berth.service); $(IN journalctl -u berth.service -n 5 -o cat --no-pager | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- ssh helpers
PROBE='echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | sort | tr "\n" " ")
if touch /usr/berth-probe 2>/dev/null; then echo usr=rw; else echo usr=ro; fi
echo tmp=[$(ls -A /tmp)]
echo procs=$(ls /proc | grep -c "^[0-9]")
echo map=$(head -n1 /proc/self/uid_map | xargs) id=$(id -u)
echo keys=$(stat -c %u:%a /root/.ssh/authorized_keys)'

# ssh_suite LABEL PORT SERVICE [LOGIN-LINE [SYSLOG-IDENT]]: the sandbox as seen from a
# login, and the scope of a session; the server logs LOGIN-LINE (a regex) for a key login.
ssh_suite() {
    local label=$1 port=$2 svc=$3 login=${4:-Pubkey auth succeeded} ident=${5:-dropbear} out unit cg v
    if out=$(timeout 30 "${SSH[@]}" -p "$port" root@127.0.0.1 "$PROBE" 2>&1) && [[ "$out" == *ifaces=* ]]; then
        ok "$label: key login runs a command"
    else
        not_ok "$label: key login runs a command" \
            "ssh -p $port said: '$(echo "$out" | tail -n 3 | tr '\n' ' ')'; journal: $(IN journalctl -q -o cat -t "$ident" -n 2 --no-pager | tr '\n' ' ')"
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
    v=$(sed -n 's/^map=//p' <<<"$out")
    # private_users (the examples' setting): root inside is uid 0 of a block
    # of the testbed's berth.toml range 65536-524287, not the testbed's root.
    check "$label: private_users: root inside is uid 0 of a block of the range, not root outside" \
        "map=$v" eval '[[ "$v" =~ ^0\ ([0-9]+)\ 65536\ id=0$ ]] && (( BASH_REMATCH[1] >= 65536 && BASH_REMATCH[1] <= 458752 && BASH_REMATCH[1] % 65536 == 0 ))'
    v=$(sed -n 's/^keys=//p' <<<"$out")
    check "$label: private_users: the idmapped authorized_keys is root's inside (as the server requires)" \
        "stat: $v" [ "$v" = "0:644" ]

    # An interactive login: dropbear allocates a pty (chown to group tty) and changes groups.
    out=$(timeout 30 "${SSH[@]}" -tt -p "$port" root@127.0.0.1 'echo tty=$(tty)' </dev/null 2>&1 | tr -d '\r')
    if [[ "$out" == *tty=/dev/pts/* ]]; then
        ok "$label: interactive login with a pty (ssh -tt)"
    else
        not_ok "$label: interactive login with a pty (ssh -tt)" \
            "got '$(echo "$out" | tail -n 2 | tr '\n' ' ')'; journal: $(IN journalctl -q -o cat -t "$ident" -n 3 --no-pager | grep -v '^Child connection' | tr '\n' ' ')"
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
        check "$label: $ident's syslog lines are in the journal under the scope" \
            "journalctl -u $unit has no '$login'" \
            wait_for 5 journal_grep "$login" -u "$unit"
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
            # berth notes the listener flags lighttpd set (within its idle check's step).
            wait_for 5 IN test -s /run/berth/listen-flags/web
            pid0=$(prop berth.service MainPID)
            IN systemctl restart berth.service
            pid1=$(prop berth.service MainPID)
            check "restart: berth.service active again with a new main pid" "MainPID $pid0 -> $pid1, $(IN systemctl is-active berth.service)" \
                eval 'berth_active && [ "$pid1" != "$pid0" ] && [ "$pid1" != 0 ]'
            check "restart: the web container survives the restart" "$WR not active after the restart" scope_active "$WR"
            check "restart: the ssh session's scope survives the restart" "$SS not active after the restart" scope_active "$SS"
            v=$(sess_run 'echo after')
            check "restart: the open ssh session still answers" "got '$v'" [ "$v" = after ]
            # systemd clears O_NONBLOCK on every socket it passes to the new
            # berth.service, and lighttpd shares that flag on its listener: berth
            # must put back what lighttpd had set, or lighttpd, once it has served
            # the next connection, blocks in accept() and leaves its other
            # connections unserved.
            web_ok
            L=$(IN sh -c "for p in \$(cat /sys/fs/cgroup/unified/berth.slice/berth-web.slice/$WR/cgroup.procs); do
                    [ \"\$(cat /proc/\$p/comm)\" = lighttpd ] && echo \$p; done" 2>/dev/null | head -n1)
            fl=$(IN sh -c "grep '^flags:' /proc/$L/fdinfo/3" 2>/dev/null | awk '{print $2}')
            check "restart: the adopted lighttpd's listener is non-blocking again, as lighttpd set it (flags $fl)" "pid '$L' flags '$fl'" \
                eval '[ -n "$fl" ] && (( (8#$fl & 8#4000) != 0 ))'
            not_in_accept() { [ "$(IN cat /proc/$L/wchan 2>/dev/null)" != inet_csk_accept ]; }
            check "restart: the adopted lighttpd serves a connection and goes back to its event loop, not into a blocking accept()" \
                "wchan $(IN cat /proc/$L/wchan 2>/dev/null)" eval 'web_ok && wait_for 5 not_in_accept'
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

# ---------------------------------------------------------------- helpers for f-l
# probe_cmd CMD: one command line to the probe service; its answer (if any) on stdout
probe_cmd() {
    timeout 10 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; printf "%s\n" "$2" >&3 2>/dev/null; cat <&3' \
        _ "$PORT_PROBE" "$1" 2>/dev/null
}
# jcount MATCHES...: how many journal entries match
jcount()    { IN journalctl --no-pager -q -o json "$@" 2>/dev/null | grep -c .; }
jcount_gt() { local n=$1; shift; [ "$(jcount "$@")" -gt "$n" ]; }   # N MATCHES...
# jlast FIELD MATCHES...: FIELD of the newest matching entry
jlast()     { local f=$1; shift; IN journalctl --no-pager -q -o json -n 1 "$@" 2>/dev/null | jq -r ".$f // empty"; }
status_text() { prop berth.service StatusText; }
all_idle()  { [ -z "$(IN systemctl list-units --plain --no-legend --no-pager --state=active 'berth-*.scope' 2>/dev/null)" ]; }
# the scope's cgroup has no process left (PIDs in the testbed whose /proc/PID/cgroup names it)
procs_in_scope() { IN sh -c 'grep -l -F "/$1" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3 | xargs' _ "$1"; }

# ---------------------------------------------------------------- f. STATUS=
if [ $SERVE_UP = 1 ]; then
    # N: the services with a socket handed to berth.service (dropbear.toml has none:
    # its socket is systemd's own Accept=yes).
    NSVC=0
    for n in $(sed -n 's/^FileDescriptorName=//p' "$CFG"/systemd/*.socket | sort -u); do
        [ -f "$CFG/services/$n.toml" ] && NSVC=$((NSVC + 1))
    done
    status_is() { [[ "$(status_text)" =~ ^$NSVC\ services,\ $1\ containers?($|\;) ]]; }
    wait_for 20 all_idle || note "containers still running before the STATUS= checks: $(IN systemctl list-units --plain --no-legend --state=active 'berth-*.scope' | awk '{print $1}' | xargs)"
    if wait_for 5 status_is 0; then
        ok "status: StatusText is '$NSVC services, 0 containers' with nothing running"
    else
        not_ok "status: StatusText is '$NSVC services, 0 containers' with nothing running" "StatusText='$(status_text)'"
    fi
    # A probe connection with no command yet: its container runs, waiting for a line.
    exec 3<>"/dev/tcp/127.0.0.1/$PORT_PROBE"
    if wait_for 5 status_is 1; then
        ok "status: StatusText counts 1 container while a probe connection is open"
    else
        not_ok "status: StatusText counts 1 container while a probe connection is open" "StatusText='$(status_text)'"
    fi
    exec 8<>"/dev/tcp/127.0.0.1/$PORT_PROBE"
    if wait_for 5 status_is 2; then
        ok "status: StatusText counts 2 containers with two probe connections"
    else
        not_ok "status: StatusText counts 2 containers with two probe connections" "StatusText='$(status_text)'"
    fi
    exec 3>&- 8>&-
    if wait_for 10 status_is 0; then
        ok "status: StatusText back to 0 containers once they ended"
    else
        not_ok "status: StatusText back to 0 containers once they ended" "StatusText='$(status_text)'"
    fi
else
    not_ok "STATUS= of berth.service" "berth.service is not up"
fi

# ---------------------------------------------------------------- g. berth list, status, logs
if [ $SERVE_UP = 1 ]; then
    wait_for 15 no_scope web
    # One connection held open: the container stays up with its idle timer running.
    exec 7<>"/dev/tcp/127.0.0.1/$PORT_WEB"
    if wait_for 5 has_scope web; then
        WA=$(scopes web | head -n1)
        wait_for 5 journal_grep 'server started' -u "$WA"
        sleep 0.5   # the supervisor's idle check (every 200 ms here) sets the timer
        out=$(IN berth list 2>&1)
        read -r mem tasks < <(awk -v u="$WA" 'NR==1{for(i=1;i<=NF;i++)c[$i]=i; next} $1==u{print $c["MEMORY"], $c["TASKS"]}' <<<"$out")
        check "admin: berth list shows the web container's row with MEMORY and TASKS" \
            "MEMORY='${mem:-}' TASKS='${tasks:-}' in: $(echo "$out" | tr -s ' ' | tr '\n' '|')" \
            eval '[[ "${mem:-}" =~ ^[0-9.]+[BKMGT]$ ]] && is_number "${tasks:-}" && [ "$tasks" -gt 0 ]'
        out=$(IN berth status web 2>&1)
        why="$(echo "$out" | tr -s ' ' | tr '\n' '|' | cut -c1-600)"
        check "admin: berth status web shows 'Memory use'" "$why" eval 'grep -Eq "^Memory use: +[0-9.]+[BKMGT] " <<<"$out"'
        check "admin: berth status web shows 'Tasks'" "$why" eval 'grep -Eq "^Tasks: +[1-9][0-9]* " <<<"$out"'
        check "admin: berth status web shows 'Idle timer: ends in'" "$why" eval 'grep -Eq "^Idle timer: +ends in [0-9]" <<<"$out"'
        check "admin: berth status web shows lighttpd's line under 'Recent log'" "$why" \
            eval 'awk "/^Recent log:/{f=1;next} f && /server started/{x=1} END{exit !x}" <<<"$out"'
        out=$(IN berth logs web 2>&1)
        check "admin: berth logs web shows lighttpd's line and berth's events" \
            "$(echo "$out" | tail -n 4 | tr '\n' '|')" \
            eval '[[ "$out" == *"server started"* && "$out" == *"container started"* ]]'
        exec 7>&-
        wait_for 15 scope_gone "$WA" || note "$WA still active 15 s after its connection closed"
        # Follow: the request made meanwhile wakes a container, whose events must show up.
        IN timeout 3 berth logs web -f >"$S/follow" 2>&1 4>&- &
        FPID=$!; BG_PIDS+=("$FPID")
        wait_for 2 test -s "$S/follow"; sleep 0.3
        n0=$(wc -l <"$S/follow")
        out=$(web_page)
        wait "$FPID"
        new=$(tail -n +$((n0 + 1)) "$S/follow")
        check "admin: berth logs web -f follows (a request meanwhile: its container's start appears)" \
            "curl: '$(echo "$out" | head -c 60)'; new lines: '$(echo "$new" | tr '\n' '|')'" \
            eval 'grep -q "container started" <<<"$new"'
    else
        exec 7>&-
        not_ok "admin: a held connection wakes the web container" "no berth-web-*.scope"
    fi

    # ------------------------------------------------------------ h. berth stop (listen)
    web_ok || web_ok
    WB=$(scopes web | head -n1)
    if [ -n "$WB" ]; then
        lp=$(IN pgrep -x lighttpd | xargs)
        out=$(IN berth stop web 2>&1); rc=$?
        check "listen stop: berth stop web succeeds" "exit $rc: $out" [ $rc = 0 ]
        check "listen stop: the web scope is gone" "$WB still active 10 s after berth stop" wait_for 10 scope_gone "$WB"
        check "listen stop: lighttpd's processes are gone" "before: '$lp', after: '$(IN pgrep -x lighttpd | xargs)'" \
            eval '[ -n "$lp" ] && wait_for 5 eval "[ -z \"\$(IN pgrep -x lighttpd)\" ]"'
        out=$(web_page); WC=$(scopes web | head -n1)
        check "listen stop: the socket still wakes a new container" \
            "page: '$(echo "$out" | head -c 80)', scope '$WC' (stopped: $WB)" \
            eval '[[ "$out" == *"Hello from lighttpd"* ]] && [ -n "$WC" ] && [ "$WC" != "$WB" ]'
    else
        not_ok "listen stop: a running web container to stop" "no berth-web-*.scope after a request"
    fi
else
    not_ok "berth list/status/logs/stop" "berth.service is not up"
fi

# ---------------------------------------------------------------- i. double fork (inetd)
if [ $SERVE_UP = 1 ]; then
    wait_for 10 no_scope probe
    exec 3<>"/dev/tcp/127.0.0.1/$PORT_PROBE"
    if wait_for 5 has_scope probe; then
        P=$(scopes probe | head -n1)
        cg=$(prop "$P" ControlGroup)
        printf 'orphan\n' >&3
        ans=$(timeout 10 cat <&3)
        exec 3>&-
        opid=$(jq -r '.orphan_pid // empty' <<<"$ans" 2>/dev/null)
        check "double fork: the probe forked a detached grandchild (orphan_pid $opid inside)" "answer: '$ans'" is_number "$opid"
        check "double fork: the scope ends with the application" "$P still active" wait_for 10 scope_gone "$P"
        left=$(procs_in_scope "$P")
        check "double fork: no process left in the scope's cgroup ($cg)" "pids still in $P: $left" [ -z "$left" ]
        check "double fork: the scope's cgroup is removed" "/sys/fs/cgroup/pids$cg still exists" \
            eval '[ -n "$cg" ] && ! IN test -d "/sys/fs/cgroup/pids$cg"'
        v=$(IN pgrep -x berth-probe | xargs)
        check "double fork: no berth-probe process left in the testbed" "pids: $v" [ -z "$v" ]
    else
        exec 3>&-
        not_ok "double fork: a probe connection starts a container with a scope" "no berth-probe-*.scope"
    fi
else
    not_ok "double fork" "berth.service is not up"
fi

# ---------------------------------------------------------------- j. reload
if [ $SERVE_UP = 1 ]; then
    r=$(probe_cmd report)
    # The container's network namespace has a TCP table of its own (berth's
    # nursery namespace), although nspawn mounts the testbed's /proc/sys
    # read-only; the testbed's own setting stays the administrator's.
    e=$(jq -r '.tcp_ehash_entries // empty' <<<"$r" 2>/dev/null); c=$(IN cat /proc/sys/net/ipv4/tcp_child_ehash_entries)
    check "netns: the container's TCP hash table is its own (512 buckets), the testbed's tcp_child_ehash_entries untouched" \
        "tcp_ehash_entries='$e' testbed child setting='$c'" eval '[ "$e" = 512 ] && [ "$c" = 0 ]'
    h=$(jq -r '.hostname // empty' <<<"$r" 2>/dev/null); g=$(jq -r '.env.GREETING // "unset"' <<<"$r" 2>/dev/null)
    check "reload: before, the probe reports hostname 'probe' and no GREETING" "hostname='$h' GREETING='$g'" \
        eval '[ "$h" = probe ] && [ "$g" = unset ]'

    # A broken file: the whole reload is refused and the old configuration stays.
    printf 'mode = "inetd"\nexec = ["/bin/true"]\nbogus_key = 1\n' >"$ROOT/etc/berth/services/broken.toml"
    nrf=$(jcount -u berth.service BERTH_EVENT=reload-failed)
    out=$(IN systemctl reload berth.service 2>&1) || note "systemctl reload (broken config): $out"
    if wait_for 5 jcount_gt "$nrf" -u berth.service BERTH_EVENT=reload-failed; then
        m=$(jlast MESSAGE -u berth.service BERTH_EVENT=reload-failed)
        check "reload (broken): journal says 'reload refused, old configuration kept' with broken.toml:3:1 and the key" \
            "message: '$m'" eval '[[ "$m" == *"reload refused, old configuration kept"*"/etc/berth/services/broken.toml:3:1:"*"bogus_key"* ]]'
    else
        not_ok "reload (broken): journal has BERTH_EVENT=reload-failed" \
            "none; berth.service said: $(IN journalctl -u berth.service -n 3 -o cat --no-pager | tr '\n' '|')"
    fi
    if wait_for 5 eval '[[ "$(status_text)" == *"reload failed"* ]]'; then
        ok "reload (broken): StatusText mentions the failed reload ($(status_text))"
    else
        not_ok "reload (broken): StatusText mentions the failed reload" "StatusText='$(status_text)'"
    fi
    check "reload (broken): berth.service still active" "$(IN systemctl is-active berth.service)" berth_active
    check "reload (broken): web still answers" "curl failed" web_ok
    r=$(probe_cmd report); h=$(jq -r '.hostname // empty' <<<"$r" 2>/dev/null)
    check "reload (broken): the probe still runs with the old configuration" "hostname='$h'" [ "$h" = probe ]

    # Fixed, and the probe changed: the next container has the new settings.
    rm -f "$ROOT/etc/berth/services/broken.toml"
    probe_toml 'hostname = "probe-reloaded"
environment = { GREETING = "hello-after-reload" }' >"$ROOT/etc/berth/services/probe.toml"
    nrl=$(jcount -u berth.service BERTH_EVENT=reloaded)
    out=$(IN systemctl reload berth.service 2>&1) || note "systemctl reload: $out"
    if wait_for 5 jcount_gt "$nrl" -u berth.service BERTH_EVENT=reloaded; then
        m=$(jlast MESSAGE -u berth.service BERTH_EVENT=reloaded)
        check "reload: journal says 'configuration reloaded' (BERTH_EVENT=reloaded)" "message: '$m'" \
            eval '[[ "$m" == *"configuration reloaded"* ]]'
    else
        not_ok "reload: journal has BERTH_EVENT=reloaded" \
            "none; berth.service said: $(IN journalctl -u berth.service -n 3 -o cat --no-pager | tr '\n' '|')"
    fi
    check "reload: StatusText no longer mentions a failed reload" "StatusText='$(status_text)'" \
        wait_for 3 eval '[[ "$(status_text)" =~ ^$NSVC\ services,\ [0-9]+\ containers?$ ]]'
    r=$(probe_cmd report)
    h=$(jq -r '.hostname // empty' <<<"$r" 2>/dev/null); g=$(jq -r '.env.GREETING // "unset"' <<<"$r" 2>/dev/null)
    check "reload: the next probe container has the new hostname and environment" "hostname='$h' GREETING='$g'" \
        eval '[ "$h" = probe-reloaded ] && [ "$g" = hello-after-reload ]'

    # The same over D-Bus: root may, nobody may not.
    BUSCALL=(busctl call org.berth.Supervisor1 /org/berth/Supervisor1 org.berth.Supervisor1)
    NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    nrl=$(jcount -u berth.service BERTH_EVENT=reloaded)
    out=$(IN "${BUSCALL[@]}" Reload 2>&1); rc=$?
    check "bus: Reload as root works (and reloads)" "exit $rc: '$out'" \
        eval '[ $rc = 0 ] && wait_for 5 jcount_gt "$nrl" -u berth.service BERTH_EVENT=reloaded'
    nrl=$(jcount -u berth.service BERTH_EVENT=reloaded)
    out=$(IN "${NOBODY[@]}" "${BUSCALL[@]}" Reload 2>&1); rc=$?
    sleep 0.3
    check "bus: Reload as nobody is refused (AccessDenied)" "exit $rc: '$out'" \
        eval '[ $rc != 0 ] && grep -Eqi "access ?denied" <<<"$out" && [ "$(jcount -u berth.service BERTH_EVENT=reloaded)" = "$nrl" ]'
    exec 3<>"/dev/tcp/127.0.0.1/$PORT_PROBE"
    if wait_for 5 has_scope probe; then
        P=$(scopes probe | head -n1)
        out=$(IN "${NOBODY[@]}" "${BUSCALL[@]}" StopService s probe 2>&1); rc=$?
        sleep 0.3
        check "bus: StopService as nobody is refused (AccessDenied), the container keeps running" "exit $rc: '$out'; $P active: $(prop "$P" ActiveState)" \
            eval '[ $rc != 0 ] && grep -Eqi "access ?denied" <<<"$out" && scope_active "$P"'
    else
        not_ok "bus: StopService as nobody is refused" "no probe container to try it on"
    fi
    exec 3>&-
else
    not_ok "reload" "berth.service is not up"
fi

# ---------------------------------------------------------------- k. a failed scope job
if [ $SERVE_UP = 1 ]; then
    wait_for 10 no_scope probe
    nf=$(jcount BERTH_SERVICE=probe BERTH_EVENT=failed)
    out=$(IN systemctl mask berth-probe.slice 2>&1) || note "systemctl mask berth-probe.slice: $out"
    ans=$(probe_cmd report)
    check "scope failure: the connection is closed with no answer" "answer: '$(echo "$ans" | head -c 120)'" [ -z "$ans" ]
    if wait_for 5 jcount_gt "$nf" BERTH_SERVICE=probe BERTH_EVENT=failed; then
        m=$(jlast MESSAGE BERTH_SERVICE=probe BERTH_EVENT=failed)
        fid=$(jlast BERTH_CONTAINER BERTH_SERVICE=probe BERTH_EVENT=failed)
        check "scope failure: BERTH_EVENT=failed names the scope and the reason" "message: '$m'" \
            eval '[[ "$m" == *"berth-probe-$fid.scope"* ]] && grep -qi "mask" <<<"$m"'
        check "scope failure: the application never started" \
            "started event for $fid: $(jcount BERTH_CONTAINER="$fid" BERTH_EVENT=started); scopes: $(scopes probe | xargs); probe pids: $(IN pgrep -x berth-probe | xargs)" \
            eval '[ -n "$fid" ] && ! journal_has BERTH_CONTAINER="$fid" BERTH_EVENT=started && no_scope probe && [ -z "$(IN pgrep -x berth-probe)" ]'
    else
        not_ok "scope failure: journal has BERTH_EVENT=failed for the probe" \
            "none; probe events: $(IN journalctl BERTH_SERVICE=probe -n 3 -o cat --no-pager | tr '\n' '|')"
    fi
    IN systemctl unmask berth-probe.slice >/dev/null 2>&1
    r=$(probe_cmd report); h=$(jq -r '.hostname // empty' <<<"$r" 2>/dev/null)
    check "scope failure: after unmask the probe answers again" "answer: '$(echo "$r" | head -c 120)'" [ -n "$h" ]
else
    not_ok "scope failure" "berth.service is not up"
fi

# ---------------------------------------------------------------- l. crash loop
if [ $SERVE_UP = 1 ]; then
    nt=$(jcount BERTH_SERVICE=crash BERTH_EVENT=throttled)
    # Six connections one after another; each container exits 3 at once.
    (
        for i in 1 2 3 4 5 6; do
            timeout 20 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && cat <&3' _ "$PORT_CRASH" >/dev/null 2>&1
        done
    ) 4>&- &
    CPID=$!; BG_PIDS+=("$CPID")
    if wait_for 10 jcount_gt "$nt" BERTH_SERVICE=crash BERTH_EVENT=throttled; then
        ok "crash loop: BERTH_EVENT=throttled for BERTH_SERVICE=crash"
    else
        not_ok "crash loop: BERTH_EVENT=throttled for BERTH_SERVICE=crash" \
            "none; crash events: $(IN journalctl BERTH_SERVICE=crash -n 4 -o cat --no-pager | tr '\n' '|')"
    fi
    check "crash loop: web answers meanwhile" "curl failed" web_ok
    out=$(timeout 30 "${SSH[@]}" -p $PORT_SSH root@127.0.0.1 'echo alive' 2>&1)
    check "crash loop: ssh answers meanwhile" "ssh said: '$(echo "$out" | tail -n 2 | tr '\n' ' ')'" [ "$out" = alive ]
    wait "$CPID"
    delays=$(IN journalctl --no-pager -q -o cat BERTH_SERVICE=crash BERTH_EVENT=throttled 2>/dev/null |
             sed -n 's/.*next start delayed \([0-9.]*\)\(ms\|s\)$/\1 \2/p' |
             awk '{printf "%d ", ($2 == "ms") ? $1 : $1 * 1000}')
    check "crash loop: throttled with growing delays (ms: $delays)" "delays: '$delays'" \
        eval 'awk "{ if (NF < 3) exit 1; for (i = 2; i <= NF; i++) if (\$i <= \$(i-1)) exit 1 }" <<<"$delays"'
    out=$(IN berth status crash 2>&1)
    check "crash loop: berth status crash reports the throttling" "$(echo "$out" | tail -n 3 | tr '\n' '|')" \
        eval 'grep -q "next start delayed" <<<"$out"'
    check "crash loop: berth status crash has the throttle line" "$(echo "$out" | head -n 4 | tr '\n' '|')" \
        eval 'grep -Eq "^(Throttled: +[0-9]+ failed starts in a row; next start in|Failed starts: +[1-9])" <<<"$out"'
    check "crash loop: berth.service stays active" "$(IN systemctl is-active berth.service)" berth_active
else
    not_ok "crash loop" "berth.service is not up"
fi

# probe_cmd_port PORT CMD: one command line to the probe, its answer.
probe_cmd_port() {
    timeout 10 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; printf "%s\n" "$2" >&3; cat <&3' _ "$1" "$2"
}

# ---------------------------------------------------------------- n. socket names
if [ $SERVE_UP = 1 ]; then
    a=$(probe_cmd_port $PORT_PROBE "echo one" 2>/dev/null)
    b=$(probe_cmd_port $PORT_PROBE2 "echo two" 2>/dev/null)
    check "two sockets named probe both reach the probe service" "got '$a' and '$b'" \
        eval '[ "$a" = one ] && [ "$b" = two ]'
    check "a socket named nosuch (no such service) is logged and ignored" \
        "$(IN journalctl --no-pager -q -u berth.service -o cat | grep -c nosuch) journal lines" \
        eval 'IN journalctl --no-pager -q -u berth.service -o cat | grep nosuch | grep -q "matches no service"'
fi

# ---------------------------------------------------------------- p. a journal that cannot be forged
# A container can write any SYSLOG_IDENTIFIER through /dev/log; berth logs and
# status select by the fields journald sets from the sender's cgroup instead.
if [ $SERVE_UP = 1 ]; then
    one_conn() { timeout 20 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && cat <&3' _ "$1" 2>/dev/null; }
    a=$(one_conn $PORT_FORGER); b=$(one_conn $PORT_VICTIM)
    check "journal forgery: forger and victim containers ran" "answers '$a' '$b'" eval '[ "$a" = done ] && [ "$b" = done ]'
    # The forged line is in the journal under the stolen identifier (so the
    # old SYSLOG_IDENTIFIER match showed it in berth logs victim) ...
    check "journal forgery: forger's 'logger -t victim' line is in the journal (SYSLOG_IDENTIFIER=victim)" \
        "journalctl -t victim has no forged-7c1e" wait_for 5 journal_grep forged-7c1e -t victim
    u=$(jlast _SYSTEMD_UNIT MESSAGE=forged-7c1e)
    check "journal forgery: the forged line is attributed to forger's scope ($u)" "_SYSTEMD_UNIT=$u" \
        eval '[[ "$u" =~ ^berth-forger-[0-9a-f]{12}\.scope$ ]]'
    wait_for 5 journal_grep victim-stderr-7c1e _SYSTEMD_SLICE=berth-victim.slice
    v=$(IN berth logs victim 2>&1)
    check "journal forgery: berth logs victim does not show forger's line" "$(grep forged <<<"$v" | head -n 2 | tr '\n' '|')" \
        eval '! grep -q forged-7c1e <<<"$v"'
    check "journal forgery: berth logs victim shows victim's syslog and stderr lines and its events" \
        "$(echo "$v" | tail -n 5 | tr '\n' '|')" \
        eval 'grep -q victim-syslog-7c1e <<<"$v" && grep -q victim-stderr-7c1e <<<"$v" && grep -q "container started" <<<"$v"'
    v=$(IN berth status victim 2>&1)
    check "journal forgery: berth status victim's recent log has victim's lines, not forger's" "$(echo "$v" | tail -n 6 | tr '\n' '|')" \
        eval '! grep -q forged-7c1e <<<"$v" && grep -q victim-syslog-7c1e <<<"$v"'
    uid=$(jlast _UID MESSAGE=victim-syslog-7c1e); u=$(jlast _SYSTEMD_UNIT MESSAGE=victim-syslog-7c1e)
    check "journal forgery: victim's syslog line keeps its _UID (nobody, 65534) and its scope ($u)" "_UID=$uid _SYSTEMD_UNIT=$u" \
        eval '[ "$uid" = 65534 ] && [[ "$u" =~ ^berth-victim-[0-9a-f]{12}\.scope$ ]]'
    uid=$(jlast _UID MESSAGE=victim-stderr-7c1e); u=$(jlast _SYSTEMD_UNIT MESSAGE=victim-stderr-7c1e)
    check "journal forgery: victim's stderr line keeps its _UID (65534) and its scope ($u)" "_UID=$uid _SYSTEMD_UNIT=$u" \
        eval '[ "$uid" = 65534 ] && [[ "$u" =~ ^berth-victim-[0-9a-f]{12}\.scope$ ]]'
    id=$(container_id "$u" victim)
    v=$(IN berth logs "$id" 2>&1)
    check "journal forgery: berth logs CONTAINER-ID shows its stderr and its events" "$(echo "$v" | tail -n 4 | tr '\n' '|')" \
        eval 'grep -q victim-stderr-7c1e <<<"$v" && grep -q "container started" <<<"$v" && ! grep -q forged-7c1e <<<"$v"'
else
    not_ok "journal forgery" "berth.service is not up"
fi

# ---------------------------------------------------------------- q. device policy
# Every scope: DevicePolicy=closed, DeviceAllow= exactly the container's /dev.
# Testbed 1 records it; enforcing needs the v1 devices controller writable (it
# is not from a user namespace) or BPF on cgroup v2 (testbed 2).
if [ $SERVE_UP = 1 ]; then
    exec 6<>"/dev/tcp/127.0.0.1/$PORT_PROBE"
    if wait_for 5 has_scope probe; then
        P=$(scopes probe | head -n1)
        v=$(IN systemctl show -p DevicePolicy -p DeviceAllow "$P" 2>&1)
        check "devices: the scope has DevicePolicy=closed" "$(echo "$v" | tr '\n' '|')" grep -qx DevicePolicy=closed <<<"$v"
        # (systemd keeps its own order: compare as sets)
        want=$(printf '%s\n' "/dev/null rw" "/dev/zero rw" "/dev/full rw" "/dev/random rw" "/dev/urandom rw" \
            "/dev/tty rw" "/dev/ptmx rw" "char-pts rw" | sort | tr '\n' '|')
        got=$(sed -n 's/^DeviceAllow=//p' <<<"$v" | sort | tr '\n' '|')
        check "devices: DeviceAllow= is exactly null zero full random urandom tty ptmx char-pts (rw)" "got '$got'" [ "$got" = "$want" ]
        cg=$(prop "$P" ControlGroup)
        dl=$(IN cat "/sys/fs/cgroup/devices$cg/devices.list" 2>&1 | tr '\n' ' ')
        note "devices: v1 devices.list of $P: ${dl:-none} (enforced only where the controller is writable)"
    else
        not_ok "devices: a probe container has a scope" "no berth-probe-*.scope"
    fi
    exec 6>&-
    wait_for 10 no_scope probe
else
    not_ok "device policy" "berth.service is not up"
fi

# ---------------------------------------------------------------- r. idle teardown through the cgroup freezer
# The idle container is held by its scope's cgroup.freeze (hybrid: the scope's
# directory in /sys/fs/cgroup/unified), not by SIGSTOP to a walk of pids.
if [ $SERVE_UP = 1 ]; then
    exec 7<>"/dev/tcp/127.0.0.1/$PORT_WEB"
    if wait_for 5 has_scope web; then
        WF=$(scopes web | head -n1); cg=$(prop "$WF" ControlGroup)
        v=$(IN cat "/sys/fs/cgroup/unified$cg/cgroup.freeze" 2>&1)
        check "freezer: the scope's cgroup2 directory has cgroup.freeze (not frozen while in use)" "/sys/fs/cgroup/unified$cg/cgroup.freeze: '$v'" [ "$v" = 0 ]
        exec 7>&-
        check "freezer: the idle container is stopped" "$WF still active 15 s after its connection closed" wait_for 15 scope_gone "$WF"
        id=$(container_id "$WF" web)
        check "freezer: it was frozen through cgroup.freeze for its last look (BERTH_FREEZER=cgroup.freeze)" \
            "$(IN journalctl --no-pager -q -o cat BERTH_CONTAINER="$id" | tail -n 3 | tr '\n' '|')" \
            wait_for 5 journal_has BERTH_SERVICE=web BERTH_CONTAINER="$id" BERTH_FREEZER=cgroup.freeze
        check "freezer: no container fell back to SIGSTOP" "$(IN journalctl --no-pager -q -u berth.service -o cat | grep -c 'no cgroup freezer reaches')" \
            eval '! IN journalctl --no-pager -q -u berth.service -o cat | grep -q "no cgroup freezer reaches\|using SIGSTOP"'
        check "freezer: web answers after the frozen teardown" "curl failed" web_ok
    else
        exec 7>&-
        not_ok "freezer: a web container has a scope" "no berth-web-*.scope"
    fi
else
    not_ok "freezer" "berth.service is not up"
fi

# ---------------------------------------------------------------- m. without the supervisor
if [ $SERVE_UP = 1 ]; then
    # A probe container waits for its command line; then berth.service stops
    # (KillMode=process: the container stays in its scope).
    exec 6<>"/dev/tcp/127.0.0.1/$PORT_PROBE"
    if wait_for 5 has_scope probe; then
        IN systemctl stop berth.service
        out=$(IN berth list 2>&1)
        check "no supervisor: berth list says it shows systemd's view" "$(echo "$out" | tr '\n' '|')" \
            eval 'grep -q "berth serve is not running" <<<"$out"'
        check "no supervisor: berth list still lists the running container" "$(echo "$out" | tr '\n' '|')" \
            eval 'grep -Eq "^berth-probe-[0-9a-f]{12}\.scope +probe +[0-9]+ +running" <<<"$out"'
        out=$(IN berth status probe 2>&1)
        check "no supervisor: berth status says so and shows the scope's accounting" "$(echo "$out" | head -n 8 | tr '\n' '|')" \
            eval 'grep -q "berth serve is not running" <<<"$out" && grep -q "^Memory use:" <<<"$out"'
        exec 6>&-
        IN systemctl start berth.service
        check "berth.service back after the fallback checks" "$(IN systemctl is-active berth.service)" berth_active
    else
        exec 6>&-
        not_ok "no supervisor: list/status fall back" "no berth-probe scope to look at"
    fi
fi

# ---------------------------------------------------------------- o. warm sandboxes
# Last, because parked sandboxes count as containers in STATUS= and scopes above.
# A warm sandbox is built as SCHED_BATCH and reset before its connection; in a
# user namespace (this testbed) only that reset is permitted (SCHED_IDLE and nice
# could not be undone), so this checks the pool is really used here.
warm_ids() { IN berth list --json 2>/dev/null | jq -r '.containers[] | select(.service == "warm" and .state == "warm") | .id' | sort; }
warm_n_is() { [ "$(warm_ids | grep -c .)" = "$1" ]; }
if [ $SERVE_UP = 1 ]; then
    probe_toml 'warm = 2' >"$ROOT/etc/berth/services/warm.toml"
    mkdir -p "$S/warm/systemd"
    lib_add_socket "$S/warm" warm $PORT_WARM
    install -m644 "$S/warm/systemd/berth-warm.socket" "$ROOT/etc/systemd/system/"
    # systemd refuses to start a socket whose service is running: stop berth first
    # (KillMode=process: running containers stay and are adopted).
    IN systemctl daemon-reload
    IN systemctl stop berth.service
    IN systemctl start berth-warm.socket || note "berth-warm.socket did not start"
    lib_start_serve || note "berth.service did not come back"
    check "warm: berth list shows 2 sandboxes prepared ahead" "warm ids: $(warm_ids | xargs)" wait_for 20 warm_n_is 2
    before=$(warm_ids | xargs)
    a=$(probe_cmd_port $PORT_WARM "echo warm" 2>/dev/null)
    check "warm: a connection is served" "got '$a'" [ "$a" = warm ]
    id=$(jlast BERTH_CONTAINER BERTH_SERVICE=warm BERTH_EVENT=started)
    check "warm: the connection got one of the prepared sandboxes" "started '$id', warm ones were: $before" \
        eval '[ -n "$id" ] && grep -qw -- "$id" <<<"$before"'
    check "warm: no prepared sandbox was unusable" "$(IN journalctl --no-pager -q -u berth.service -o cat | grep 'warm sandbox unusable' | head -n 2 | tr '\n' '|')" \
        eval '! IN journalctl --no-pager -q -u berth.service -o cat | grep -q "warm sandbox unusable"'
    check "warm: the pool is refilled to 2" "warm ids: $(warm_ids | xargs)" wait_for 20 warm_n_is 2
fi

# ---------------------------------------------------------------- t. the generator
# A service file with `listen` and no hand-written socket unit: berth-generator
# (linked by the package) writes berth-NAME.socket at daemon-reload; a second file
# added later answers after the README's steps; a broken file is skipped, never
# breaking daemon-reload.
PORT_GEN=2300 PORT_GEN2=2301
gen_unit() { IN systemctl show -p FragmentPath --value "berth-$1.socket" 2>/dev/null; }
if [ $SERVE_UP = 1 ]; then
    check "generator: the package links /usr/lib/systemd/system-generators/berth-generator to /usr/bin/berth" \
        "$(IN readlink /usr/lib/systemd/system-generators/berth-generator)" \
        eval '[ "$(IN readlink /usr/lib/systemd/system-generators/berth-generator)" = /usr/bin/berth ]'
    probe_toml "listen = [\"127.0.0.1:$PORT_GEN\"]" >"$ROOT/etc/berth/services/gen.toml"
    IN systemctl daemon-reload
    check "generator: berth-gen.socket is generated from gen.toml" "FragmentPath '$(gen_unit gen)'" \
        eval '[ "$(gen_unit gen)" = /run/systemd/generator/berth-gen.socket ]'
    check "generator: sockets.target wants berth-gen.socket" "$(prop berth-gen.socket WantedBy)" \
        eval 'prop berth-gen.socket WantedBy | grep -qw sockets.target'
    # The README's steps for a new service while berth runs.
    IN systemctl stop berth.service 2>/dev/null   # (quiet: "can still be activated by")
    IN systemctl start sockets.target berth.service || note "systemctl start sockets.target berth.service failed"
    a=$(probe_cmd_port $PORT_GEN "echo gen" 2>/dev/null)
    check "generator: a service file with listen and no socket unit answers" "got '$a'" [ "$a" = gen ]
    # A broken file beside a good new one: daemon-reload succeeds, the good one
    # gets its socket, the broken one none.
    probe_toml "listen = [\"127.0.0.1:$PORT_GEN2\"]" >"$ROOT/etc/berth/services/gen2.toml"
    printf 'mode = "inetd"\nexec = ["/bin/true"]\nlisten = ["127.0.0.1:99999"]\n' >"$ROOT/etc/berth/services/genbad.toml"
    out=$(IN systemctl daemon-reload 2>&1); rc=$?
    check "generator: daemon-reload succeeds with a broken service file" "exit $rc: $out" [ $rc = 0 ]
    check "generator: the broken file gets no socket unit" "FragmentPath '$(gen_unit genbad)'" \
        eval '[ -z "$(gen_unit genbad)" ] && ! IN test -e /run/systemd/generator/berth-genbad.socket'
    # It says why on the kernel log; nspawn gives a container no /dev/kmsg and
    # PID 1 no console for it here, so run it as systemd does and see stderr.
    out=$(IN sh -c 'd=$(mktemp -d) && /usr/lib/systemd/system-generators/berth-generator "$d" "$d" "$d"; echo "rc=$?"; rm -rf "$d"' 2>&1)
    check "generator: it names the broken file and why, and exits 0" "$(tr '\n' '|' <<<"$out")" \
        eval 'grep -q "^berth-generator: /etc/berth/services/genbad.toml:3:11: listen: expected an address" <<<"$out" &&
              grep -q "^berth-generator: /etc/berth/services/genbad.toml: skipped" <<<"$out" && grep -qx "rc=0" <<<"$out"'
    # berth serve refuses a configuration with errors: the broken file goes first.
    rm -f "$ROOT/etc/berth/services/genbad.toml"
    IN systemctl daemon-reload
    IN systemctl stop berth.service 2>/dev/null   # (quiet: "can still be activated by")
    IN systemctl start sockets.target berth.service || note "systemctl start sockets.target berth.service failed"
    a=$(probe_cmd_port $PORT_GEN2 "echo gen2" 2>/dev/null)
    check "generator: a service file added later answers after daemon-reload" "got '$a'" [ "$a" = gen2 ]
    a=$(probe_cmd_port $PORT_GEN "echo gen" 2>/dev/null)
    check "generator: the first one still answers" "got '$a'" [ "$a" = gen ]
fi

# ---------------------------------------------------------------- s. runtime, state, credentials
# berth.service gets a systemd credential (LoadCredential= in a drop-in); a
# service run as nobody names it bare and reads it from $CREDENTIALS_DIRECTORY,
# writes its $RUNTIME_DIRECTORY and counts its starts in $STATE_DIRECTORY.
PORT_DIRS=2302
if [ $SERVE_UP = 1 ]; then
    SECRET="from-systemd-$$"
    # Written inside: a file of the host's root is unmapped (nobody) in the testbed.
    IN sh -c "umask 077; printf %s '$SECRET' >/etc/berth/sys-secret"
    mkdir -p "$ROOT/etc/systemd/system/berth.service.d"
    printf '[Service]\nLoadCredential=sys-secret:/etc/berth/sys-secret\n' \
        >"$ROOT/etc/systemd/system/berth.service.d/credentials.conf"
    cat >"$ROOT/etc/berth/services/dirs.toml" <<'TOML'
mode = "inetd"
user = "nobody"
exec = ["/bin/sh", "-c", "d=$CREDENTIALS_DIRECTORY; echo cred=$(cat $d/sys-secret) mode=$(stat -c %a:%U $d/sys-secret); echo run=$(touch $RUNTIME_DIRECTORY/x && echo rw); n=$(cat $STATE_DIRECTORY/n 2>/dev/null || echo 0); echo $((n + 1)) >$STATE_DIRECTORY/n; echo state=$n"]

[sandbox]
credentials = ["sys-secret"]
state_directory = true
TOML
    [ $NET_FALLBACK = 1 ] && echo 'network = "host"' >>"$ROOT/etc/berth/services/dirs.toml"
    mkdir -p "$S/dirs/systemd"
    lib_add_socket "$S/dirs" dirs $PORT_DIRS
    install -m644 "$S/dirs/systemd/berth-dirs.socket" "$ROOT/etc/systemd/system/"
    IN systemctl daemon-reload
    IN systemctl stop berth.service
    IN systemctl start berth-dirs.socket || note "berth-dirs.socket did not start"
    lib_start_serve || note "berth.service did not come back"
    a=$(probe_cmd_port $PORT_DIRS "" 2>/dev/null)
    b=$(probe_cmd_port $PORT_DIRS "" 2>/dev/null)
    check "credentials: LoadCredential= on berth.service reaches the container, 0400 for nobody" \
        "got '$a'; berth: $(IN journalctl --no-pager -q -u berth.service -o cat | grep -i credential | tail -n 2 | tr '\n' '|')" \
        eval '[[ "$a" == *"cred=$SECRET mode=400:nobody"* ]]'
    check "runtime directory: \$RUNTIME_DIRECTORY writable by nobody" "got '$a'" eval '[[ "$a" == *"run=rw"* ]]'
    check "state directory: a value written by one container is read by the next" "got '$a' then '$b'" \
        eval '[[ "$a" == *"state=0"* && "$b" == *"state=1"* ]]'
    v=$(IN stat -c %a:%U:%n /var/lib/berth/dirs /var/lib/berth/dirs/n 2>&1 | xargs)
    check "state directory: /var/lib/berth/dirs is 0700 nobody's, with the value" "stat: $v" \
        [ "$v" = "700:nobody:/var/lib/berth/dirs 644:nobody:/var/lib/berth/dirs/n" ]
fi

# ---------------------------------------------------------------- u. metrics
# berth-metrics.socket (Accept=yes, shipped, not enabled): a scrape from the host
# runs one `berth metrics --http`. The body is parsed by prometheus_client's
# OpenMetrics parser (a library, tests/system/metrics_check.py) and compared
# with `berth list --json` taken around it and the journal's started entries.
PORT_METRICS=9464
if [ $SERVE_UP = 1 ]; then
    if ! /usr/bin/python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null; then
        not_ok "metrics: the host has python3-prometheus-client" "import failed (tests/ci.sh installs it)"
    elif [ -n "$(ss -Hltn "sport = :$PORT_METRICS" 2>/dev/null)" ]; then
        not_ok "metrics: port $PORT_METRICS is free on the host" "$(ss -Hltn "sport = :$PORT_METRICS" | head -n1)"
    else
        out=$(IN systemctl enable --now berth-metrics.socket 2>&1)
        check "metrics: systemctl enable --now berth-metrics.socket" "$out" \
            wait_for 5 eval '[ "$(IN systemctl is-active berth-metrics.socket 2>/dev/null)" = active ]'
        web_page >/dev/null   # a running listen-mode container for the accounting
        INV=$(IN systemctl show -p InvocationID --value berth.service)
        probe_started() {
            IN journalctl --no-pager -q -o json _SYSTEMD_INVOCATION_ID="$INV" \
                BERTH_SERVICE=probe BERTH_EVENT=started 2>/dev/null | wc -l
        }
        n0=$(probe_started)
        for i in 1 2 3; do probe_cmd_port $PORT_PROBE "echo m$i" >/dev/null 2>&1; done
        wait_for 5 eval '[ "$(probe_started)" -ge $((n0 + 3)) ]' ||
            note "metrics: the journal shows $(probe_started) probe starts, expected $((n0 + 3))"
        IN berth list --json >"$S/m-before.json" 2>/dev/null
        curl -sS -m 20 -D "$S/m-headers" -o "$S/m-body" "http://127.0.0.1:$PORT_METRICS/metrics" 2>"$S/m-curl"
        rc=$?
        IN berth list --json >"$S/m-after.json" 2>/dev/null
        check "metrics: curl gets 200 with the OpenMetrics content type" \
            "curl rc=$rc $(head -c 300 "$S/m-curl"); headers: $(tr -d '\r' <"$S/m-headers" 2>/dev/null | head -n 5 | tr '\n' '|'); journal: $(IN journalctl --no-pager -q -o cat -u 'berth-metrics@*' | tail -n 3 | tr '\n' '|')" \
            eval 'grep -q "^HTTP/1.1 200" "$S/m-headers" && grep -qi "^Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8" "$S/m-headers"'
        out=$(/usr/bin/python3 "$REPO/tests/system/metrics_check.py" "$S/m-body" "$S/m-before.json" "$S/m-after.json" \
            probe "$(probe_started)" 3 2>&1)
        rc=$?
        check "metrics: the scrape parses as OpenMetrics and agrees with berth list --json and the journal" \
            "$(echo "$out" | head -n 8 | tr '\n' '|')" [ $rc = 0 ]
        [ $rc = 0 ] && note "metrics: $out"
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 10 "http://127.0.0.1:$PORT_METRICS/nope")
        check "metrics: another path is 404" "got $code" [ "$code" = 404 ]
        head=$(curl -sS -I -m 10 "http://127.0.0.1:$PORT_METRICS/" 2>&1 | tr -d '\r')
        check "metrics: HEAD / answers 200 with a length and no body" "got '$(echo "$head" | head -n 4 | tr '\n' '|')'" \
            eval 'grep -q "^HTTP/1.1 200" <<<"$head" && grep -q "^Content-Length: [1-9]" <<<"$head"'
        v=$(IN berth metrics 2>&1 | tail -n 1)
        check "metrics: berth metrics on the command line ends with # EOF" "last line '$v'" [ "$v" = "# EOF" ]
        IN systemctl disable --now berth-metrics.socket >/dev/null 2>&1
    fi
fi

# ---------------------------------------------------------------- w. stop_timeout and [slice]
# stubborn ignores SIGTERM: its scope has TimeoutStopUSec= = stop_timeout, so
# `berth stop` ends it by SIGKILL after 3 s, not systemd's 90 s. slicebomb: a fork
# bomb in each of three containers, together held by the slice's TasksMax.
PORT_STUBBORN=2303 PORT_SLICEBOMB=2304
if [ $SERVE_UP = 1 ]; then
    cat >"$ROOT/etc/berth/services/stubborn.toml" <<'TOML'
mode = "inetd"
exec = ["/bin/sh", "-c", "trap '' TERM; echo ready; sleep 1000"]
stop_timeout = "3s"
max_lifetime = "2min"
[sandbox]
tmp_size = "1M"
TOML
    cat >"$ROOT/etc/berth/services/slicebomb.toml" <<'TOML'
# The bomb waits 2 s, so all three containers start before the slice is full.
mode = "inetd"
exec = ["/bin/bash", "-c", "exec 2>/dev/null; sleep 2; b(){ b|b& }; b; while :; do sleep 1; done"]
max_lifetime = "2min"
stop_timeout = "1s"
[sandbox]
tmp_size = "1M"
[resources]
tasks_max = 100
[slice]
tasks_max = 30
memory_max = "96M"
TOML
    for f in stubborn slicebomb; do
        [ $NET_FALLBACK = 1 ] && echo 'network = "host"' >>"$ROOT/etc/berth/services/$f.toml"
    done
    mkdir -p "$S/u/systemd"
    lib_add_socket "$S/u" stubborn $PORT_STUBBORN
    lib_add_socket "$S/u" slicebomb $PORT_SLICEBOMB
    install -m644 "$S/u/systemd/berth-stubborn.socket" "$S/u/systemd/berth-slicebomb.socket" \
        "$ROOT/etc/systemd/system/"
    IN systemctl daemon-reload
    IN systemctl stop berth.service
    IN systemctl start berth-stubborn.socket berth-slicebomb.socket || note "the u. sockets did not start"
    lib_start_serve || note "berth.service did not come back"

    exec 7<>"/dev/tcp/127.0.0.1/$PORT_STUBBORN"
    read -r -t 10 v <&7
    if [ "$v" = ready ] && wait_for 5 has_scope stubborn; then
        U=$(scopes stubborn | head -n1)
        v=$(prop "$U" TimeoutStopUSec)
        check "stop_timeout: the scope's TimeoutStopUSec is stop_timeout (3s)" "TimeoutStopUSec=$v" [ "$v" = 3s ]
        t=$(now_ms)
        out=$(IN berth stop stubborn 2>&1)
        r=$(( $(now_ms) - t ))
        check "stop_timeout: berth stop returns at once (${r} ms)" "took $r ms: $out" [ "$r" -lt 3000 ]
        # Gone, not "deactivating" (the scope between SIGTERM and SIGKILL).
        stopped() { case $(prop "$1" ActiveState) in active|activating|deactivating) return 1 ;; esac; }
        if wait_for 10 stopped "$U"; then
            d=$(( $(now_ms) - t ))
            check "stop_timeout: a SIGTERM-ignoring container is gone stop_timeout after berth stop ($d ms)" \
                "gone after $d ms, expected 3000 to 7000" eval '[ "$d" -ge 2800 ] && [ "$d" -le 7000 ]'
        else
            not_ok "stop_timeout: a SIGTERM-ignoring container is gone stop_timeout after berth stop" \
                "$U still active 10 s after berth stop (stop_timeout 3s): $out"
            IN systemctl kill --signal=SIGKILL "$U" >/dev/null 2>&1
        fi
    else
        not_ok "stop_timeout: a connection starts the stubborn container with a scope" "read '$v'; no berth-stubborn-*.scope"
    fi
    exec 7>&-

    exec 7<>"/dev/tcp/127.0.0.1/$PORT_SLICEBOMB" 8<>"/dev/tcp/127.0.0.1/$PORT_SLICEBOMB" \
        9<>"/dev/tcp/127.0.0.1/$PORT_SLICEBOMB"
    SL=berth-slicebomb.slice
    if wait_for 10 eval '[ "$(scopes slicebomb | wc -l)" -ge 3 ]'; then
        v=$(prop $SL TasksMax) m=$(prop $SL MemoryMax)
        check "slice: $SL has TasksMax=30 and MemoryMax=96M" "TasksMax=$v MemoryMax=$m" \
            eval '[ "$v" = 30 ] && [ "$m" = $((96 << 20)) ]'
        cg=$(prop $SL ControlGroup)
        v=$(IN cat "/sys/fs/cgroup/pids$cg/pids.max" 2>&1)
        check "slice: pids.max of the slice's cgroup is 30" "$cg: '$v'" [ "$v" = 30 ]
        max=0 bad=
        for i in $(seq 40); do
            v=$(prop $SL TasksCurrent)
            if is_number "$v"; then [ "$v" -gt "$max" ] && max=$v; else bad="TasksCurrent='$v'"; fi
            sleep 0.1
        done
        n=$(scopes slicebomb | wc -l)
        check "slice: three bombing containers together never exceed the slice's 30 tasks (peak $max, $n scopes)" \
            "${bad:-peak $max, $n scopes}" eval '[ -z "$bad" ] && [ "$max" -le 30 ] && [ "$max" -ge 20 ]'
        check "slice: berth.service unaffected" "berth.service $(IN systemctl is-active berth.service)" berth_active
        IN berth stop slicebomb >/dev/null 2>&1
        wait_for 10 eval '[ -z "$(scopes slicebomb)" ]' ||
            for u in $(scopes slicebomb); do IN systemctl kill --signal=SIGKILL "$u" >/dev/null 2>&1; done
    else
        not_ok "slice: three connections start three slicebomb containers" "scopes: $(scopes slicebomb | xargs)"
    fi
    exec 7>&- 8>&- 9>&-
fi

# ---------------------------------------------------------------- v. OpenSSH
# Debian's sshd -i per connection (config/services/sshd.toml, berth-sshd.socket):
# no wrapper; /run/sshd is the service's runtime directory; host keys made by
# ssh-keygen -A at install (lib_install).
if [ $SERVE_UP = 1 ]; then
    ssh_suite "OpenSSH sshd -i via berth serve (:$PORT_SSHD)" $PORT_SSHD sshd 'Accepted publickey for root from 127\.0\.0\.1' sshd
    out=$(timeout 30 "${SSH[@]}" -p $PORT_SSHD root@127.0.0.1 'stat -c %U:%a /run/sshd; id -u' 2>&1 | xargs)
    check "OpenSSH: /run/sshd is root's, 0755 (the runtime directory), the login is root" "got '$out'" [ "$out" = "root:755 0" ]
    v=$(IN berth logs sshd 2>&1)
    check "OpenSSH: berth logs sshd shows sshd's login line" "$(echo "$v" | tail -n 3 | tr '\n' ' ')" \
        eval '[[ "$v" == *"Accepted publickey for root"* ]]'
    v=$(IN systemctl is-active ssh.service ssh.socket 2>&1 | xargs)
    check "OpenSSH: the package's own ssh.service and ssh.socket are not running" "is-active: $v" \
        [ "$v" = "inactive inactive" ]
else
    not_ok "OpenSSH sshd -i via berth serve (:$PORT_SSHD)" "berth.service is not up"
fi

# ---------------------------------------------------------------- x. faults of the bus and of systemd under load
# issue 10, 6a and 6b. The faults service echoes each line it reads, to stderr
# (the journal) as "tok=LINE" and to the client as "up LINE". Loaders connect back
# to back, one token a connection, while dbus-daemon is restarted and systemd
# reloads and re-executes; each connection is answered ("ok"), closed ("closed")
# or still silent after 15 s ("hung"). docs/reliability.md.
PORT_FAULTS=2311
# fault_conn TOKEN: one connection, one line; prints ok, closed or hung
fault_conn() {
    timeout 20 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || { echo closed; exit; }
        printf "%s\n" "$2" >&3 2>/dev/null
        read -r -t 15 l <&3; rc=$?
        if [ "$l" = "up $2" ]; then echo ok; elif [ $rc -gt 128 ]; then echo hung; else echo closed; fi' \
        _ "$PORT_FAULTS" "$1" 2>/dev/null || echo hung
}
# loader ID FILE STOPFILE: connections back to back until STOPFILE exists
loader() {
    local i=0 r
    while [ ! -e "$3" ]; do
        i=$((i + 1)); r=$(fault_conn "$1-$i"); echo "$r $1-$i" >>"$2"
    done
}
# load_start NAME: three loaders writing $S/NAME.res; load_stop NAME waits for them
load_start() {
    rm -f "$S/$1.stop" "$S/$1.res"; : >"$S/$1.res"; LOADERS=()
    local k
    for k in 1 2 3; do loader "$1$k" "$S/$1.res" "$S/$1.stop" & LOADERS+=($!); BG_PIDS+=($!); done
}
load_stop() { touch "$S/$1.stop"; local p; for p in "${LOADERS[@]}"; do wait "$p" 2>/dev/null; done; }
load_n() { grep -c "^$2 " "$S/$1.res"; }   # NAME RESULT: how many
served_since() { [ "$(load_n "$1" ok)" -gt "$2" ]; }
# served_after NAME LINE N: more than N answers among the results after line LINE
# (a connection in flight at LINE may still answer: at most one per loader)
served_after() { [ "$(tail -n +$(($2 + 1)) "$S/$1.res" | grep -c '^ok ')" -gt "$3" ]; }
lines() { wc -l <"$S/$1.res"; }
# failures_since EPOCH: berth's reasons for the faults containers it refused, counted
failures_since() { jsince "$1" BERTH_SERVICE=faults BERTH_EVENT=failed | sed 's/([0-9a-f]\{12\})//; s/berth-faults-[0-9a-f]\{12\}/berth-faults-ID/g' | sort | uniq -c | sort -rn | head -n 5; }
# tokens_scoped NAME: every token the loaders got an answer for has its "tok=" line
# in the journal under a berth-faults-ID.scope (none ran outside a scope); prints
# the ones that do not
tokens_scoped() {
    IN journalctl --no-pager -q -o json SYSLOG_IDENTIFIER=faults 2>/dev/null |
        jq -r 'select(.MESSAGE | type == "string" and startswith("tok=")) | "\(.MESSAGE[4:]) \(._SYSTEMD_UNIT // "none")"' >"$S/tok.units"
    local bad=0 t u
    for t in $(awk '$1 == "ok" {print $2}' "$S/$1.res"); do
        u=$(awk -v t="$t" '$1 == t {print $2; exit}' "$S/tok.units")
        [[ "$u" =~ ^berth-faults-[0-9a-f]{12}\.scope$ ]] || { echo "$t:${u:-no-line}"; bad=1; }
    done
    return $bad
}
tokens_logged() { local out; out=$(tokens_scoped "$1") && return 0; FAULT_BAD=$out; return 1; }
# jsince EPOCH MATCHES...: entries since EPOCH (seconds)
jsince() { local t=$1; shift; IN journalctl --no-pager -q -o cat -S "@$t" "$@" 2>/dev/null; }
load_summary() { echo "$(load_n "$1" ok) answered, $(load_n "$1" closed) closed, $(load_n "$1" hung) hung"; }
FAULTS_UP=0
if [ $SERVE_UP = 1 ]; then
    cat >"$ROOT/etc/berth/services/faults.toml" <<'TOML'
mode = "inetd"
exec = ["/bin/sh", "-c", "while read -r t; do echo tok=$t >&2; echo up $t; done"]
max_lifetime = "2min"
stop_timeout = "2s"
[sandbox]
tmp_size = "1M"
TOML
    [ $NET_FALLBACK = 1 ] && lib_net_host "$ROOT/etc/berth/services/faults.toml"
    mkdir -p "$S/x/systemd"
    lib_add_socket "$S/x" faults $PORT_FAULTS
    install -m644 "$S/x/systemd/berth-faults.socket" "$ROOT/etc/systemd/system/"
    IN systemctl daemon-reload
    IN systemctl stop berth.service
    IN systemctl start berth-faults.socket || note "berth-faults.socket did not start"
    lib_start_serve || note "berth.service did not come back"
    if [ "$(fault_conn x0)" = ok ]; then FAULTS_UP=1; else not_ok "faults: a connection is answered" "no 'up x0' on :$PORT_FAULTS"; fi
fi
if [ $FAULTS_UP = 1 ]; then
    # -- 6a: systemctl restart dbus while connections arrive
    PID_X=$(prop berth.service MainPID)
    load_start xa
    wait_for 20 served_since xa 5 || note "loaders: $(load_summary xa) before the restart"
    t=$(date +%s)
    IN systemctl restart dbus.service
    L=$(lines xa)
    check "dbus restart: berth logs the lost bus (BERTH_EVENT=bus-lost)" "no such entry since the restart" \
        wait_for 10 eval '[ -n "$(jsince $t BERTH_EVENT=bus-lost)" ]'
    check "dbus restart: berth reconnects (BERTH_EVENT=bus-reconnected)" \
        "none within 20 s; berth: $(jsince "$t" -u berth.service | tail -n 3 | tr '\n' ' ')" \
        wait_for 20 eval '[ -n "$(jsince $t BERTH_EVENT=bus-reconnected)" ]'
    jsince "$t" BERTH_EVENT=bus-reconnected | head -n1 | diag
    r=$(date +%s)
    check "dbus restart: new containers are served again within seconds (5 answers after the restart)" \
        "$(load_summary xa); $L connections before the restart" wait_for 15 served_after xa "$L" 5
    note "dbus restart: served again $(( $(date +%s) - r )) s after the reconnection"
    v=$(IN berth list --json 2>&1)
    check "dbus restart: berth re-acquired org.berth.Supervisor1 (berth list answered by the supervisor)" \
        "$(echo "$v" | tr -s ' \n' ' ' | cut -c1-200)" eval '[[ "$v" == *"\"supervisor\": true"* ]]'
    v=$(prop berth.service MainPID)
    check "dbus restart: the same berth.service process went on (MainPID $PID_X)" "MainPID now $v, $(IN systemctl is-active berth.service)" \
        eval '[ "$v" = "$PID_X" ] && berth_active'
    load_stop xa
    note "dbus restart: $(load_summary xa)"
    failures_since "$t" | diag
    check "dbus restart: every connection answered or closed, none left hanging" "$(load_summary xa)" [ "$(load_n xa hung)" = 0 ]
    FAULT_BAD=
    check "dbus restart: every container that answered ran in its own scope (its stderr under berth-faults-ID.scope)" \
        "tokens outside a scope: $FAULT_BAD" wait_for 10 tokens_logged xa
    n=$(load_n xa closed)
    if [ "$n" -gt 0 ]; then
        v=$(jsince "$t" BERTH_SERVICE=faults BERTH_EVENT=failed | grep -c 'system bus\|StartTransientUnit\|scope')
        check "dbus restart: the $n refused connections are logged as failed for want of the bus" "$v such entries" [ "$v" -ge 1 ]
    fi
    check "dbus restart: no faults scope left once the clients are gone" "scopes: $(scopes faults | xargs)" wait_for 15 no_scope faults

    # The bus away for longer than scope::RECONNECT_WAIT (10 s): a connection
    # meanwhile is refused and logged, never served without its scope.
    t=$(date +%s)
    IN systemctl stop dbus.socket dbus.service
    r=$(fault_conn xa-nobus)
    check "dbus stopped: a connection meanwhile is closed unserved (no container without a scope), not left hanging" \
        "got '$r'" [ "$r" = closed ]
    check "dbus stopped: the refusal is logged (\"no connection to the system bus\")" "$(failures_since "$t" | xargs)" \
        wait_for 5 eval 'jsince $t BERTH_SERVICE=faults BERTH_EVENT=failed | grep -q "no connection to the system bus"'
    IN systemctl start dbus.socket dbus.service
    check "dbus back: the next connection is served" "no answer within 20 s" wait_for 20 eval '[ "$(fault_conn xa-back)" = ok ]'
    check "dbus back: the same berth.service process, bus name held" "MainPID $(prop berth.service MainPID); $(IN berth list --json 2>&1 | tr -s ' \n' ' ' | cut -c1-120)" \
        eval '[ "$(prop berth.service MainPID)" = "$PID_X" ] && [[ "$(IN berth list --json 2>&1)" == *"\"supervisor\": true"* ]]'

    # -- 6b: daemon-reload and daemon-reexec while connections arrive
    load_start xb
    wait_for 20 served_since xb 5 || note "loaders: $(load_summary xb) before the reload"
    t=$(date +%s)
    IN systemctl daemon-reload
    L=$(lines xb)
    check "daemon-reload: connections are still served (5 answers after it)" "$(load_summary xb)" wait_for 15 served_after xb "$L" 5
    IN systemctl daemon-reexec
    L=$(lines xb)
    check "daemon-reexec: connections are still served (5 answers after it)" "$(load_summary xb)" wait_for 20 served_after xb "$L" 5
    load_stop xb
    note "daemon-reload and -reexec: $(load_summary xb)"
    failures_since "$t" | diag
    check "daemon-reload/-reexec: every connection answered or closed, none left hanging" "$(load_summary xb)" [ "$(load_n xb hung)" = 0 ]
    FAULT_BAD=
    check "daemon-reload/-reexec: every container that answered ran in its own scope" "tokens outside a scope: $FAULT_BAD" \
        wait_for 10 tokens_logged xb
    check "daemon-reload/-reexec: berth.service is the same process, active" "MainPID $(prop berth.service MainPID), $(IN systemctl is-active berth.service)" \
        eval '[ "$(prop berth.service MainPID)" = "$PID_X" ] && berth_active'
    check "daemon-reload/-reexec: served afterwards" "no answer" eval '[ "$(fault_conn xb-after)" = ok ]'
    check "daemon-reload/-reexec: no faults scope left" "scopes: $(scopes faults | xargs)" wait_for 15 no_scope faults
    v=$(IN systemctl list-units --plain --no-legend --no-pager --state=failed 'berth-*' 2>/dev/null | awk '{print $1}' | xargs)
    check "daemon-reload/-reexec: no failed berth unit" "failed: $v" [ -z "$v" ]
fi

# ---------------------------------------------------------------- y. berth killed in a burst, journald restarted
# issue 10, 6c and 6d. berth stages under /run/berth/root (sandbox::DEFAULT_STAGING_DIR):
# the root is mounted there in each stage's own mount namespace, so nothing may be
# mounted there (or left in it) in the testbed's.
staging_clean() { [ -z "$(IN findmnt -rn -o TARGET 2>/dev/null | grep '^/run/berth/root')" ] && [ -z "$(IN ls -A /run/berth/root 2>/dev/null)" ]; }
# stages or PID 1s outside any scope: still in berth.service's cgroup
half_built() { IN sh -c 'for p in $(cat /sys/fs/cgroup/unified/system.slice/berth.service/cgroup.procs 2>/dev/null); do c=$(cat /proc/$p/comm 2>/dev/null); case $c in berth-stage|berth-init) echo "$p:$c";; esac; done'; }
no_half_built() { [ -z "$(half_built)" ]; }
if [ $FAULTS_UP = 1 ]; then
    # -- 6c: kill -9 of the supervisor in the middle of a burst
    h1= h2=
    exec 7<>"/dev/tcp/127.0.0.1/$PORT_FAULTS" 8<>"/dev/tcp/127.0.0.1/$PORT_FAULTS"
    echo held1 >&7; echo held2 >&8
    read -r -t 10 h1 <&7; read -r -t 10 h2 <&8
    [ "$h1 $h2" = "up held1 up held2" ] || note "held connections answered '$h1' '$h2'"
    HELD=$(scopes faults | xargs)
    load_start yc
    wait_for 20 served_since yc 5 || note "loaders: $(load_summary yc) before the kill"
    pid0=$(prop berth.service MainPID)
    t=$(date +%s)
    IN kill -9 "$pid0"
    check "kill -9: systemd restarts berth.service (new main pid)" "MainPID $pid0 -> $(prop berth.service MainPID), $(IN systemctl is-active berth.service)" \
        wait_for 20 eval 'berth_active && [ "$(prop berth.service MainPID)" != "$pid0" ] && [ "$(prop berth.service MainPID)" != 0 ]'
    L=$(lines yc)
    check "kill -9: connections are served again (5 answers after the restart)" "$(load_summary yc)" wait_for 15 served_after yc "$L" 5
    load_stop yc
    note "kill -9: $(load_summary yc)"
    failures_since "$t" | diag
    check "kill -9: every connection of the burst answered or closed, none left hanging" "$(load_summary yc)" [ "$(load_n yc hung)" = 0 ]
    h1=; echo again1 >&7; read -r -t 10 h1 <&7
    check "kill -9: the containers running at the kill keep running" "held connection answered '$h1'" [ "$h1" = "up again1" ]
    v=$(IN berth list --json 2>/dev/null | jq -r '[.containers[] | select(.service == "faults") | .unit] | join(" ")')
    miss=
    for u in $HELD; do [[ " $v " == *" $u "* ]] || miss+=" $u"; done
    check "kill -9: the new supervisor adopted the held containers ($(echo "$HELD" | wc -w))" "not listed:$miss (listed: $v)" \
        eval '[ -n "$HELD" ] && [ -z "$miss" ]'
    exec 7>&- 8>&-
    check "kill -9: no faults scope left once the clients are gone (every container adopted or stopped)" \
        "scopes: $(scopes faults | xargs)" wait_for 20 no_scope faults
    v=$(jsince "$t" | grep -i 'already exists' | head -n 3)
    check "kill -9: no 'unit already exists' in the journal" "$v" [ -z "$v" ]
    check "kill -9: no half-built sandbox left (no berth-stage or berth-init outside a scope)" "$(half_built | xargs)" \
        wait_for 10 no_half_built
    check "kill -9: nothing mounted on or left in the staging directory /run/berth/root" \
        "$(IN findmnt -rn -o TARGET | grep '^/run/berth' | xargs); $(IN ls -A /run/berth/root 2>&1 | xargs)" staging_clean
    v=$(IN systemctl list-units --plain --no-legend --no-pager --state=failed 'berth-*' 2>/dev/null | awk '{print $1}' | xargs)
    check "kill -9: no failed berth unit" "failed: $v" [ -z "$v" ]
    FAULT_BAD=
    check "kill -9: every container that answered ran in its own scope" "tokens outside a scope: $FAULT_BAD" \
        wait_for 10 tokens_logged yc

    # -- 6d: journald restarted
    h1= h2=
    exec 7<>"/dev/tcp/127.0.0.1/$PORT_FAULTS"
    echo jd-before >&7; read -r -t 10 h1 <&7
    JD=$(scopes faults | head -n1)
    IN systemctl restart systemd-journald.service
    check "journald restart: journald is active again" "$(IN systemctl is-active systemd-journald.service)" \
        wait_for 10 eval '[ "$(IN systemctl is-active systemd-journald.service)" = active ]'
    echo jd-during >&7; read -r -t 10 h2 <&7
    check "journald restart: a running container keeps running (answers after the restart)" "answered '$h1' then '$h2'" \
        eval '[ "$h1" = "up jd-before" ] && [ "$h2" = "up jd-during" ] && scope_active "$JD"'
    check "journald restart: the running container's next line reaches the journal" "no tok=jd-during" \
        wait_for 10 journal_grep '^tok=jd-during$' -t faults
    exec 7>&-
    check "journald restart: a new container is served" "no answer" eval '[ "$(fault_conn jd-new)" = ok ]'
    check "journald restart: the new container's line is in the journal under its scope" "no tok=jd-new under berth-faults-*.scope" \
        wait_for 10 eval 'IN journalctl --no-pager -q -o json -t faults 2>/dev/null | jq -r "select(.MESSAGE == \"tok=jd-new\") | ._SYSTEMD_UNIT" | grep -Eq "^berth-faults-[0-9a-f]{12}\.scope$"'
    v=$(IN berth logs faults 2>&1)
    check "journald restart: berth logs faults shows it" "$(echo "$v" | tail -n 2 | tr '\n' ' ')" eval '[[ "$v" == *"tok=jd-new"* ]]'
    t=$(date +%s)
    fault_conn jd-event >/dev/null
    check "journald restart: berth's own events still reach the journal" "no BERTH_EVENT=started since" \
        wait_for 10 eval '[ -n "$(jsince $t BERTH_SERVICE=faults BERTH_EVENT=started)" ]'
    check "journald restart: berth.service unaffected" "$(IN systemctl is-active berth.service)" berth_active
    check "faults: no faults scope left at the end" "scopes: $(scopes faults | xargs)" wait_for 15 no_scope faults
fi

# ---------------------------------------------------------------- h. freeze_after
# A listen-mode probe with freeze_after: idle, it is frozen through its scope's
# cgroup freezer. On this hybrid testbed that is cgroup.freeze in the scope's
# directory under /sys/fs/cgroup/unified (systemd makes no v1 freezer cgroups,
# see TESTBED.md; FreezeUnit is not available to a systemd in a user namespace),
# and that hierarchy has no memory controller, so there is no memory.reclaim
# here (the VM test covers it). The next connection is answered by the same
# container (same net and pid namespace inodes in the probe's report), a silent
# client and a crowd at thaw lose nothing, and idle_timeout still stops it.
PORT_FRZ=2320
frz_report() { probe_cmd_port $PORT_FRZ report 2>/dev/null | jq -r '"\(.namespaces.net) \(.namespaces.pid)"' 2>/dev/null; }
frz_state()  { IN berth list --json 2>/dev/null | jq -r '.containers[] | select(.service == "frz") | .state' | xargs; }
frz_state_is() { [ "$(frz_state)" = "$1" ]; }
if [ $SERVE_UP = 1 ]; then
    cat >"$ROOT/etc/berth/services/frz.toml" <<TOML
mode = "listen"
exec = ["/usr/lib/berth/berth-probe"]
listen = ["127.0.0.1:$PORT_FRZ"]
freeze_after = "1s"
idle_timeout = "12s"

[sandbox]
tmp_size = "1M"
$([ $NET_FALLBACK = 1 ] && echo 'network = "host"')

[resources]
tasks_max = 200
TOML
    IN systemctl daemon-reload
    IN systemctl stop berth.service 2>/dev/null   # (quiet: "can still be activated by")
    IN systemctl start sockets.target berth.service || note "systemctl start sockets.target berth.service failed"
    A=$(frz_report)
    check "freeze: a listen probe with freeze_after answers" "report: '$A'" eval '[[ "$A" == net:* ]]'
    FU=$(scopes frz | head -n1); cg=$(prop "${FU:-none}" ControlGroup)
    check "freeze: berth list shows the idle container frozen" "state '$(frz_state)'" wait_for 10 frz_state_is frozen
    v=$(IN cat "/sys/fs/cgroup/unified$cg/cgroup.freeze" 2>&1)
    check "freeze: the scope's cgroup.freeze is 1 while frozen" "/sys/fs/cgroup/unified$cg/cgroup.freeze: '$v'" [ "$v" = 1 ]
    v=$(IN cat "/sys/fs/cgroup/unified$cg/cgroup.events" 2>&1 | tr '\n' ' ')
    check "freeze: the kernel reports the scope frozen (cgroup.events)" "$v" eval '[[ "$v" == *"frozen 1"* ]]'
    v=$(IN berth status frz 2>&1)
    check "freeze: berth status shows State: frozen" "$(echo "$v" | head -n 6 | tr '\n' '|')" eval 'grep -q "^State: *frozen$" <<<"$v"'
    v=$(IN busctl call org.berth.Supervisor1 /org/berth/Supervisor1 org.berth.Supervisor1 ListContainers 2>&1)
    check "freeze: D-Bus ListContainers says frozen" "$v" eval '[[ "$v" == *"\"frz\""*"\"frozen\""* ]]'
    id=$(container_id "${FU:-none}" frz)
    v=$(IN journalctl --no-pager -q -o json BERTH_CONTAINER="$id" BERTH_EVENT=frozen 2>/dev/null | jq -r '"\(.BERTH_FREEZER) \(.BERTH_RECLAIM)"' | head -n1)
    check "freeze: frozen through cgroup.freeze, reclaim reported as unavailable here" "journal: '$v'" \
        eval '[[ "$v" == "cgroup.freeze no memory.reclaim"* ]]'
    B=$(frz_report)
    check "freeze: a connection while frozen is answered by the same container" "before '$A', after '$B'" \
        eval '[ -n "$A" ] && [ "$A" = "$B" ]'
    check "freeze: thawed, it runs again (cgroup.freeze 0)" "$(IN cat "/sys/fs/cgroup/unified$cg/cgroup.freeze" 2>&1)" \
        eval '[ "$(IN cat "/sys/fs/cgroup/unified$cg/cgroup.freeze" 2>&1)" = 0 ]'
    # Hostile: a client that connects and sends nothing while frozen, then a crowd.
    wait_for 10 frz_state_is frozen || note "not frozen again before the silent client: '$(frz_state)'"
    exec 5<>"/dev/tcp/127.0.0.1/$PORT_FRZ"
    check "freeze: a silent connection thaws it" "state '$(frz_state)'" wait_for 10 frz_state_is running
    for i in $(seq 1 30); do frz_report >"$S/frz.$i" & done; wait
    n=$(cat "$S"/frz.* | grep -cxF -- "$A")
    check "freeze: 30 clients at once, silent one open: all answered by the same container" \
        "$n of 30: $(sort "$S"/frz.* | uniq -c | tr '\n' ' ')" [ "$n" = 30 ]
    check "freeze: not frozen while the silent connection is open" "state '$(frz_state)'" frz_state_is running
    exec 5>&-
    check "freeze: frozen again after the silent client left" "state '$(frz_state)'" wait_for 10 frz_state_is frozen
    rm -f "$S"/frz.*
    for i in $(seq 1 30); do frz_report >"$S/frz.$i" & done; wait
    n=$(cat "$S"/frz.* | grep -cxF -- "$A")
    check "freeze: 30 clients at once at a frozen container: all answered by the same one" \
        "$n of 30: $(sort "$S"/frz.* | uniq -c | tr '\n' ' ')" [ "$n" = 30 ]
    v=$(jcount BERTH_CONTAINER="$id" BERTH_EVENT=started)
    check "freeze: one container started for all of it" "$v started events" [ "$v" = 1 ]
    # idle_timeout still ends it, counted from the last connection.
    check "freeze: idle_timeout stops the frozen container" "${FU:-none} still active 30 s later" wait_for 30 scope_gone "${FU:-none}"
    check "freeze: stopped for idle_timeout" "$(jlast MESSAGE BERTH_CONTAINER="$id" BERTH_EVENT=stopped)" \
        eval '[[ "$(jlast MESSAGE BERTH_CONTAINER="$id" BERTH_EVENT=stopped)" == *"idle_timeout reached"* ]]'
    # (Namespace inodes are reused once freed: the new container is told by its scope.)
    C=$(frz_report)
    FU2=$(scopes frz | head -n1)
    check "freeze: after the stop a new container answers" "report '$C', scope '$FU2' (was '$FU')" \
        eval '[[ "$C" == net:* ]] && [ -n "$FU2" ] && [ "$FU2" != "$FU" ]'
    rm -f "$ROOT/etc/berth/services/frz.toml" "$S"/frz.*
else
    not_ok "freeze_after" "berth.service is not up"
fi

# ---------------------------------------------------------------- c. private users
# A root service with private_users under the real systemd: the testbed maps eight
# blocks (0-524287) and here berth.toml hands out only the second, 65536-131071. Its block,
# scope and journal line; a container held open across a restart of
# berth.service is adopted with its block, so the next one is refused rather
# than given the same block; once it ends the block is free again.
PORT_PU=2340
if [ $SERVE_UP = 1 ]; then
    # One block (lib_install gives seven to the ssh examples; restored below).
    sed -i 's/^private_users_range = .*/private_users_range = "65536-131071"/' "$ROOT/etc/berth/berth.toml"
    cat >"$ROOT/etc/berth/services/pu.toml" <<'TOML'
mode = "inetd"
user = "root"
exec = ["/bin/sh", "-c", "echo map=$(head -n1 /proc/self/uid_map | xargs) id=$(id -u); echo pu-stderr-line >&2; read x; echo bye"]

[sandbox]
private_users = true
TOML
    [ $NET_FALLBACK = 1 ] && echo 'network = "host"' >>"$ROOT/etc/berth/services/pu.toml"
    mkdir -p "$S/pu/systemd"
    lib_add_socket "$S/pu" pu $PORT_PU
    install -m644 "$S/pu/systemd/berth-pu.socket" "$ROOT/etc/systemd/system/"
    IN systemctl daemon-reload
    IN systemctl stop berth.service
    IN systemctl start berth-pu.socket || note "berth-pu.socket did not start"
    lib_start_serve || note "berth.service did not come back"
    line=
    if exec 8<>"/dev/tcp/127.0.0.1/$PORT_PU"; then
        read -r -t 10 line <&8 || true
    fi
    check "private_users: root inside is uid 0 of the block 65536-131071" "got '$line'" \
        [ "$line" = "map=0 65536 65536 id=0" ]
    PS=$(scopes pu | head -n1)
    check "private_users: the container runs in its scope" "no berth-pu-*.scope" [ -n "$PS" ]
    check "private_users: its stderr is in the journal under its scope" \
        "$(IN journalctl --no-pager -q -u "$PS" -o cat 2>&1 | tail -n 3 | tr '\n' '|')" \
        wait_for 5 eval 'IN journalctl --no-pager -q -u "$PS" -o cat 2>/dev/null | grep -q pu-stderr-line'
    IN systemctl restart berth.service
    check "private_users: the container survives a restart of berth.service" "$PS not active" scope_active "$PS"
    b=$(probe_cmd_port $PORT_PU "" 2>/dev/null)
    check "private_users: the adopted container keeps its block (the next is refused, not given it)" \
        "got '$b'; berth: $(IN journalctl --no-pager -q -u berth.service -o cat | grep -i 'private_users' | tail -n 1)" \
        eval '[ -z "$b" ] && IN journalctl --no-pager -q -u berth.service -o cat | grep -q "all 1 blocks"'
    printf '\n' >&8 2>/dev/null
    exec 8>&-
    check "private_users: the held container ends" "$PS still active" wait_for 10 scope_gone "$PS"
    c=
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        c=$(probe_cmd_port $PORT_PU "" 2>/dev/null)
        [ -n "$c" ] && break
        sleep 0.5
    done
    check "private_users: its block is free again once it ended" "got '$c'" \
        eval '[[ "$c" == "map=0 65536 65536 id=0"* ]]'
    sed -i 's/^private_users_range = .*/private_users_range = "65536-524287"/' "$ROOT/etc/berth/berth.toml"
    IN systemctl restart berth.service
    wait_for 15 berth_active || note "berth.service did not come back after block c"
else
    not_ok "private users" "berth.service is not up"
fi

# ---------------------------------------------------------------- z. reload refreshes the pool; berth top; sparklines
# Service zed (port 2330): warm sandboxes replaced on reload, warm resizes the pool,
# a running container keeps its definition and `berth status` says so; `berth top
# -n 1` without a terminal at a fixed width; the supervisor's memory/CPU sparklines.
PORT_ZED=2330
zed_json()  { IN berth list --json 2>/dev/null | jq -c '[.containers[] | select(.service == "zed")]'; }
zed_warm()  { zed_json | jq -r '.[] | select(.state == "warm") | .id' | sort; }
zed_warm_n_is() { [ "$(zed_warm | grep -c .)" = "$1" ]; }
# zed_warm_gen_is N GEN: N warm sandboxes, all of definition GEN
zed_warm_gen_is() { [ "$(zed_json | jq -r --arg g "$2" '[.[] | select(.state == "warm" and .generation == $g)] | length')" = "$1" ] && zed_warm_n_is "$1"; }
zed_reload() { # TOML-EXTRA: rewrite zed.toml, systemctl reload, wait for the journal to say so
    local n; probe_toml "$1" >"$ROOT/etc/berth/services/zed.toml"
    n=$(jcount -u berth.service BERTH_EVENT=reloaded)
    IN systemctl reload berth.service || note "systemctl reload berth.service failed"
    wait_for 10 jcount_gt "$n" -u berth.service BERTH_EVENT=reloaded || note "no BERTH_EVENT=reloaded after reload"
}
# every line of $1 at most $2 characters (UTF-8 characters, not bytes)
lines_fit() { local l; while IFS= read -r l; do [ "${#l}" -le "$2" ] || return 1; done <<<"$1"; }
if [ $SERVE_UP = 1 ]; then
    export LC_ALL=C.UTF-8
    probe_toml 'warm = 2
environment = { GREETING = "z-old" }' >"$ROOT/etc/berth/services/zed.toml"
    mkdir -p "$S/zed/systemd"
    lib_add_socket "$S/zed" zed $PORT_ZED
    install -m644 "$S/zed/systemd/berth-zed.socket" "$ROOT/etc/systemd/system/"
    IN systemctl daemon-reload
    IN systemctl stop berth.service
    IN systemctl start berth-zed.socket || note "berth-zed.socket did not start"
    lib_start_serve || note "berth.service did not come back"
    check "reload-z: 2 warm sandboxes before the reload" "zed: $(zed_json)" wait_for 20 zed_warm_n_is 2
    # A held connection: its container keeps running across the reload.
    exec 8<>"/dev/tcp/127.0.0.1/$PORT_ZED"; printf 'hold\n' >&8
    zed_running() { zed_json | jq -r '.[] | select(.state == "running") | .id' | head -n1; }
    wait_for 10 eval '[ -n "$(zed_running)" ]'
    R=$(zed_running)
    # The connection took one of the parked ones; the others are the old pool.
    old_warm=$(zed_warm | xargs)
    RGEN=$(zed_json | jq -r --arg id "$R" '.[] | select(.id == $id) | .generation')
    check "reload-z: berth list --json carries the running container's definition" "generation '$RGEN'" \
        eval '[[ "$RGEN" =~ ^[0-9a-f]{8}$ ]]'
    zed_reload 'warm = 3
environment = { GREETING = "z-new" }'
    g=$(probe_cmd_port $PORT_ZED report 2>/dev/null | jq -r '.env.GREETING // empty' 2>/dev/null)
    check "reload-z: right after the reload a connection gets the new definition (warm > 0)" "GREETING='$g'" [ "$g" = z-new ]
    zed_ngen() { NGEN=$(IN berth status zed 2>/dev/null | sed -n 's/^Definition: *\([0-9a-f]*\) (current).*/\1/p' | head -n1); [ -n "$NGEN" ]; }
    wait_for 20 zed_ngen
    check "reload-z: the definition changed" "old '$RGEN', new '$NGEN'" eval '[ -n "$NGEN" ] && [ "$NGEN" != "$RGEN" ]'
    check "reload-z: warm 2 -> 3: three warm sandboxes, all of the new definition" "zed: $(zed_json)" \
        wait_for 20 zed_warm_gen_is 3 "$NGEN"
    old_gone() { local id; for id in $old_warm; do scope_gone "berth-zed-$id.scope" || return 1; done; }
    check "reload-z: the old parked sandboxes' scopes are stopped" "old: $old_warm; active: $(scopes zed | xargs)" wait_for 10 old_gone
    out=$(IN berth status "$R" 2>&1)
    check "reload-z: the running container keeps its old definition and berth status says so" \
        "$(grep '^Definition' <<<"$out")" eval 'grep -Eq "^Definition: +$RGEN \(old: reloaded since, new containers use $NGEN\)" <<<"$out"'
    check "reload-z: the running container still runs" "zed: $(zed_json)" eval '[ "$(zed_running)" = "$R" ]'
    three=$(zed_warm | xargs)
    zed_reload 'warm = 1
environment = { GREETING = "z-new" }'
    check "reload-z: warm 3 -> 1: one warm sandbox left" "zed: $(zed_json)" wait_for 20 zed_warm_gen_is 1 "$NGEN"
    zed_scopes_are() { [ "$(scopes zed | grep -c .)" = "$1" ]; }
    check "reload-z: the discarded sandboxes' scopes are stopped (1 warm + 1 running left)" \
        "scopes: $(scopes zed | xargs)" wait_for 20 zed_scopes_are 2
    check "reload-z: the unchanged definition kept a sandbox it had" "now $(zed_warm | xargs), before: $three" \
        eval 'grep -qw -- "$(zed_warm)" <<<"$three"'

    # berth top: stdout a pipe here, one table, fixed widths.
    out=$(IN berth top -n 1 -d 0.5 --width 100 2>&1); rc=$?
    why="exit $rc: $(echo "$out" | head -n 6 | tr -s ' ' | tr '\n' '|')"
    check "top-z: berth top -n 1 works without a terminal" "$why" eval '[ $rc = 0 ] && [ "$(sed -n 2p <<<"$out" | awk "{print \$1}")" = CONTAINER ]'
    check "top-z: every line at most --width 100" "$why" lines_fit "$out" 100
    check "top-z: no terminal control sequences without a terminal" "$why" eval '! grep -q $'"'"'\e'"'"' <<<"$out"'
    read -r cpu mem tasks < <(awk -v u="berth-zed-$R.scope" '$1==u{print $4, $5, $6}' <<<"$out")
    check "top-z: the running container's row has CPU%, MEMORY and TASKS" "cpu='${cpu:-}' mem='${mem:-}' tasks='${tasks:-}'; $why" \
        eval '[[ "${cpu:-}" =~ ^([0-9]+\.[0-9]|-)$ && "${mem:-}" =~ ^[0-9.]+[BKMGT]$ ]] && is_number "${tasks:-}"'
    # CPU% is "-" only where systemd reports no CPUUsageNSec (as berth list shows it).
    lcpu=$(IN berth list 2>/dev/null | awk -v u="berth-zed-$R.scope" 'NR==1{for(i=1;i<=NF;i++)c[$i]=i; next} $1==u{print $c["CPU"]}')
    check "top-z: CPU% is a number exactly when berth list has the CPU time" "top '${cpu:-}', list '$lcpu'" \
        eval '[ -n "$lcpu" ] && { { [ "${cpu:-}" = - ] && [ "$lcpu" = - ]; } || { [ "${cpu:-}" != - ] && [ "$lcpu" != - ]; }; }'
    check "top-z: a row per zed container (1 running + 1 warm)" "$why" eval '[ "$(grep -c "^berth-zed-" <<<"$out")" = 2 ]'
    out=$(IN env COLUMNS=50 berth top -n 1 -d 0.2 2>&1); rc=$?
    check "top-z: COLUMNS=50: every line at most 50 characters" "exit $rc: $(echo "$out" | head -n 4 | tr '\n' '|')" \
        eval '[ $rc = 0 ] && lines_fit "$out" 50 && grep -q "^CONTAINER" <<<"$out"'
    out=$(IN berth top -n 2 -d 0.2 --order memory --width 120 2>&1); rc=$?
    check "top-z: -n 2 prints two tables" "exit $rc: $(echo "$out" | grep -c '^CONTAINER') headers" \
        eval '[ $rc = 0 ] && [ "$(grep -c "^CONTAINER" <<<"$out")" = 2 ]'
    mems=$(awk '/^CONTAINER/{n++} n==1 && /^berth-/{v=$5; u=substr(v, length(v)); m=1
        if (u=="K") m=1024; else if (u=="M") m=1048576; else if (u=="G") m=1073741824
        printf "%d\n", (v+0)*m}' <<<"$out" | xargs)
    check "top-z: --order memory sorts largest first" "memory column: $mems" \
        eval '[ -n "$mems" ] && [ "$(tr " " "\n" <<<"$mems" | sort -rn | xargs)" = "$mems" ]'

    # Sparklines: the supervisor samples every 2 s; the first sample is a point.
    spark() { IN berth status "$R" 2>/dev/null | grep -Eq "^Memory history: +[▁▂▃▄▅▆▇█]+ now [0-9.]+[BKMGT], peak" ; }
    check "spark-z: berth status shows a memory sparkline of the running container" \
        "$(IN berth status "$R" 2>&1 | grep -i history | tr '\n' '|')" wait_for 30 spark
    out=$(IN berth status "$R" 2>&1)
    check "spark-z: and a CPU sparkline" "$(grep -i history <<<"$out" | tr '\n' '|')" \
        eval 'grep -Eq "^CPU history: +([▁▂▃▄▅▆▇█]+ now [0-9.]+%, peak|not accounted by systemd)" <<<"$out"'
    exec 8>&-
    check "reload-z: the held container ends with its connection" "zed: $(zed_json)" \
        wait_for 15 eval '[ -z "$(zed_running)" ]'
    unset LC_ALL
else
    not_ok "reload-z, top-z" "berth.service is not up"
fi

# ---------------------------------------------------------------- f2. faults in berth.service: descriptors, a full /tmp, the zygote killed
# issue 10, 6e-6g on testbed 1 (tests/faults.rs shows them with `berth run --no-scope`):
# here under `berth serve`, each container in its scope. Service f2 is the probe,
# inetd style, with a 4M /tmp. Order: f (/tmp full), g (zygote killed), e (out of
# descriptors: berth.service restarted with a low LimitNOFILE, then without).
PORT_F2=2312
# f2_conn TOKEN: one "echo TOKEN" connection; prints ok, closed or hung
f2_conn() {
    timeout 20 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || { echo closed; exit; }
        printf "echo %s\n" "$2" >&3 2>/dev/null
        read -r -t 15 l <&3; rc=$?
        if [ "$l" = "$2" ]; then echo ok; elif [ $rc -gt 128 ]; then echo hung; else echo closed; fi' \
        _ "$PORT_F2" "$1" 2>/dev/null || echo hung
}
# f2_cmd CMD: the probe's answer to CMD (one line, 15 s at most)
f2_cmd() {
    timeout 20 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; printf "%s\n" "$2" >&3; read -r -t 15 l <&3; printf "%s\n" "$l"' \
        _ "$PORT_F2" "$1" 2>/dev/null
}
# f2_events EPOCH EVENT: berth's entries of EVENT for f2 since EPOCH, counted
f2_events() { IN journalctl --no-pager -q -o cat -S "@$1" BERTH_SERVICE=f2 "BERTH_EVENT=$2" 2>/dev/null | grep -c .; }
# f2_loader ID FILE STOPFILE: connections back to back until STOPFILE exists
f2_loader() {
    local i=0 r
    while [ ! -e "$3" ]; do i=$((i + 1)); r=$(f2_conn "$1-$i"); echo "$r $1-$i" >>"$2"; done
}
f2_n() { grep -c "^$1 " "$S/f2.res"; }
f2_summary() { echo "$(f2_n ok) answered, $(f2_n closed) closed, $(f2_n hung) hung"; }
f2_served_after() { [ "$(tail -n +$(($1 + 1)) "$S/f2.res" | grep -c '^ok ')" -gt "$2" ]; }   # LINE N
# f2_zygote PID: berth's child named berth-zygote
f2_zygote() { IN sh -c 'for p in $(cat /proc/$1/task/*/children 2>/dev/null); do [ "$(cat /proc/$p/comm 2>/dev/null)" = berth-zygote ] && echo $p; done' _ "$1" | head -n1; }
f2_new_zygote() { local z; z=$(f2_zygote "$1"); [ -n "$z" ] && [[ " $2 " != *" $z "* ]]; }   # PID KILLED
# f2_cpu PID: its CPU time (user + system) in ms, from the testbed's /proc
f2_cpu() { IN cat "/proc/$1/stat" 2>/dev/null | sed 's/.*) //' | awk -v hz="$(getconf CLK_TCK)" '{print int(($12 + $13) * 1000 / hz)}'; }
F2_UP=0
if [ $SERVE_UP = 1 ]; then
    cat >"$ROOT/etc/berth/services/f2.toml" <<'TOML'
mode = "inetd"
exec = ["/usr/lib/berth/berth-probe"]
max_lifetime = "2min"
stop_timeout = "2s"
[sandbox]
tmp_size = "4M"
[resources]
memory_max = "64M"
tasks_max = 16
TOML
    [ $NET_FALLBACK = 1 ] && lib_net_host "$ROOT/etc/berth/services/f2.toml"
    mkdir -p "$S/f2/systemd"
    lib_add_socket "$S/f2" f2 $PORT_F2
    install -m644 "$S/f2/systemd/berth-f2.socket" "$ROOT/etc/systemd/system/"
    IN systemctl daemon-reload
    IN systemctl stop berth.service
    IN systemctl start berth-f2.socket || note "berth-f2.socket did not start"
    lib_start_serve || note "berth.service did not come back"
    if [ "$(f2_conn f2-0)" = ok ]; then F2_UP=1; else not_ok "f2: a connection is answered" "no 'f2-0' on :$PORT_F2"; fi
fi
if [ $F2_UP = 1 ]; then
    PID_F2=$(prop berth.service MainPID)
    # -- 6f: a container's /tmp full while another is served
    t=$(date +%s)
    a=
    exec 7<>"/dev/tcp/127.0.0.1/$PORT_F2"
    echo "fill-tmp keep" >&7; read -r -t 30 a <&7
    w=$(jq -r '.written // empty' <<<"$a" 2>/dev/null)
    check "/tmp full: the container filling its /tmp gets ENOSPC after 3-4M (its tmp_size)" "answer '$a'" \
        eval '[ "$(jq -r .error <<<"$a" 2>/dev/null)" = ENOSPC ] && is_number "$w" && [ "$w" -ge $((3 << 20)) ] && [ "$w" -le $((4 << 20)) ]'
    check "/tmp full: the full /tmp is the container's own (no /tmp/fill in the testbed)" "$(IN ls -l /tmp/fill 2>&1)" \
        eval '! IN test -e /tmp/fill'
    r=$(f2_cmd fill-tmp)
    w=$(jq -r '.written // empty' <<<"$r" 2>/dev/null)
    check "/tmp full: meanwhile another container has a /tmp of its own (3-4M written, then ENOSPC)" "answer '$r'" \
        eval '[ "$(jq -r .error <<<"$r" 2>/dev/null)" = ENOSPC ] && is_number "$w" && [ "$w" -ge $((3 << 20)) ]'
    r=$(f2_cmd fill-tmp-inodes)
    w=$(jq -r '.files // empty' <<<"$r" 2>/dev/null)
    check "/tmp full: and its own inodes (900-1024 files in 4M, then ENOSPC)" "answer '$r'" \
        eval '[ "$(jq -r .error <<<"$r" 2>/dev/null)" = ENOSPC ] && is_number "$w" && [ "$w" -ge 900 ] && [ "$w" -le 1024 ]'
    check "/tmp full: meanwhile berth serves another connection" "no answer" eval '[ "$(f2_conn tmp-still)" = ok ]'
    check "/tmp full: the full container is still in its scope" "scopes: $(scopes f2 | xargs)" has_scope f2
    exec 7>&-
    check "/tmp full: its scope goes when the client closes" "scopes: $(scopes f2 | xargs)" wait_for 15 no_scope f2
    r=$(f2_cmd report)
    check "/tmp full: the next container's /tmp is empty" "report: $(echo "$r" | cut -c1-200)" \
        eval '[ "$(jq -c .tmp_entries <<<"$r" 2>/dev/null)" = "[]" ]'
    v=$(jsince "$t" BERTH_SERVICE=f2 BERTH_EVENT=failed; jsince "$t" BERTH_SERVICE=f2 BERTH_EVENT=throttled)
    check "/tmp full: berth logs no failure (no BERTH_EVENT=failed or throttled for f2)" "$(echo "$v" | head -n 3 | tr '\n' ' ')" [ -z "$v" ]

    # -- 6g: the zygote killed (SIGKILL) in a burst of connections
    t=$(date +%s)
    rm -f "$S/f2.stop"; : >"$S/f2.res"; F2_LOADERS=()
    for k in 1 2 3 4; do f2_loader "g$k" "$S/f2.res" "$S/f2.stop" & F2_LOADERS+=($!); BG_PIDS+=($!); done
    KILLED=
    for round in 1 2 3; do
        L=$(wc -l <"$S/f2.res")
        wait_for 20 f2_served_after "$L" 3 || note "zygote round $round: $(f2_summary) before the kill"
        if ! wait_for 10 eval '[ -n "$(f2_zygote "$PID_F2")" ]'; then note "no berth-zygote under MainPID $PID_F2"; break; fi
        z=$(f2_zygote "$PID_F2")
        IN kill -KILL "$z" && KILLED+=" $z"
        wait_for 20 f2_new_zygote "$PID_F2" "$KILLED" || note "zygote round $round: no new zygote after killing $z"
    done
    L=$(wc -l <"$S/f2.res")
    check "zygote killed: 3 times, each replaced (killed:$KILLED)" "zygote now '$(f2_zygote "$PID_F2")'" \
        eval '[ "$(echo $KILLED | wc -w)" = 3 ] && f2_new_zygote "$PID_F2" "$KILLED"'
    check "zygote killed: the burst is served after the last kill (5 answers)" "$(f2_summary)" wait_for 20 f2_served_after "$L" 5
    touch "$S/f2.stop"; for p in "${F2_LOADERS[@]}"; do wait "$p" 2>/dev/null; done
    note "zygote killed: $(f2_summary)"
    check "zygote killed: every connection of the burst answered or closed, none left hanging" "$(f2_summary)" [ "$(f2_n hung)" = 0 ]
    check "zygote killed: berth noticed (\"sandbox zygote unusable\")" "not in berth.service's journal" \
        wait_for 10 eval 'jsince $t -u berth.service | grep -q "sandbox zygote unusable"'
    check "zygote killed: later connections are served" "no answer" eval '[ "$(f2_conn g-later)" = ok ]'
    check "zygote killed: the same berth.service process (MainPID $PID_F2), active" "MainPID $(prop berth.service MainPID), $(IN systemctl is-active berth.service)" \
        eval '[ "$(prop berth.service MainPID)" = "$PID_F2" ] && berth_active'
    check "zygote killed: no berth-stage or berth-init left in berth.service's cgroup" "$(half_built | xargs)" wait_for 10 no_half_built
    check "zygote killed: no f2 scope left once the clients are done" "scopes: $(scopes f2 | xargs)" wait_for 20 no_scope f2
    v=$(IN systemctl list-units --plain --no-legend --no-pager --state=failed 'berth-*' 2>/dev/null | awk '{print $1}' | xargs)
    check "zygote killed: no failed berth unit" "failed: $v" [ -z "$v" ]

    # -- 6e: berth.service out of descriptors (a low LimitNOFILE in a drop-in)
    # Room for some containers above berth's descriptors at rest, but no less than
    # 128: the stages put their control channel on fd 100 (sandbox::stage::CONTROL_FD)
    # with F_DUPFD, which fails with EINVAL at a lower limit, so every launch would fail
    # instead of berth running out.
    base=$(IN ls "/proc/$PID_F2/fd" 2>/dev/null | wc -l)
    LIM=$((base + 16)); [ "$LIM" -ge 128 ] || LIM=128
    mkdir -p "$ROOT/etc/systemd/system/berth.service.d"
    printf '[Service]\nLimitNOFILE=%s\n' "$LIM" >"$ROOT/etc/systemd/system/berth.service.d/f2-nofile.conf"
    IN systemctl daemon-reload
    t=$(date +%s)
    IN systemctl restart berth.service
    wait_for 15 berth_active || note "berth.service not active after the restart with LimitNOFILE=$LIM"
    PID_E=$(prop berth.service MainPID)
    v=$(IN sh -c 'grep "^Max open files" /proc/$1/limits' _ "$PID_E" | awk '{print $4}')
    check "nofile: berth.service restarted with LimitNOFILE=$LIM ($base descriptors at rest)" "Max open files $v" [ "$v" = "$LIM" ]
    # Hold connections (the probe's "hold") until berth runs out.
    HELD=()
    while [ "$(f2_events "$t" exhausted)" = 0 ] && [ ${#HELD[@]} -lt 100 ]; do
        n=$(f2_events "$t" started)
        exec {fd}<>"/dev/tcp/127.0.0.1/$PORT_F2" || break
        echo hold >&$fd; HELD+=("$fd")
        wait_for 15 eval '[ "$(f2_events "$t" started)" -gt "$n" ] || [ "$(f2_events "$t" exhausted)" != 0 ] || [ "$(f2_events "$t" failed)" != 0 ]' ||
            note "nofile: held connection ${#HELD[@]} neither started nor exhausted berth"
        if [ "$(f2_events "$t" failed)" != 0 ]; then jsince "$t" BERTH_SERVICE=f2 BERTH_EVENT=failed | head -n 3 | diag; break; fi
    done
    note "nofile: ${#HELD[@]} connections held, $(f2_events "$t" started) containers started"
    v=$(f2_events "$t" failed)
    check "nofile: no launch failed on the way (BERTH_EVENT=failed)" "$v failed" [ "$v" = 0 ]
    check "nofile: held connections exhaust berth (BERTH_EVENT=exhausted, EMFILE and RLIMIT_NOFILE named)" \
        "no entry after ${#HELD[@]} held connections" \
        eval 'jsince $t BERTH_SERVICE=f2 BERTH_EVENT=exhausted | grep -q "EMFILE.*RLIMIT_NOFILE"'
    jsince "$t" BERTH_SERVICE=f2 BERTH_EVENT=exhausted | head -n1 | diag
    # A connection meanwhile waits in the backlog.
    exec {wfd}<>"/dev/tcp/127.0.0.1/$PORT_F2"
    echo "echo waited" >&$wfd
    # While exhausted, berth backs off: over 4 s it uses far less than the whole window
    # of CPU (a spinning accept loop would use it all). A resource bound, not a speed one.
    c0=$(f2_cpu "$PID_E"); m0=$(now_ms)
    sleep 4   # the measurement window, not a wait for readiness
    c1=$(f2_cpu "$PID_E"); m1=$(now_ms)
    note "nofile: berth used $((c1 - c0)) ms of CPU in $((m1 - m0)) ms while out of descriptors"
    check "nofile: berth does not spin while exhausted (< 1000 ms of CPU in 4 s)" "$((c1 - c0)) ms in $((m1 - m0)) ms" \
        eval 'is_number "$c0" && is_number "$c1" && [ $((c1 - c0)) -lt 1000 ]'
    v=$(f2_events "$t" exhausted)
    check "nofile: the exhaustion is logged once (per 10 s), not per attempt" "$v entries" [ "$v" = 1 ]
    v=$(f2_events "$t" throttled)
    check "nofile: not counted as the application's failure (no throttling)" "$v throttled entries" [ "$v" = 0 ]
    for fd in "${HELD[@]}"; do exec {fd}>&-; done
    w=; read -r -t 30 w <&$wfd; exec {wfd}>&-
    check "nofile: once the held connections close, the connection that waited is served" "got '$w'" [ "$w" = waited ]
    check "nofile: and a new connection is served" "no answer" eval '[ "$(f2_conn e-after)" = ok ]'
    check "nofile: the same berth.service process (MainPID $PID_E), active" "MainPID $(prop berth.service MainPID), $(IN systemctl is-active berth.service)" \
        eval '[ "$(prop berth.service MainPID)" = "$PID_E" ] && berth_active'
    check "nofile: no f2 scope left once the clients are done" "scopes: $(scopes f2 | xargs)" wait_for 30 no_scope f2
    # Leave berth.service as it was for what follows.
    rm -f "$ROOT/etc/systemd/system/berth.service.d/f2-nofile.conf"
    IN systemctl daemon-reload
    IN systemctl restart berth.service
    v=$(wait_for 15 berth_active && IN sh -c 'grep "^Max open files" /proc/$1/limits' _ "$(prop berth.service MainPID)" | awk '{print $4}')
    check "nofile: berth.service back without the drop-in" "active: $(IN systemctl is-active berth.service), Max open files $v" \
        eval '[ -n "$v" ] && [ "$v" != "$LIM" ]'
fi

# ---------------------------------------------------------------- the end
v=$(IN systemctl list-units --plain --no-legend --no-pager --state=failed 2>/dev/null | awk '{print $1}' | xargs)
check "no failed units in the testbed" "failed: $v" [ -z "$v" ]

exit   # on_exit: stops the testbed, prints the summary, exits 1 if anything failed
