#!/bin/bash
# The README's administrator guide, run as it stands on a fresh systemd
# (testbed 1): installs the Debian package, adds the services the guide
# adds, checks what the guide promises, then removes the package and checks
# that nothing of berth keeps running. Prints `N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "guide.sh: run as root" >&2; exit 2; }

PASS=0; FAIL=0
ok() { echo "ok - $1"; PASS=$((PASS + 1)); }
not_ok() { echo "not ok - $1: $2"; FAIL=$((FAIL + 1)); }
check() { local name=$1 why=$2; shift 2; if "$@"; then ok "$name"; else not_ok "$name" "$why"; fi; }

# Same fixed ports as tests/system/run.sh: take turns.
exec 4>/run/lock/berth-system-test.lock
flock -w 900 4 || { echo "guide.sh: lock busy" >&2; exit 1; }

DEB=$(bash packaging/build-deb.sh target/debian | tail -n1)
[ -f "$DEB" ] || { echo "guide.sh: no package built" >&2; exit 1; }
TREE=$(tests/testbed/tree.sh | tail -n1)
S=$(mktemp -d /tmp/berth-guide.XXXXXX)
finish() {
    tests/testbed/stop.sh "$S" >/dev/null 2>&1
    rm -rf "$S"
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}
trap 'finish; exit $?' EXIT
tests/testbed/boot.sh "$TREE" "$S" --userns >/dev/null || { not_ok "testbed boots" "boot.sh failed"; exit 1; }
IN() { tests/testbed/in.sh "$S" "$@"; }
ROOT=$(cat "$S/root")
# /tmp inside is systemd's own tmpfs; /var/tmp is on the root.
cp "$DEB" "$ROOT/var/tmp/berth.deb"
# A minbase tree has no /etc/hosts; the example services bind it.
[ -e "$ROOT/etc/hosts" ] || printf '127.0.0.1 localhost\n::1 localhost\n' >"$ROOT/etc/hosts"

# The block under <!-- admin-guide --> in README.md, verbatim.
GUIDE=$(awk '/<!-- admin-guide -->/{f=1; getline; next} f && /^```/{exit} f' README.md)
[ -n "$GUIDE" ] || { not_ok "README has the admin guide block" "not found"; exit 1; }
OUT=$(IN bash -euo pipefail -c "$GUIDE" 2>&1)
rc=$?
echo "$OUT" | sed 's/^/  | /'
check "every command of the guide succeeds" "exit $rc" [ "$rc" -eq 0 ]
has() { grep -q -- "$1" <<<"$OUT"; }
check "the package installs" "no 'Setting up berth'" has "Setting up berth"
check "berth check passes" "no 'files valid'" has "files valid"
check "curl gets lighttpd's page through berth" "no page" has "Hello from lighttpd in a berth container"
check "the own service answers from its container" "no hello" has "hello from a container"
check "berth list shows the web container with accounting" "no row" \
    eval 'grep -Eq "^berth-web-[0-9a-f]{12}\.scope +web +[0-9]+ +running .*[0-9.]+[BKMG] " <<<"$OUT"'
check "berth status shows memory, tasks and the idle timer" "fields missing" \
    eval 'has "Memory use:" && has "Tasks:" && has "Idle timer:"'
check "journalctl -u finds the web scope's lighttpd line" "no line" has "server started (lighttpd"
check "structured started event for hello" "no event" has "hello: container"
check "reload accepted" "journal lacks it" \
    eval 'IN journalctl --no-pager -q BERTH_EVENT=reloaded | grep -q reloaded'
check "berth stop stopped a container" "no 'stopped 1 container'" has "stopped 1 container"
n=$(grep -c "Hello from lighttpd in a berth container" <<<"$OUT")
check "the socket woke a new container after the stop" "page seen $n times" [ "$n" -ge 2 ]

# Removing the package leaves no berth process and no container.
IN bash -c 'exec 3<>/dev/tcp/127.0.0.1/7007; cat <&3' >/dev/null 2>&1
RM=$(IN dpkg -r berth 2>&1); rc=$?
check "dpkg -r berth succeeds" "$RM" [ "$rc" -eq 0 ]
left=$(IN sh -c 'for p in /proc/[0-9]*; do c=$(tr "\0" " " <$p/cmdline 2>/dev/null); [ "${p#/proc/}" = "$$" ] && continue; case "$c" in *berth*) echo "${p#/proc/}: $c";; esac; done')
check "no berth process after removal" "left: $left" [ -z "$left" ]
units=$(IN systemctl list-units --plain --no-legend 'berth-*' 2>/dev/null | awk '$3 == "active" {print $1}' | xargs)
check "no berth unit active after removal" "active: $units" [ -z "$units" ]
exit
