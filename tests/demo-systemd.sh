#!/usr/bin/env bash
# Demo: berth on a real systemd. Boots testbed 1 (a debootstrapped Debian in
# systemd-nspawn with its own user namespace, tests/testbed/), installs berth,
# berth.service and the shipped examples into it exactly as tests/system/run.sh
# does (tests/system/lib.sh), and walks through them:
#
#   web  lighttpd, listen mode, socket 127.0.0.1:8080, woken by the first request
#        and stopped after idle_timeout (shortened to 3s for the demo)
#   ssh  dropbear, inetd mode, socket 127.0.0.1:2222, one container per connection
#
#   sudo bash tests/demo-systemd.sh
#
# Root on a fresh Debian 12 machine; builds berth's Debian package and, the first
# time, the testbed tree (~45 s, cached in /var/tmp/berth-testbed). Then well under
# 2 minutes. Exits non-zero if any step fails; the testbed is always stopped and
# removed at the end. Uses ports 8080 and 2222 on the host's loopback, so it waits
# for a running tests/system/run.sh (same lock).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
T0=$(date +%s)

die()  { echo; echo "demo: FAILED: $*" >&2; exit 1; }
note() { echo "# $*" >&2; }
# shellcheck source=tests/system/lib.sh
. "$REPO/tests/system/lib.sh"

[ "$(id -u)" = 0 ] || { echo "demo: run as root (it boots a systemd in a container)" >&2; exit 2; }
S=$(mktemp -d /tmp/berth-demo.XXXXXX)
BG_PIDS=()
cleanup() {
    local p
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    if [ -d "$S/tb" ]; then
        echo; echo "== stopping the testbed"
        lib_stop 2>"$S/stop.log" || sed 's/^/  /' "$S/stop.log"
    fi
    [ -e "$S/tb/rootfs" ] && note "testbed root left in $S/tb" || rm -rf "$S"
}
trap cleanup EXIT
trap 'die "interrupted"' INT TERM HUP

step() { echo; echo "== $*"; }
# inside CMD...: show and run CMD in the testbed (as its root), output indented;
# a failing CMD fails the demo.
inside() {
    local rc
    echo "testbed# $*"
    IN "$@" 2>&1 | sed 's/^/  /'
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || die "'$*' exited $rc"
}
# host CMD...: show CMD as run on the host (the caller runs it).
host() { echo "host\$ $*"; }

# ---------------------------------------------------------------- set-up
step "building berth and its Debian package (packaging/build-deb.sh)"
lib_build
lib_host_tools ssh:openssh-client ssh-keygen:openssh-client curl:curl
lib_lock
lib_ports_free "$PORT_WEB" "$PORT_SSH"

step "booting a real systemd: testbed 1 (systemd-nspawn, own user namespace)"
lib_boot
sed 's/^/  /' "$S/boot.log"
lib_net_admin || die "the testbed lacks CAP_NET_ADMIN: berth cannot bring up lo in the containers' network namespaces"
inside systemctl --version

step "installing berth, berth.service, and the ssh (2222) and web (8080) examples"
lib_stage_config "$REPO/config" "$S/cfg" 3s
lib_install "$REPO/config" "$S/cfg"
echo "  /usr/bin/berth, berth.service, /etc/berth/services/{$(cd "$S/cfg/services" && ls | sed 's/\.toml$//' | paste -sd,)}.toml,"
echo "  berth-ssh.socket, berth-web.socket; web's idle_timeout shortened to 3s"
out=$(lib_enable_sockets berth-ssh.socket berth-web.socket) || die "enabling the sockets: $out"
lib_start_serve || die "berth.service did not become active: $(IN journalctl -u berth.service -n 5 -o cat --no-pager)"
inside systemctl show -p ActiveState -p StatusText berth.service

# ---------------------------------------------------------------- the demo
step "berth check: the configuration is valid"
inside berth check
echo "  (exit 0: all files valid)"

step "curl the web page through berth (the first request wakes lighttpd in a container)"
host curl -s "http://127.0.0.1:$PORT_WEB/"
page=$(curl -sS -m 10 "http://127.0.0.1:$PORT_WEB/" 2>&1)
sed 's/^/  /' <<<"$page"
[[ "$page" == *"Hello from lighttpd"* ]] || die "no page from lighttpd"
wait_for 5 has_scope web || die "no berth-web-*.scope after the request"
W1=$(scopes web | head -n1)
echo "  -> served from $W1"

