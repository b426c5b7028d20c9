#!/bin/bash
# Runs inside the testbed 2 VM (cgroup v2, real root), started by
# berth-vm-test.service with the payload (berth.deb, this script) unpacked in
# /run/berth-vm. Output goes to the serial console; result lines start with
# "berth-vm: " so the host can pick them out of the boot messages:
#   berth-vm: ok - ...  /  berth-vm: not ok - ...  /  berth-vm: # comment
#   berth-vm: N passed, M failed          (last)
# The unit powers the VM off when this script ends (SuccessAction/FailureAction).
set -uo pipefail
P=/run/berth-vm
PORT=8080
SVC=web
MEMORY_MAX=$((96 * 1024 * 1024))
TASKS_MAX=40
CPU_WEIGHT=50
IDLE=5
LOAD=200
URL=http://127.0.0.1:$PORT/

PASS=0 FAIL=0 T0=$(date +%s.%N)
since() { awk -v a="$(date +%s.%N)" -v b="$1" 'BEGIN{printf "%.1f", a-b}'; }
el() { printf '%.1f' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{print a-b}')"; }
say() { echo "berth-vm: $*"; }
note() { say "# [$(el)s] $*"; }
ok() { PASS=$((PASS + 1)); say "ok - $*"; }
nok() { FAIL=$((FAIL + 1)); say "not ok - $*"; }
# check DESCRIPTION CMD...: ok if CMD succeeds.
check() { local d=$1; shift; if "$@"; then ok "$d"; else nok "$d"; fi; }
# eq DESCRIPTION GOT WANT
eq() { if [ "$2" = "$3" ]; then ok "$1 ($2)"; else nok "$1: got '$2', want '$3'"; fi; }

finish() {
    if [ "$FAIL" -gt 0 ]; then
        say "# ---- journalctl -u berth.service"
        journalctl -b -u berth.service --no-pager -o short-monotonic | tail -n 80 | sed 's/^/berth-vm: #   /'
        say "# ---- container scopes and supervisor events"
        journalctl -b --no-pager -o short-monotonic _SYSTEMD_UNIT=berth.service + SYSLOG_IDENTIFIER=$SVC + \
            UNIT="berth-$SVC.slice" | tail -n 40 | sed 's/^/berth-vm: #   /'
        say "# ---- systemctl --failed"
        systemctl --failed --no-pager --plain | sed 's/^/berth-vm: #   /'
    fi
    note "done"
    say "$PASS passed, $FAIL failed"
    sleep 1   # let the UART drain before the power-off
    [ "$FAIL" = 0 ]
    exit
}

# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
    local end=$(( $(date +%s) + $1 )); shift
    until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.2; done
}

scopes() { systemctl list-units --type=scope --all --plain --no-legend "berth-$SVC-*.scope" 2>/dev/null |
           awk '$3=="active"{print $1}'; }
