#!/bin/bash
# Demo: berth serving real services from throw-away containers, in the
# foreground (`berth run --no-scope`): lighttpd in listen mode woken by the
# first request and stopped when idle, and the probe in inetd mode showing
# what an application sees from inside its sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (berth builds namespaces and mounts)" >&2; exit 2; }
for p in lighttpd curl; do
    dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lighttpd curl >/dev/null; break; }
done
cargo build --quiet --bins
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/services"
sed "s|/usr/share/berth/web|$PWD/config/web|g; s|idle_timeout = \"30s\"|idle_timeout = \"2s\"|" config/services/web.toml > "$work/services/web.toml"
cat > "$work/services/probe.toml" <<TOML
mode = "inetd"
exec = ["/probe"]
[sandbox]
read_only = ["$PWD/target/debug/berth-probe:/probe"]
tmp_size = "8M"
TOML
port_web=18080; port_probe=18081
wait_log() { for _ in $(seq 100); do grep -q "$2" "$1" && return 0; sleep 0.1; done; echo "demo: no '$2' in $1" >&2; cat "$1" >&2; exit 1; }

echo "== berth check"
target/debug/berth --config-dir "$work" check && echo "configuration valid"
echo "== starting berth for lighttpd (listen mode) on 127.0.0.1:$port_web"
target/debug/berth --config-dir "$work" run "$work/services/web.toml" --listen 127.0.0.1:$port_web --no-scope 2>"$work/web.log" &
pids+=($!)
echo "== starting berth for the probe (inetd mode) on 127.0.0.1:$port_probe"
target/debug/berth --config-dir "$work" run "$work/services/probe.toml" --listen 127.0.0.1:$port_probe --no-scope 2>"$work/probe.log" &
pids+=($!)
wait_log "$work/web.log" serving; wait_log "$work/probe.log" serving
echo "== curl http://127.0.0.1:$port_web/ (wakes a container)"
curl -sS "http://127.0.0.1:$port_web/"
echo "== waiting for the idle teardown (idle_timeout = 2s)"
wait_log "$work/web.log" "idle_timeout reached"
echo "== curl again (a new container)"
curl -sS "http://127.0.0.1:$port_web/"
echo "== what the application sees inside its container (probe, inetd mode)"
exec 3<>/dev/tcp/127.0.0.1/$port_probe
echo report >&3
show=$(cat <<'PY'
import json, sys
r = json.load(sys.stdin)
print("  uid/gid:        ", r["uid"], r["gid"], "groups", r["groups"])
print("  pid/ppid:       ", r["pid"], r["ppid"], "(PID 1 is berth's reaper)")
print("  interfaces:     ", [(i["name"], i["up"]) for i in r["interfaces"]])
print("  hostname:       ", r["hostname"])
print("  mounts:         ", " ".join(m["mount_point"] for m in r["mounts"]))
print("  writable:       ", sorted(p for p, w in r["writable"].items() if w))
print("  CapEff/NoNewPrivs/Seccomp:", r["status"]["CapEff"], r["status"]["NoNewPrivs"], r["status"]["Seccomp"])
print("  fds:            ", [(f["fd"], f["target"]) for f in r["fds"]])
print("  env:            ", r["env"])
print("  mount(2):       ", r["syscalls"]["mount"], " unshare(2):", r["syscalls"]["unshare"], " TIOCSTI:", r["syscalls"]["TIOCSTI"])
PY
)
python3 -c "$show" <&3
exec 3<&-
echo "== berth's events"
cat "$work/web.log" "$work/probe.log"
echo "== demo done"
