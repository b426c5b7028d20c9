#!/usr/bin/python3
"""Cut `perf script` output (tracepoints recorded system-wide by run.sh) into
the phases of each profiled connection's critical path.

Connections are sequential (the client pauses between them), so each one is
the window between two of the client's connect() calls. In each window the
accepting process (berth serve, or the testbed's systemd for Accept=yes) and
the process that execs the application are found, the fork chain between them
is followed, and the timestamps of the steps below are taken:

  berth (no warm sandbox): connect -> accept -> PID 1 forked by the zygote
    into its pid namespace -> unshare() done -> Prepared sent (or, with an
    outer stage: stage forked or exec'd -> Setup received -> unshare() done ->
    PID 1 forked -> Prepared sent) (mounts, pivot_root, seccomp compiled) -> Start received
    (waits for the scope job) -> application forked -> application exec'd ->
    first byte at the client
  berth (warm sandbox): connect -> accept -> Start sent -> Start received ->
    application forked -> exec'd -> first byte
  systemd Accept=yes: connect -> accept -> child forked -> exec'd -> first byte
  berth listen mode woken from idle (target names berth_wake*): as the first,
    from connect straight to the stage's fork (the application accepts)
  lighttpd_startup*: systemd-socket-activate execs lighttpd on the first
    connection: connect -> exec -> first byte

Prints JSON: per target, the median and p90 of every phase (ms) and the
number of connections the phases could be found for.
"""

import argparse
import json
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+(?P<ts>\d+\.\d+):\s+(?P<ev>[\w:]+):\s*(?P<args>.*)$")
ERR = "0xfffffffffff"
MOUNT_CALLS = ("syscalls:sys_enter_mount", "syscalls:sys_enter_mount_setattr",
               "syscalls:sys_enter_open_tree", "syscalls:sys_enter_move_mount")