one_scope() { [ "$(scopes | wc -l)" = 1 ]; }
gone() { local st; st=$(systemctl show -P ActiveState "$1" 2>/dev/null); [ "$st" != active ] && [ "$st" != deactivating ] && [ ! -d "$2" ]; }
berth_pids() {
    local p e
    for p in /proc/[0-9]*; do
        e=$(readlink "$p/exe" 2>/dev/null) || continue
        case "$e" in /usr/bin/berth|"/usr/bin/berth (deleted)"|/usr/lib/berth/*) echo "${p#/proc/}" ;; esac
    done
}

note "kernel $(uname -r), $(nproc) cpus, systemd $(systemctl --version | awk 'NR==1{print $2}')"
eq "cgroup v2 is mounted at /sys/fs/cgroup" "$(stat -fc %T /sys/fs/cgroup)" cgroup2fs
eq "the cpu, memory and pids controllers are available" \
   "$(tr ' ' '\n' </sys/fs/cgroup/cgroup.controllers | grep -xE 'cpu|memory|pids' | sort | tr '\n' ' ')" "cpu memory pids "

# --- the package --------------------------------------------------------------
if out=$(dpkg -i "$P/berth.deb" 2>&1); then ok "dpkg -i berth.deb"; else nok "dpkg -i berth.deb"; echo "$out" | sed 's/^/berth-vm: #   /'; finish; fi
check "berth.service is known to systemd" systemctl cat berth.service >/dev/null
eq "berth.service is not enabled by the package" "$(systemctl is-enabled berth.service 2>&1)" disabled
eq "no socket unit listens for berth after installation" \
   "$(systemctl list-units --type=socket --plain --no-legend 'berth*' | wc -l)" 0
check "the D-Bus policy is loaded without errors" \
   sh -c '! journalctl -b -u dbus.service --no-pager | grep -i "org.berth.Supervisor1.conf"'

# --- the web example, configured for this test -------------------------------
EX=/usr/share/doc/berth/examples
{
    awk '/^\[resources\]/{exit} {print}' "$EX/services/$SVC.toml" |
        sed -E "s/^idle_timeout *=.*/idle_timeout = \"${IDLE}s\"/"
    printf '[resources]\nmemory_max = "96M"\ntasks_max = %s\ncpu_weight = %s\n' "$TASKS_MAX" "$CPU_WEIGHT"
} >/etc/berth/services/$SVC.toml
check "web.toml has idle_timeout = \"${IDLE}s\"" grep -qx "idle_timeout = \"${IDLE}s\"" /etc/berth/services/$SVC.toml
if out=$(berth check /etc/berth 2>&1); then ok "berth check /etc/berth"; else nok "berth check /etc/berth"; echo "$out" | sed 's/^/berth-vm: #   /'; fi
sed -E "s/^ListenStream=.*/ListenStream=127.0.0.1:$PORT/" "$EX/systemd/berth-$SVC.socket" >/etc/systemd/system/berth-$SVC.socket
systemctl daemon-reload
check "systemctl enable --now berth-$SVC.socket" systemctl enable --quiet --now berth-$SVC.socket
eq "berth.service waits for the first connection" "$(systemctl is-active berth.service)" inactive

# --- wake-up ------------------------------------------------------------------
note "first request"
t=$(date +%s.%N)
body=$(curl -fsS --max-time 120 "$URL" 2>&1); rc=$?
if [ $rc = 0 ] && [ "$body" = "$(cat /usr/share/berth/web/www/index.html)" ]; then
    ok "the first request wakes the container and gets index.html ($(since "$t")s under TCG)"
else
    nok "the first request: curl exit $rc: $(echo "$body" | head -n 3)"
fi
# An open (idle) connection keeps the container from its idle teardown while
# the checks below look at it; lighttpd closes it after 60 s without a request.
exec 3<>"/dev/tcp/127.0.0.1/$PORT" && note "keeper connection open"
eq "berth.service is active" "$(systemctl is-active berth.service)" active
if ! wait_for 30 one_scope; then
    nok "exactly one berth-$SVC-*.scope is active: $(scopes | tr '\n' ' ')"
    finish
fi
SCOPE=$(scopes)
ok "the container's scope $SCOPE"
eq "$SCOPE is in berth-$SVC.slice" "$(systemctl show -P Slice "$SCOPE")" "berth-$SVC.slice"
CG=$(systemctl show -P ControlGroup "$SCOPE")
D=/sys/fs/cgroup$CG
note "ControlGroup $CG"
check "the scope's cgroup $D exists" test -d "$D"

# --- the D-Bus interface under the package's policy -----------------------------
NOBODY=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
BUS=(busctl --system call org.berth.Supervisor1 /org/berth/Supervisor1 org.berth.Supervisor1)
out=$("${NOBODY[@]}" "${BUS[@]}" ListContainers 2>&1)
if grep -q "$SCOPE" <<<"$out"; then ok "nobody may call ListContainers, which lists $SCOPE"; else nok "ListContainers as nobody: $out"; fi
out=$("${NOBODY[@]}" "${BUS[@]}" StopService s "$SVC" 2>&1)
if grep -qi "access denied" <<<"$out"; then ok "nobody may not call StopService"; else nok "StopService as nobody: $out"; fi
eq "the container survived the refused StopService" "$(scopes)" "$SCOPE"

