#!/usr/bin/python3
"""CPU time per connection, by process, from a system-wide `perf record -e
cpu-clock,sched:sched_process_fork -g --kernel-callchains` taken while one
variant served a known number of connections (tests/bench/run.sh, profile).

    cpuprof.py PERF_SCRIPT_TXT --connections N --freq HZ --testbed-pids FILE --client PID
    cpuprof.py --merge ROUND.json...     (one variant's rounds, summed)

Samples are attributed to the testbed's processes (the pids in FILE, taken
from the testbed's cgroups when the recording started, and everything they
forked during it), the load client, kernel threads (host-wide: kworkers also
run other jobs' work), and other host processes (not ours; shown so that the
total can be judged). Prints JSON: ms of CPU per connection by group.

With kernel call chains in the script output, the testbed's samples are
also sorted by the kernel work they were in (`WORK`): making the namespaces
and the mount tree a container must have by the contract (shared/SPEC.md,
"What a container is"), the application's exec, and the rest (forks,
exits, page faults, seccomp, berth's own calls), so report.py can add up
the floor the contract sets under berth's CPU per connection.
"""

import argparse
import json
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+(?P<ts>\d+\.\d+):\s+(?P<ev>[\w:-]+):\s*(?P<rest>.*)$")
# Kernel work by the frames under it; the first category whose frames
# appear in a sample's kernel call chain takes it. The first five are the
# container the contract requires; "exec" is the application's exec,
# which every variant pays (bare's is in systemd's forked child). report.py
# (CONTRACT_WORK) names the first six.
WORK = (
    ("network namespace made", ("copy_net_ns",)),
    ("mount, pid, ipc, uts, cgroup namespaces made", ("create_new_namespaces", "create_pid_namespace")),
    ("namespaces released at exit", ("exit_task_namespaces", "free_nsproxy", "zap_pid_ns_processes")),
    ("mount tree (tmpfs root, binds, /proc, pivot_root, detached trees)",
     ("__x64_sys_mount", "__x64_sys_fsopen", "__do_sys_fsconfig", "__x64_sys_fsmount", "__x64_sys_move_mount",
      "__x64_sys_open_tree", "__x64_sys_mount_setattr", "__do_sys_pivot_root", "__x64_sys_umount",
      "__x64_sys_mknodat", "cleanup_mnt")),
    ("loopback brought up", ("dev_change_flags", "netif_change_flags")),
    ("application's exec", ("__x64_sys_execve", "__x64_sys_execveat")),
    ("seccomp filters loaded", ("do_seccomp",)),
    ("fork", ("copy_process",)),
    ("exit", ("do_exit",)),
    ("page faults", ("exc_page_fault",)),
)
FRAME = re.compile(r"^\s+[0-9a-f]+ (\S+)")
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
    work = defaultdict(float)
    for r in runs:
        for g in r["groups"]:
            ms[g["group"]] += g["cpu_ms_per_connection"] * r["connections"]
        for w in r.get("work", []):
            work[(w["group"], w["work"])] += w["cpu_ms_per_connection"] * r["connections"]
    rows = sorted(((v / max(1, n), g) for g, v in ms.items()), reverse=True)
    ours = sum(v for v, g in rows if g.startswith("testbed:"))
    json.dump({"connections": n, "samples": sum(r["samples"] for r in runs),
               "testbed_cpu_ms_per_connection": round(ours, 3),
               "rounds": [r["testbed_cpu_ms_per_connection"] for r in runs],
               "groups": [{"group": g, "cpu_ms_per_connection": round(v, 3)} for v, g in rows],
               "work": [{"group": g, "work": k, "cpu_ms_per_connection": round(v / max(1, n), 3)}
                        for (g, k), v in sorted(work.items())]}, sys.stdout, indent=1)
    print()


def work_of(frames):
    names = set(frames)
    for name, marks in WORK:
        if any(m in names for m in marks):
            return name
    return "other (kernel)" if frames else "other (user space)"


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
    work = defaultdict(int)
    total = 0
    # One sample: its header line, then its kernel call chain (if recorded).
    pending = None   # (group, frames) of a testbed sample whose chain is being read

    def settle():
        if pending:
            work[(pending[0], work_of(pending[1]))] += 1

    for line in open(a.perf_txt, errors="replace"):
        fm = FRAME.match(line)
        if fm:
            if pending:
                pending[1].append(fm.group(1))
            continue
        m = LINE.match(line)
        if not m:
            continue
        settle()
        pending = None
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
            pending = (g, [])
        elif pid == a.client:
            g = "load client (python, host)"
        elif pid == 0 or comm.startswith("swapper"):
            g = "idle"
        elif comm.startswith(KTHREAD):
            g = "kernel threads (host-wide)"
        else:
            g = "other host processes (not ours)"
        groups[g] += 1
    settle()
    per = 1000.0 / a.freq / max(1, a.connections)   # ms of CPU per sample per connection
    rows = sorted(((n * per, g) for g, n in groups.items()), reverse=True)
    ours_ms = sum(ms for ms, g in rows if g.startswith("testbed:"))
    json.dump({"connections": a.connections, "samples": total,
               "testbed_cpu_ms_per_connection": round(ours_ms, 3),
               "groups": [{"group": g, "cpu_ms_per_connection": round(ms, 3)} for ms, g in rows],
               "work": [{"group": g, "work": k, "cpu_ms_per_connection": round(v * per, 3)}
                        for (g, k), v in sorted(work.items())]}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