def pct(vals, p):
    s = sorted(vals)
    if not s:
        return None
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("perf_txt")
    ap.add_argument("--client", type=int, action="append", required=True,
                    help="pid of the client process (several: their connections in time order)")
    ap.add_argument("--per-target", type=int, required=True)
    ap.add_argument("--targets", required=True)
    ap.add_argument("--accepter", action="append", required=True, help="TARGET=HOSTPID")
    ap.add_argument("--app", required=True)
    ap.add_argument("--systemd", type=int, help="host pid of the testbed's systemd (for the scope job's share)")
    a = ap.parse_args()
    targets = a.targets.split(",")
    accepter = {k: int(v) for k, v in (x.split("=", 1) for x in a.accepter)}

    clients = set(a.client)
    parent = {}          # child tgid -> (parent tgid, fork time)
    execs = defaultdict(list)   # pid -> [(ts, filename)]
    by_pid = defaultdict(list)  # pid -> [(ts, ev, args)]
    connects = []
    comms = defaultdict(set)    # pid -> names seen
    for line in open(a.perf_txt, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        pid, tid, ts, ev, args = int(m["pid"]), int(m["tid"]), float(m["ts"]), m["ev"], m["args"]
        comms[pid].add(m["comm"])
        if ev == "sched:sched_process_fork":
            c = re.search(r"child_pid=(\d+)", args)
            if c:
                child = int(c.group(1))
                if child not in parent:
                    parent[child] = (pid, ts)
            continue
        if ev == "sched:sched_process_exec":
            f = re.search(r"filename=(\S+)", args)
            execs[pid].append((ts, f.group(1) if f else ""))
            continue
        if pid in clients and ev == "syscalls:sys_enter_connect":
            connects.append(ts)
        by_pid[pid].append((ts, ev, args))

    # Threads appear as forks too; a process's pid is its tgid, so resolve
    # a thread-created child to its process through the thread's tgid.
    def ancestors(pid, depth=8):
        out = [pid]
        while depth and pid in parent:
            pid = parent[pid][0]
            out.append(pid)
            depth -= 1
        return out

    def first(pid, ev, after, before, pred=None):
        for ts, e, args in by_pid.get(pid, []):
            if e == ev and after <= ts < before and (pred is None or pred(args)):
                return ts
        return None

    def last(pid, ev, after, before, pred=None):
        r = None
        for ts, e, args in by_pid.get(pid, []):
            if e == ev and after <= ts < before and (pred is None or pred(args)):
                r = ts
        return r

    # berth's zygote forks the stages (CLONE_PARENT: the supervisor's
    # children, but the fork event names the zygote): not a step of the path.
    is_zygote = lambda pid: comms.get(pid) == {"berth-zygote"}
    ok_ret = lambda args: not args.startswith(ERR)
    fd_of = lambda args: (re.search(r"fd: (0x[0-9a-f]+)", args) or [None, None])[1]

    connects.sort()
    results = defaultdict(lambda: defaultdict(list))
    found = defaultdict(int)
    refill_first = defaultdict(int)
    mounts_n = defaultdict(list)
    attaches = defaultdict(list)
    for i, c in enumerate(connects):
        ti = i // a.per_target
        if ti >= len(targets):
            break
        tgt = targets[ti]
        end = connects[i + 1] if i + 1 < len(connects) else c + 5.0
        acc = accepter.get(tgt)
        t = {"connect": c}
        t["first_byte"] = min((x for x in (first(cl, "syscalls:sys_exit_recvfrom", c, end, lambda x: ok_ret(x) and x != "0x0")
                                           for cl in clients) if x is not None), default=None)
        wake = tgt.startswith("berth_wake")   # listen mode: the application accepts
        startup = tgt.startswith("lighttpd_startup")   # systemd-socket-activate execs it
        t["accept"] = c if (wake or startup) else first(acc, "syscalls:sys_exit_accept4", c, end, ok_ret)
        # The application's exec in this window: a descendant of the accepter,
        # or (a warm sandbox forked before the recording began) one whose
        # ancestry is cut off above its PID 1.
        app = None
        cands = sorted((ts, pid) for pid, lst in execs.items() for ts, fn in lst if fn == a.app and c <= ts < end)

        def lineage(pid):
            # A stage forked by berth's zygote is the supervisor's child
            # (CLONE_PARENT); the fork event names the zygote.
            anc = ancestors(pid)
            for k, x in enumerate(anc):
                if is_zygote(x):
                    return anc[:k] + [acc]
            return anc
        for ts, pid in cands:
            if acc in lineage(pid):
                app, t["app_exec"] = pid, ts
                break
        if app is None and tgt.startswith("berth"):
            for ts, pid in cands:
                if len(lineage(pid)) == 2:
                    app, t["app_exec"] = pid, ts
                    break
        if app is None or t["accept"] is None or t["first_byte"] is None:
            continue
        chain = lineage(app)
        if acc in chain:
            chain = chain[: chain.index(acc) + 1][::-1]   # accepter ... app
        else:
            chain = [acc, None] + chain[::-1]            # accepter, (unknown stage), PID 1, app
        t["app_fork"] = parent[app][1] if app in parent else None
        phases = []
        if tgt.startswith("berth") and len(chain) >= 3:
            # accepter, outer stage, PID 1, app; or (the zygote forks PID 1
            # straight into its pid namespace) accepter, PID 1, app.
            direct = len(chain) == 3
            stage, pid1 = (chain[1], chain[1]) if direct else (chain[1], chain[2])
            fork_stage = parent[stage][1] if stage in parent else 0.0
            cold = fork_stage >= c
            if cold:
                t["stage_fork"] = fork_stage
                t["stage_exec"] = None if direct else next((ts for ts, fn in execs.get(stage, []) if ts >= fork_stage), None)
                t["setup_recv"] = None if direct else first(stage, "syscalls:sys_exit_recvmsg", t["stage_exec"] or fork_stage, end)
                t["unshare_done"] = first(stage, "syscalls:sys_exit_unshare", c, end)
                t["pid1_fork"] = parent[pid1][1]
                t["prepared"] = first(pid1, "syscalls:sys_enter_sendmsg", c, end)
                mounts_n[tgt].append(sum(1 for ts, e, args in by_pid.get(pid1, [])
                                         if e in MOUNT_CALLS and c <= ts < (t["prepared"] or end)))
                t["start_recv"] = first(pid1, "syscalls:sys_exit_recvmsg", t["prepared"] or c, end)
                sends = [(ts, fd_of(args)) for ts, e, args in by_pid.get(acc, [])
                         if e == "syscalls:sys_enter_sendmsg" and fork_stage <= ts < (t["start_recv"] or end)]
                if sends:
                    # The stage channel: Setup is the first send after the
                    # fork; without a stage (direct), Start is the last.
                    chan = sends[-1][1] if direct else sends[0][1]
                    dbus = [ts for ts, fd in sends if fd != chan]
                    t["dbus_call"] = dbus[0] if dbus else None
                    st = [ts for ts, fd in sends if fd == chan]
                    t["start_sent"] = st[-1] if (direct or len(st) > 1) else None
                    if a.systemd and t.get("dbus_call") and t.get("start_sent"):
                        t["sd_recv"] = first(a.systemd, "syscalls:sys_exit_recvmsg", t["dbus_call"], t["start_sent"])
                        t["sd_last"] = last(a.systemd, "syscalls:sys_enter_sendmsg", t["dbus_call"], t["start_sent"])
                        # systemd moving the pids into the scope's cgroups (one write per hierarchy)
                        att = [ts for ts, e, args in by_pid.get(a.systemd, [])
                               if e == "cgroup:cgroup_attach_task" and t["dbus_call"] <= ts < t["start_sent"]]
                        if att:
                            t["sd_attach_first"], t["sd_attach_last"] = att[0], att[-1]
                            attaches[tgt].append(len(att))
                what = "PID 1 forked by the zygote" if direct else "stage forked"
                phases = [(f"connect -> {what} (supervisor wakes, spawns)", "connect", "stage_fork")] if wake else [
                    ("connect -> accept (supervisor wakes)", "connect", "accept"),
                    (f"accept -> {what} (credentials, spawn)", "accept", "stage_fork")]
                if direct:
                    phases += [
                        ("PID 1 (new pid namespace): unshare(mnt, uts, ipc, net)", "pid1_fork", "unshare_done"),
                        ("PID 1: lo up, mounts, pivot_root, seccomp -> Prepared", "unshare_done", "prepared"),
                    ]
                elif t["stage_exec"] is not None:
                    phases += [
                        ("stage fork -> exec of berth sandbox-stage", "stage_fork", "stage_exec"),
                        ("stage exec -> Setup received (loader, runtime start)", "stage_exec", "setup_recv"),
                    ]
                else:
                    phases += [("stage fork (by the zygote) -> Setup received", "stage_fork", "setup_recv")]
                if not direct:
                    phases += [
                        ("stage: unshare(pid)", "setup_recv", "unshare_done"),
                        ("unshare -> PID 1 forked", "unshare_done", "pid1_fork"),
                        ("PID 1: unshare(mnt, uts, ipc, net), lo up, mounts, pivot_root, seccomp -> Prepared", "pid1_fork", "prepared"),
                    ]
                phases += [
                    ("Prepared -> Start received (scope job, supervisor)", "prepared", "start_recv"),
                    ("Start -> application forked (journal, cgroupns)", "start_recv", "app_fork"),
                    ("application fork -> exec (creds, seccomp load)", "app_fork", "app_exec"),
                    ("application exec -> first byte at the client" + (" (its start-up, accept, reply)" if wake else ""),
                     "app_exec", "first_byte"),
                    (f"(overlapped) {'PID 1' if direct else 'stage'} fork -> StartTransientUnit sent", "stage_fork", "dbus_call"),
                    ("(overlapped) StartTransientUnit sent -> Start sent", "dbus_call", "start_sent"),
                    ("(overlapped, of which) call -> systemd receives it (dbus-daemon)", "dbus_call", "sd_recv"),
                    ("(overlapped, of which) systemd: call received -> its last message", "sd_recv", "sd_last"),
                    ("(overlapped, within it) call received -> first cgroup attach", "sd_recv", "sd_attach_first"),
                    ("(overlapped, within it) first -> last cgroup attach (cgroup.procs writes)", "sd_attach_first", "sd_attach_last"),
                    ("(overlapped, within it) last cgroup attach -> systemd's last message", "sd_attach_last", "sd_last"),
                    ("(overlapped, of which) systemd's last message -> Start sent", "sd_last", "start_sent"),
                ]
            else:
                t["start_recv"] = first(pid1, "syscalls:sys_exit_recvmsg", c, end)
                t["start_sent"] = last(acc, "syscalls:sys_enter_sendmsg", c, t["start_recv"] or end)
                # did the supervisor spawn a refill stage before handing this one its Start?
                if t["start_sent"] is not None:
                    spawned = any((p == acc or is_zygote(p)) and t["accept"] <= ts < t["start_sent"]
                                  for ch, (p, ts) in parent.items())
                    refill_first[tgt] += 1 if spawned else 0
                phases = [("connect -> Start sent (supervisor wakes, warm sandbox taken)", "connect", "start_sent")] if wake else [
                    ("connect -> accept (supervisor wakes)", "connect", "accept"),
                    ("accept -> Start sent (warm sandbox taken)", "accept", "start_sent")]
                phases += [
                    ("Start sent -> Start received by PID 1", "start_sent", "start_recv"),
                    ("Start -> application forked (journal, cgroupns)", "start_recv", "app_fork"),
                    ("application fork -> exec (creds, seccomp load)", "app_fork", "app_exec"),
                    ("application exec -> first byte at the client" + (" (its start-up, accept, reply)" if wake else ""),
                     "app_exec", "first_byte"),
                ]
        elif startup:
            phases = [
                ("connect -> exec of lighttpd (systemd-socket-activate wakes, execs)", "connect", "app_exec"),
                ("lighttpd exec -> first byte (its start-up, accept, reply)", "app_exec", "first_byte"),
            ]
        else:
            phases = [
                ("connect -> accept (systemd wakes)", "connect", "accept"),
                ("accept -> child forked (instance unit, job)", "accept", "app_fork"),
                ("child fork -> exec (sandbox set-up in the child)", "app_fork", "app_exec"),
                ("application exec -> first byte at the client", "app_exec", "first_byte"),
            ]
        found[tgt] += 1
        phases.append(("total: connect -> first byte", "connect", "first_byte"))
        for name, s, e in phases:
            if t.get(s) is not None and t.get(e) is not None:
                results[tgt][name].append((t[e] - t[s]) * 1000.0)
        results[tgt]["_order"] = [p[0] for p in phases]

    out = {}
    for tgt in targets:
        r = results.get(tgt)
        if not r:
            out[tgt] = {"connections": 0, "phases": []}
            continue
        order = r.pop("_order")
        out[tgt] = {
            "connections": found[tgt],
            "refill_spawned_before_start": refill_first[tgt] if tgt in refill_first else None,
            "mount_calls_per_container": pct(mounts_n[tgt], 50) if mounts_n.get(tgt) else None,
            "cgroup_attaches_per_scope": pct(attaches[tgt], 50) if attaches.get(tgt) else None,
            "phases": [{"phase": n, "p50_ms": round(pct(r[n], 50), 3), "p90_ms": round(pct(r[n], 90), 3),
                        "n": len(r[n])} for n in order if r.get(n)],
        }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