# --- limits in the cgroup v2 files -------------------------------------------
eq "memory.max of the scope" "$(cat "$D/memory.max" 2>&1)" "$MEMORY_MAX"
eq "pids.max of the scope" "$(cat "$D/pids.max" 2>&1)" "$TASKS_MAX"
eq "cpu.weight of the scope" "$(cat "$D/cpu.weight" 2>&1)" "$CPU_WEIGHT"
eq "MemoryMax of $SCOPE" "$(systemctl show -P MemoryMax "$SCOPE")" "$MEMORY_MAX"
eq "TasksMax of $SCOPE" "$(systemctl show -P TasksMax "$SCOPE")" "$TASKS_MAX"
eq "CPUWeight of $SCOPE" "$(systemctl show -P CPUWeight "$SCOPE")" "$CPU_WEIGHT"
comms=$(find "$D" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r p; do cat "/proc/$p/comm" 2>/dev/null; done | sort | tr '\n' ' ')
note "processes in the scope: $comms"
check "lighttpd runs in the scope's cgroup" grep -qw lighttpd <<<"$comms"
sup=$(for p in $(cat /sys/fs/cgroup/system.slice/berth.service/cgroup.procs 2>/dev/null); do cat "/proc/$p/comm" 2>/dev/null; done | sort | tr '\n' ' ')
note "processes in berth.service: $sup"
check "lighttpd does not run in berth.service's cgroup" test -z "$(grep -w lighttpd <<<"$sup")"

# --- load and accounting -------------------------------------------------------
cpu0=$(systemctl show -P CPUUsageNSec "$SCOPE")
note "$LOAD requests: $((LOAD / 10)) connections of 10 keep-alive requests (cpu before: $cpu0)"
URLS=(); for _ in $(seq 10); do URLS+=("$URL"); done
good=0
for _ in $(seq $((LOAD / 10))); do
    n=$(curl -fsS --max-time 60 "${URLS[@]}" 2>/dev/null | grep -c 'Hello from lighttpd')
    good=$((good + n))
done
eq "all $LOAD requests answered" "$good" "$LOAD"
eq "the same container served them" "$(scopes)" "$SCOPE"
cpu=$(systemctl show -P CPUUsageNSec "$SCOPE")
if [[ "$cpu" =~ ^[0-9]+$ ]] && [ "$cpu" -gt 0 ]; then ok "CPUUsageNSec after load is $cpu"; else nok "CPUUsageNSec after load: '$cpu'"; fi
if [[ "$cpu" =~ ^[0-9]+$ ]] && [[ "$cpu0" =~ ^[0-9]+$ ]] && [ "$cpu" -gt "$cpu0" ]; then
    ok "CPUUsageNSec grew by $(( (cpu - cpu0) / 1000000 )) ms during the load"
else nok "CPUUsageNSec did not grow during the load: '$cpu0' -> '$cpu'"; fi
usage=$(awk '$1=="usage_usec"{print $2}' "$D/cpu.stat" 2>/dev/null)
if [[ "$usage" =~ ^[0-9]+$ ]] && [ "$usage" -gt 0 ]; then ok "cpu.stat usage_usec is $usage"; else nok "cpu.stat usage_usec: '$usage'"; fi
mem=$(systemctl show -P MemoryCurrent "$SCOPE")
if [[ "$mem" =~ ^[0-9]+$ ]] && [ "$mem" -gt 0 ] && [ "$mem" -le "$MEMORY_MAX" ]; then ok "MemoryCurrent is $mem"; else nok "MemoryCurrent: '$mem'"; fi
tasks=$(systemctl show -P TasksCurrent "$SCOPE")
if [[ "$tasks" =~ ^[0-9]+$ ]] && [ "$tasks" -gt 0 ] && [ "$tasks" -le "$TASKS_MAX" ]; then ok "TasksCurrent is $tasks"; else nok "TasksCurrent: '$tasks'"; fi

# --- steady traffic without a connection held open ------------------------------
# One short request a second for three idle_timeouts: there is never an
# idle_timeout without a connection, so the container must stay.
exec 3>&-
note "keeper connection closed; one request a second for $((3 * IDLE)) s"
good=0
for _ in $(seq $((3 * IDLE))); do
    curl -fsS --max-time 30 -o /dev/null "$URL" && good=$((good + 1))
    sleep 1
done
LAST=$(date +%s.%N)
eq "all $((3 * IDLE)) spaced requests answered" "$good" "$((3 * IDLE))"
now_scopes=$(scopes | tr '\n' ' ')
if [ "$now_scopes" = "$SCOPE " ]; then ok "steady traffic (1 request/s, idle_timeout ${IDLE}s) keeps the container"
else nok "steady traffic (1 request/s, idle_timeout ${IDLE}s) keeps the container: $SCOPE replaced by: $now_scopes($(journalctl -b -u berth.service --no-pager -o cat | grep -c 'idle_timeout reached') idle teardowns so far)"; fi