step "ssh with a key into the dropbear container: what it sees"
host ssh -p "$PORT_SSH" -i KEY root@127.0.0.1 sh "<<<'cat /proc/net/dev; ls -A /tmp; touch /usr/x; ps -ef; ls -d /proc/[0-9]*; id; cat /proc/self/uid_map'"
SEE='for c in "cat /proc/net/dev" "ls -A /tmp" "touch /usr/x" "ps -ef" "ls -d /proc/[0-9]*" "id" "cat /proc/self/uid_map"; do
    echo "container# $c"; sh -c "$c" 2>&1
done'
out=$(timeout 30 "${SSH[@]}" -p "$PORT_SSH" root@127.0.0.1 sh <<<"$SEE" 2>&1) || die "ssh failed: $out"
awk '/^container# /{print "  " $0; next} {print "    " $0}' <<<"$out"
section() { awk -v c="container# $1" '$0 == c {f=1; next} /^container# /{f=0} f' <<<"$out"; }
ifaces=$(section "cat /proc/net/dev" | awk -F: 'NR > 2 {gsub(" ", "", $1); print $1}' | xargs)
[ "$ifaces" = lo ] || die "the container's network namespace has '$ifaces', not just lo"
tmp=$(section "ls -A /tmp")
[ -z "$tmp" ] || die "/tmp in the container is not empty: $tmp"
section "touch /usr/x" | grep -q "Read-only file system" || die "touch /usr/x did not fail with EROFS"
npids=$(section "ls -d /proc/[0-9]*" | wc -w)
[ "$npids" -gt 0 ] && [ "$npids" -lt 10 ] || die "the container sees $npids processes"
echo "  -> only lo, an empty private /tmp, a read-only /usr, and only $npids pids in its /proc"
map=$(section "cat /proc/self/uid_map" | xargs)
[[ "$map" =~ ^0\ ([0-9]+)\ 65536$ ]] && [ "${BASH_REMATCH[1]}" -ge 65536 ] ||
    die "root in the container is not in a user namespace of its own: uid_map '$map'"
echo "  -> root inside (private_users) is uid ${BASH_REMATCH[1]} outside the container, not root: a block of ids of its own"

step "while an ssh session is open: its scope, and berth list"
sess_open "$PORT_SSH"
[ "$(sess_run 'echo ready')" = ready ] || die "the ssh session does not answer"
wait_for 5 has_scope ssh || die "no berth-ssh-*.scope while the session is open"
SS=$(scopes ssh | head -n1)
inside systemctl status --no-pager --lines=5 "$SS"
inside berth list
sess_close
wait_for 10 scope_gone "$SS" || die "$SS still active after logout"
echo "  -> after logout: $SS is gone"

step "the journal: the session's scope, and berth's events for web"
wait_for 5 journal_grep 'Pubkey auth succeeded' -u "$SS" || die "no dropbear login line under $SS"
inside journalctl --no-pager -u "$SS"
inside journalctl --no-pager BERTH_SERVICE=web

step "idle teardown: web's idle_timeout is 3s; watching $W1"
t=$(now_ms)
if scope_active "$W1"; then
    wait_for 20 scope_gone "$W1" || die "$W1 still active 20 s later"
    echo "  $W1 gone after $(( $(now_ms) - t )) ms of watching"
else
    echo "  $W1 already gone"
fi
inside berth list
inside journalctl --no-pager -o cat BERTH_SERVICE=web BERTH_CONTAINER="$(container_id "$W1" web)"

step "curl again: the socket (still systemd's) wakes a new container"
host curl -s "http://127.0.0.1:$PORT_WEB/"
page=$(curl -sS -m 10 "http://127.0.0.1:$PORT_WEB/" 2>&1)
sed 's/^/  /' <<<"$page"
[[ "$page" == *"Hello from lighttpd"* ]] || die "no page from lighttpd after the idle teardown"
W2=$(scopes web | head -n1)
[ -n "$W2" ] && [ "$W2" != "$W1" ] || die "no new web container (scope '$W2', before $W1)"
echo "  -> served from a new container: $W2"
sleep 1   # one idle check of the supervisor: the timer shows
inside berth status web

step "demo done in $(( $(date +%s) - T0 )) s"
