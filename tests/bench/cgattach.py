#!/usr/bin/python3
"""Kernel cost of moving one process between cgroups (a write to
cgroup.procs), which every transient scope pays once per hierarchy.

Moves a `sleep` this script starts into a cgroup this script creates
(berth-bench-cgattach in each hierarchy) and back, a few times with pauses
(as between sequential connections) and a few times back to back; removes
the cgroups. Prints JSON: per hierarchy, the times in ms.
"""
import json
import os
import subprocess
import sys
import time

NAME = "berth-bench-cgattach"


def hierarchies():
    out = []
    for line in open("/proc/self/mountinfo"):
        pre, _, post = line.partition(" - ")
        fstype, _, opts = post.split()[:3]
        mnt = pre.split()[4]
        if fstype == "cgroup2":
            out.append(("unified" if mnt != "/sys/fs/cgroup" else "cgroup2", mnt))
        elif fstype == "cgroup":
            ctl = [o for o in opts.split(",") if o not in ("rw", "ro", "relatime", "nosuid", "nodev", "noexec")]
            out.append((",".join(ctl), mnt))
    return out


# Moves per series (CGATTACH_N; 4 on testbed 1, more in the VM benchmark).
N_MOVES = int(os.environ.get("CGATTACH_N", "4"))


def moves(pid, there, home, pause, n=N_MOVES):
    """ms for each of n moves of pid into `there` (back to `home` after each)."""
    out = []
    for _ in range(n):
        time.sleep(pause)
        t0 = time.perf_counter()
        with open(os.path.join(there, "cgroup.procs"), "w") as fh:
            fh.write(str(pid))
        out.append(round((time.perf_counter() - t0) * 1000, 3))
        with open(os.path.join(home, "cgroup.procs"), "w") as fh:
            fh.write(str(pid))
    return out


def main():
    p = subprocess.Popen(["sleep", "120"])
    res = {}
    try:
        cg = {}
        for l in open("/proc/%d/cgroup" % p.pid):
            _, ctl, path = l.strip().split(":", 2)
            cg[ctl] = path
        for name, mnt in hierarchies():
            key = name if name not in ("unified", "cgroup2") else ""
            key = next((k for k in cg if k == key or (key and set(k.split(",")) == set(key.split(",")))), None)
            if key is None:
                continue
            home = os.path.join(mnt, cg[key].lstrip("/"))
            d = os.path.join(mnt, NAME)
            try:
                os.makedirs(d, exist_ok=True)
                if "cpuset" in name.split(","):
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        with open(os.path.join(d, f), "w") as fh:
                            fh.write(open(os.path.join(mnt, f)).read())
                res[name] = {"after_pause_ms": moves(p.pid, d, home, 0.3),
                             "back_to_back_ms": moves(p.pid, d, home, 0)}
            except OSError as e:
                res[name] = {"error": str(e)}
            finally:
                try:
                    os.rmdir(d)
                except OSError:
                    pass
    finally:
        p.kill()
        p.wait()
    json.dump(res, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