# --- idle teardown --------------------------------------------------------------
# A connection held open (waking a container if the one above is gone) and
# one request; then silence from the moment both are closed.
exec 3<>"/dev/tcp/127.0.0.1/$PORT" || nok "could not open a connection before the idle wait"
wait_for 60 one_scope || true
SCOPE=$(scopes | tail -n1)
D=/sys/fs/cgroup$(systemctl show -P ControlGroup "$SCOPE" 2>/dev/null)
curl -fsS --max-time 60 -o /dev/null "$URL" || nok "the request before the idle wait failed"
sleep 1
exec 3>&-
LAST=$(date +%s.%N)
note "waiting for the idle teardown of ${SCOPE:-(no scope)} (idle_timeout ${IDLE}s)"
if [ -z "$SCOPE" ]; then
    nok "no container after the request before the idle wait"
elif wait_for 120 gone "$SCOPE" "$D"; then
    after=$(since "$LAST")
    ok "idle teardown removed $SCOPE and its cgroup ${after}s after the last request"
    if awk -v a="$after" -v i="$IDLE" 'BEGIN{exit !(a >= i - 0.5)}'; then ok "not before idle_timeout (${after}s >= ${IDLE}s)"
    else nok "the teardown came ${after}s after the last request, before idle_timeout ${IDLE}s"; fi
else
    nok "idle teardown: $SCOPE is $(systemctl show -P ActiveState "$SCOPE"), cgroup $([ -d "$D" ] && echo present || echo gone) after 120 s"
fi
eq "$SCOPE is unloaded (collected)" "$(systemctl show -P LoadState "$SCOPE")" not-found
eq "no berth-$SVC-*.scope is left" "$(scopes | wc -l)" 0
eq "berth-$SVC.socket still listens" "$(systemctl is-active berth-$SVC.socket)" active
eq "berth.service is still active" "$(systemctl is-active berth.service)" active

# --- wake-up again, then removal with a container running ------------------------
if body=$(curl -fsS --max-time 120 "$URL" 2>&1) && wait_for 30 one_scope; then
    if [ "$(scopes)" != "$SCOPE" ]; then ok "a request after the teardown wakes a new container $(scopes)"
    else nok "a request after the teardown: the old scope name came back"; fi
else
    nok "a request after the teardown: $(echo "$body" | head -n 2); scopes: $(scopes | tr '\n' ' ')"
fi
# --- the generator: a service file with listen, ip_allow and ip_deny ----------
# No socket unit is written by hand: berth-generator (linked by the package)
# writes berth-NAME.socket with IPAddressDeny=any, IPAddressAllow=127.0.0.2,
# enforced by the kernel (cgroup v2 BPF) on the socket and its connections.
# Both modes: ipl (lighttpd, listen) and ipi (printf, inetd).
IPL=8081 IPI=8082
{
    awk '/^\[sandbox\]/{exit} {print}' "$EX/services/$SVC.toml"
    printf 'listen = ["127.0.0.1:%s"]\nip_allow = ["127.0.0.2"]\nip_deny = ["any"]\n\n' "$IPL"
    awk '/^\[sandbox\]/{f=1} f' "$EX/services/$SVC.toml"
} >/etc/berth/services/ipl.toml
{
    # printf's answer, then a pause: curl reads it and closes first, so no
    # reset of its unread request can overtake the answer.
    cat <<'EOF_IPI'
mode = "inetd"
exec = ['/bin/sh', '-c', 'printf "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\ninetd"; sleep 2']
ip_allow = ["127.0.0.2"]
ip_deny = ["any"]
EOF_IPI
    printf 'listen = ["127.0.0.1:%s"]\n' "$IPI"
} >/etc/berth/services/ipi.toml
if out=$(berth check /etc/berth 2>&1); then ok "berth check with listen/ip_allow/ip_deny"; else nok "berth check with listen/ip_allow/ip_deny"; echo "$out" | sed 's/^/berth-vm: #   /'; fi
systemctl daemon-reload
for n in ipl ipi; do
    eq "berth-$n.socket is generated" "$(systemctl show -P FragmentPath berth-$n.socket)" "/run/systemd/generator/berth-$n.socket"
    check "berth-$n.socket has IPAddressDeny=any" grep -qx IPAddressDeny=any "/run/systemd/generator/berth-$n.socket"
