#!/usr/bin/python3
"""CPU time per connection, by process, from a system-wide `perf record -e
cpu-clock,sched:sched_process_fork` taken while one variant served a known
number of connections (tests/bench/run.sh, profile).

    cpuprof.py PERF_SCRIPT_TXT --connections N --freq HZ --testbed-pids FILE --client PID
    cpuprof.py --merge ROUND.json...     (one variant's rounds, summed)

Samples are attributed to the testbed's processes (the pids in FILE, taken
from the testbed's cgroups when the recording started, and everything they
forked during it), the load client, kernel threads (host-wide: kworkers also
run other jobs' work), and other host processes (not ours; shown so that the
total can be judged). Prints JSON: ms of CPU per connection by group.
"""

import argparse
import json
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+(?P<ts>\d+\.\d+):\s+(?P<ev>[\w:-]+):\s*(?P<rest>.*)$")
KTHREAD = ("kworker", "ksoftirqd", "rcu_", "migration", "kcompactd", "kswapd", "khugepaged", "cpuhp", "idle_inject")


def group_of(comm):
    if comm == "exe":
        return "berth sandbox-stage (outer stage, PID 1)"
    if comm == "berth":
        return "berth serve (supervisor)"
    if comm.startswith("(") or comm in ("echo", "cat"):
        return "application (and systemd's forked child before exec)" if comm.startswith("(") else "application"
    return comm


def merge(paths):
    """Sum rounds of one variant (each a cpuprof.py output) into one, per
    connection over all of them; `rounds` keeps each round's testbed total."""
    runs = [json.load(open(p)) for p in paths]
    n = sum(r["connections"] for r in runs)
    ms = defaultdict(float)
    for r in runs:
        for g in r["groups"]:
            ms[g["group"]] += g["cpu_ms_per_connection"] * r["connections"]
    rows = sorted(((v / max(1, n), g) for g, v in ms.items()), reverse=True)
    ours = sum(v for v, g in rows if g.startswith("testbed:"))
    json.dump({"connections": n, "samples": sum(r["samples"] for r in runs),
               "testbed_cpu_ms_per_connection": round(ours, 3),
               "rounds": [r["testbed_cpu_ms_per_connection"] for r in runs],
               "groups": [{"group": g, "cpu_ms_per_connection": round(v, 3)} for v, g in rows]}, sys.stdout, indent=1)
    print()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--merge":
        merge(sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("perf_txt")
    ap.add_argument("--connections", type=int, required=True)
    ap.add_argument("--freq", type=float, required=True)
    ap.add_argument("--testbed-pids", required=True)
    ap.add_argument("--client", type=int, required=True)
    a = ap.parse_args()
    ours = set()
    for line in open(a.testbed_pids):
        line = line.strip()
        if line.isdigit():
            ours.add(int(line))
    groups = defaultdict(int)
    total = 0
    for line in open(a.perf_txt, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        pid, comm, ev = int(m["pid"]), m["comm"], m["ev"]
        if ev == "sched:sched_process_fork":
            c = re.search(r"child_pid=(\d+)", m["rest"])
            if c and pid in ours:
                ours.add(int(c.group(1)))
            continue
        if not ev.startswith("cpu-clock"):
            continue
        total += 1
        if pid in ours:
            g = "testbed: " + group_of(comm)
        elif pid == a.client:
            g = "load client (python, host)"
        elif pid == 0 or comm.startswith("swapper"):
            g = "idle"
        elif comm.startswith(KTHREAD):
            g = "kernel threads (host-wide)"
        else:
            g = "other host processes (not ours)"
        groups[g] += 1
    per = 1000.0 / a.freq / max(1, a.connections)   # ms of CPU per sample per connection
    rows = sorted(((n * per, g) for g, n in groups.items()), reverse=True)
    ours_ms = sum(ms for ms, g in rows if g.startswith("testbed:"))
    json.dump({"connections": a.connections, "samples": total,
               "testbed_cpu_ms_per_connection": round(ours_ms, 3),
               "groups": [{"group": g, "cpu_ms_per_connection": round(ms, 3)} for ms, g in rows]}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
