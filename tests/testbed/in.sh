#!/usr/bin/env bash
# Run a command inside a testbed booted by boot.sh; its exit code is passed through.
#
#   tests/testbed/in.sh STATE_DIR CMD [ARG]...
#
# The command enters all of the container's namespaces (nsenter -a) but stays in the
# caller's cgroups: `systemd-run --scope` fails from here, start units instead
# (`systemd-run --wait ...`).
set -uo pipefail
STATE=${1:?usage: in.sh STATE_DIR CMD...}; shift
[ $# -ge 1 ] || { echo "usage: in.sh STATE_DIR CMD..." >&2; exit 2; }
LEADER=$(cat "$STATE/leader.pid" 2>/dev/null) || { echo "in.sh: no testbed in $STATE" >&2; exit 125; }
[ -d "/proc/$LEADER" ] || { echo "in.sh: testbed in $STATE is not running" >&2; exit 125; }
exec nsenter -t "$LEADER" -a -- "$@"