done
# As the README says: new sockets reach berth serve when it starts.
systemctl stop berth.service
check "systemctl start sockets.target berth.service" systemctl start sockets.target berth.service
for n in ipl ipi; do eq "berth-$n.socket listens" "$(systemctl is-active berth-$n.socket)" active; done
ip_scopes() { systemctl list-units --type=scope --plain --no-legend "berth-$1-*.scope" 2>/dev/null | awk '$3=="active"' | wc -l; }
# 127.0.0.1 first: its packets are dropped, no container may start for it.
for n in ipl:$IPL ipi:$IPI; do
    name=${n%%:*} port=${n#*:}
    if curl -fsS --max-time 8 --interface 127.0.0.1 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
        nok "$name: a client bound to 127.0.0.1 got an answer through ip_deny = [\"any\"]"
    else
        ok "$name: a client bound to 127.0.0.1 is kept out"
    fi
    eq "$name: no container was started for 127.0.0.1" "$(ip_scopes "$name")" 0
done
body=$(curl -fsS --max-time 120 --interface 127.0.0.2 "http://127.0.0.1:$IPL/" 2>&1)
eq "ipl (listen): a client bound to 127.0.0.2 gets index.html" "$body" "$(cat /usr/share/berth/web/www/index.html)"
body=$(curl -sS --max-time 120 --interface 127.0.0.2 "http://127.0.0.1:$IPI/" 2>&1)
eq "ipi (inetd): a client bound to 127.0.0.2 gets the container's answer" "$body" "inetd"
# Still kept out while the listen-mode container runs.
if curl -fsS --max-time 8 --interface 127.0.0.1 -o /dev/null "http://127.0.0.1:$IPL/" 2>/dev/null; then
    nok "ipl: 127.0.0.1 got in while the container runs"
else ok "ipl: 127.0.0.1 is kept out while the container runs"; fi

# --- freeze_after: frozen through cgroup.freeze, memory.reclaim, thawed by the next connection
# A listen-mode probe (it reports its namespaces) with freeze_after: idle, it is
# frozen through the scope's cgroup.freeze and its memory reclaimed through
# memory.reclaim (cgroup v2 with the memory controller: memory_max makes systemd
# enable it for the scope); a connection while frozen is answered by the same
# container (same net and pid namespace inodes); a silent client and a crowd lose
# nothing; idle_timeout still stops it.
FRZ=8083
cat >/etc/berth/services/frz.toml <<EOF_FRZ
mode = "listen"
exec = ["/usr/lib/berth/berth-probe"]
listen = ["127.0.0.1:$FRZ"]
freeze_after = "2s"
idle_timeout = "40s"

[resources]
memory_max = "64M"
tasks_max = 200
EOF_FRZ
frz_report() {
    timeout 60 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; echo report >&3; cat <&3' _ "$FRZ" 2>/dev/null |
        grep -oE '"(net|pid)":"[a-z]+:\[[0-9]+\]"' | sort | tr '\n' ' '
}
frz_state() { berth list --json 2>/dev/null | tr -d ' \n' | grep -oE '"service":"frz"[^}]*"state":"[a-z]+"' | grep -oE '[a-z]+"$' | tr -d '"'; }
frz_is() { [ "$(frz_state)" = "$1" ]; }
systemctl daemon-reload
systemctl stop berth.service
check "freeze: systemctl start sockets.target berth.service" systemctl start sockets.target berth.service
A=$(frz_report)
check "freeze: the listen probe answers (report: $A)" eval '[[ "$A" == *'"'"'"net":"net:['"'"'* ]]'
# Linux 6.1 here: the container's network namespace has a TCP table of its
# own (berth's nursery namespace), the host's setting is untouched.
E=$(timeout 60 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; echo report >&3; cat <&3' _ "$FRZ" 2>/dev/null |
    grep -oE '"tcp_ehash_entries":-?[0-9]+' | cut -d: -f2)
HC=$(cat /proc/sys/net/ipv4/tcp_child_ehash_entries)
check "netns: the container's TCP table is its own (tcp_ehash_entries $E), host's child setting $HC" \
    eval '[ "$E" = 512 ] && [ "$HC" = 0 ]'
FS=$(systemctl list-units --type=scope --plain --no-legend 'berth-frz-*.scope' 2>/dev/null | awk '$3=="active"{print $1}' | head -n1)
FD=/sys/fs/cgroup$(systemctl show -P ControlGroup "${FS:-none}" 2>/dev/null)
check "freeze: berth list shows the idle container frozen" wait_for 60 frz_is frozen
eq "freeze: cgroup.freeze of $FS" "$(cat "$FD/cgroup.freeze" 2>&1)" 1
eq "freeze: cgroup.events says frozen" "$(grep '^frozen ' "$FD/cgroup.events" 2>&1)" "frozen 1"
check "freeze: the scope has memory.reclaim" test -e "$FD/memory.reclaim"
id=${FS#berth-frz-}; id=${id%.scope}
rec=$(journalctl -b --no-pager -q -o cat --output-fields=BERTH_RECLAIM BERTH_CONTAINER="$id" BERTH_EVENT=frozen 2>/dev/null | head -n1)
note "freeze: $rec"
check "freeze: memory handed back through memory.reclaim (journal: $rec)" eval '[[ "$rec" =~ ^memory.reclaim:\ [0-9]+\ KiB\ before,\ [0-9]+\ KiB\ after$ ]]'
fz=$(journalctl -b --no-pager -q -o cat --output-fields=BERTH_FREEZER BERTH_CONTAINER="$id" BERTH_EVENT=frozen 2>/dev/null | head -n1)
eq "freeze: the freezer used" "$fz" cgroup.freeze
st=$(berth status frz 2>&1)   # (captured: grep -q on a pipe would SIGPIPE it under pipefail)
if grep -q "^State: *frozen$" <<<"$st"; then ok "freeze: berth status frz says State: frozen"
else nok "freeze: berth status frz says State: frozen"; head -n 8 <<<"$st" | sed 's/^/berth-vm: #   /'; fi
B=$(frz_report)
eq "freeze: a connection while frozen is answered by the same container" "$B" "$A"
eq "freeze: thawed (cgroup.freeze)" "$(cat "$FD/cgroup.freeze" 2>&1)" 0
wait_for 60 frz_is frozen || note "freeze: not frozen again before the silent client ($(frz_state))"
exec 5<>"/dev/tcp/127.0.0.1/$FRZ"
check "freeze: a silent connection thaws it" wait_for 60 frz_is running
for i in $(seq 1 20); do frz_report >"/run/frz.$i" & done; wait
eq "freeze: 20 clients at once beside the silent one, all answered by the same container" "$(grep -cxF -- "$A" /run/frz.* | grep -c ':1$')" 20
exec 5>&-
check "freeze: frozen again once the silent client left" wait_for 60 frz_is frozen
for i in $(seq 1 20); do frz_report >"/run/frz.$i" & done; wait
eq "freeze: 20 clients at once at a frozen container, all answered by the same one" "$(grep -cxF -- "$A" /run/frz.* | grep -c ':1$')" 20
rm -f /run/frz.*
eq "freeze: one container for all of it" "$(journalctl -b --no-pager -q -o cat BERTH_SERVICE=frz BERTH_EVENT=started | wc -l)" 1
check "freeze: idle_timeout stops the frozen container" wait_for 180 gone "$FS" "$FD"
check "freeze: stopped for idle_timeout" eval 'journalctl -b --no-pager -q -o cat BERTH_CONTAINER="$id" BERTH_EVENT=stopped | grep -q "idle_timeout reached"'
# (Namespace inodes are reused once freed: the new container is told by its scope.)
C=$(frz_report)
FS2=$(systemctl list-units --type=scope --plain --no-legend 'berth-frz-*.scope' 2>/dev/null | awk '$3=="active"{print $1}' | head -n1)
check "freeze: after the stop a new container answers (scope $FS2, was $FS)" eval '[ -n "$C" ] && [ -n "$FS2" ] && [ "$FS2" != "$FS" ]'

if out=$(dpkg -r berth 2>&1); then ok "dpkg -r berth with a container running"; else nok "dpkg -r berth"; fi
echo "$out" | grep -i 'berth:' | sed 's/^/berth-vm: #   /'
sleep 1
left=$(berth_pids | tr '\n' ' ')
eq "no berth process is left after dpkg -r" "$left" ""
eq "no berth scope is left after dpkg -r" "$(systemctl list-units --plain --no-legend 'berth-*.scope' | awk '$3=="active"' | wc -l)" 0
eq "berth.service is inactive after dpkg -r" "$(systemctl is-active berth.service)" inactive
finish
