#!/usr/bin/python3
"""Load generator and probes for tests/bench/run.sh (Python 3 standard library only).

Subcommands (all print JSON on stdout):

  floor-server PORT
      A trivial TCP server on 127.0.0.1:PORT that writes "hi\\n" on every
      accepted connection and closes it. Measured with `latency` like the
      real targets, it gives the client's own overhead (Python + loopback).

  latency --target NAME=PORT [--target ...] --concurrency C --rounds R --per-round K
          [--warmup W] [--send TEXT]
      Closed-loop clients: C threads, each connecting, optionally sending TEXT,
      reading the first byte (connect -> first byte is the figure), then reading
      to EOF (connect -> EOF is reported too). The targets are interleaved: in
      every round each target gets K connections, targets in rotating order, so
      drift in the machine's load hits all of them alike. W unmeasured
      connections per target first. --gap MS pauses after each connection
      (used when profiling, so connections do not overlap).

  first-byte --port PORT [--send TEXT] [--timeout S]
      One connection; connect -> first byte in ms.

  hold --port PORT --n N --ready-file F --close-file G [--timeout S] [--wave W]
      Opens N connections at once, sends "x\\n" on each and waits until each one
      echoes it back (the application - cat - runs in its container). With W,
      connections that failed are opened again, W at a time, until N are held.
      Writes a JSON status to F once all are up (or the timeout passed), then
      waits for G to exist, closes every connection and exits.

  memstat --cgroup-marker ID --service SVC --app COMM
      From the host: PSS/RSS (smaps_rollup) of the processes of one testbed
      (those whose /proc/PID/cgroup mentions ID): the berth supervisor, the
      sandbox stage processes of SVC's containers, the application processes
      (comm COMM); and memory.usage_in_bytes / memory.kmem.usage_in_bytes of
      berth-SVC.slice.
"""

import argparse
import json
import os
import resource
import selectors
import socket
import sys
import threading
import time


def pct(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def summary(vals):
    s = sorted(vals)
    if not s:
        return {"n": 0}
    return {
        "n": len(s),
        "min": round(s[0], 3),
        "p50": round(pct(s, 50), 3),
        "p90": round(pct(s, 90), 3),
        "p99": round(pct(s, 99), 3),
        "max": round(s[-1], 3),
        "mean": round(sum(s) / len(s), 3),
    }


# ---------------------------------------------------------------- floor server
def floor_server(port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1024)
    while True:
        c, _ = srv.accept()
        try:
            c.sendall(b"hi\n")
        except OSError:
            pass
        c.close()


# ---------------------------------------------------------------- one connection
def one(port, send, timeout):
    """Returns (first_byte_ms, eof_ms, error)."""
    t0 = time.perf_counter_ns()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        return None, None, "connect: %s" % e
    try:
        if send:
            s.sendall(send)
        b = s.recv(4096)
        t1 = time.perf_counter_ns()
        if not b:
            return None, None, "EOF before the first byte"
        while True:
            b = s.recv(65536)
            if not b:
                break
        t2 = time.perf_counter_ns()
        return (t1 - t0) / 1e6, (t2 - t0) / 1e6, None
    except OSError as e:
        return None, None, "%s" % e
    finally:
        s.close()


def run_batch(port, n, conc, send, timeout, gap=0.0):
    """n connections to port from conc closed-loop threads. Returns
    (first_byte list, eof list, errors list, wall seconds)."""
    lock = threading.Lock()
    left = [n]
    fb, eof, errs = [], [], []

    def worker():
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            a, b, e = one(port, send, timeout)
            if gap:
                time.sleep(gap)
            with lock:
                if e:
                    errs.append(e)
                else:
                    fb.append(a)
                    eof.append(b)

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return fb, eof, errs, time.perf_counter() - t0


def latency(args):
    targets = []
    for t in args.target:
        name, port = t.split("=", 1)
        targets.append((name, int(port)))
    send = args.send.encode().decode("unicode_escape").encode() if args.send else b""
    res = {name: {"fb": [], "eof": [], "errors": [], "wall": 0.0, "conns": 0} for name, _ in targets}
    for name, port in targets:
        if args.warmup:
            run_batch(port, args.warmup, args.concurrency, send, args.timeout)
    for r in range(args.rounds):
        order = targets[r % len(targets):] + targets[: r % len(targets)]
        for name, port in order:
            fb, eof, errs, wall = run_batch(port, args.per_round, args.concurrency, send, args.timeout,
                                            args.gap / 1000.0)
            d = res[name]
            d["fb"] += fb
            d["eof"] += eof
            d["errors"] += errs
            d["wall"] += wall
            d["conns"] += args.per_round
    out = {}
    for name, port in targets:
        d = res[name]
        out[name] = {
            "port": port,
            "concurrency": args.concurrency,
            "connections": d["conns"],
            "errors": len(d["errors"]),
            "error_samples": sorted(set(d["errors"]))[:5],
            "first_byte_ms": summary(d["fb"]),
            "eof_ms": summary(d["eof"]),
            "rate_per_s": round(len(d["fb"]) / d["wall"], 1) if d["wall"] else None,
        }
    json.dump(out, sys.stdout)
    print()


def first_byte(args):
    send = args.send.encode().decode("unicode_escape").encode() if args.send else b""
    a, b, e = one(args.port, send, args.timeout)
    json.dump({"first_byte_ms": a, "eof_ms": b, "error": e}, sys.stdout)
    print()


# ---------------------------------------------------------------- hold
def open_wait(port, n, timeout):
    """Opens n connections at once, sends "x\\n" on each, waits for the echo.
    Returns (up sockets, up times in s from the start, failed count, timed-out count)."""
    sel = selectors.DefaultSelector()
    socks = []
    got = {}
    t0 = time.perf_counter()
    failed = 0
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(("127.0.0.1", port))
        if rc not in (0, 115):  # EINPROGRESS
            failed += 1
            s.close()
            continue
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
    up, up_times = [], []
    deadline = t0 + timeout
    open_ = len(socks)
    while open_ and time.perf_counter() < deadline:
        for key, ev in sel.select(timeout=0.5):
            s = key.fileobj
            if ev & selectors.EVENT_WRITE and s not in got:
                try:
                    s.send(b"x\n")
                except OSError:
                    failed += 1
                    open_ -= 1
                    sel.unregister(s)
                    s.close()
                    continue
                got[s] = b""
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                b = s.recv(16)
            except OSError:
                b = b""
            if not b:
                failed += 1
                open_ -= 1
                sel.unregister(s)
                s.close()
                continue
            got[s] += b
            if got[s].endswith(b"\n"):
                up.append(s)
                up_times.append(time.perf_counter() - t0)
                open_ -= 1
                sel.unregister(s)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return up, up_times, failed, open_


def hold(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.n + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))
    t0 = time.perf_counter()
    up, up_times, failed, timed_out = open_wait(args.port, args.n, args.timeout)
    burst = {
        "requested": args.n,
        "up": len(up),
        "failed": failed,
        "timed_out": timed_out,
        "start_all_s": round(max(up_times), 3) if up_times else None,
        "first_up_s": round(min(up_times), 3) if up_times else None,
        "p50_up_s": round(pct(sorted(up_times), 50), 3) if up_times else None,
    }
    # Those that failed are opened again in waves, so that the figures with
    # all N held can still be taken; the time this took is reported apart.
    waves = []
    deadline = t0 + args.timeout
    while len(up) < args.n and args.wave and time.perf_counter() < deadline:
        k = min(args.wave, args.n - len(up))
        w_up, w_times, w_failed, w_to = open_wait(args.port, k, max(1.0, deadline - time.perf_counter()))
        up += w_up
        waves.append({"opened": k, "up": len(w_up), "failed": w_failed, "timed_out": w_to,
                      "took_s": round(max(w_times), 3) if w_times else None})
        if not w_up:
            time.sleep(1.0)
    status = {"burst": burst, "waves": waves, "held": len(up),
              "all_up_s": round(time.perf_counter() - t0, 3)}
    with open(args.ready_file + ".tmp", "w") as f:
        json.dump(status, f)
    os.rename(args.ready_file + ".tmp", args.ready_file)
    while not os.path.exists(args.close_file):
        time.sleep(0.01)
    t_close = time.time()
    for s in up:
        s.close()
    json.dump({"closed_at": t_close, "close_took_s": round(time.time() - t_close, 3)}, sys.stdout)
    print()


# ---------------------------------------------------------------- memstat
def read_kv(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(":")
                parts = v.split()
                if parts and parts[0].isdigit():
                    out[k.strip()] = int(parts[0])
    except OSError:
        pass
    return out


def memstat(args):
    groups = {"supervisor": [], "stage": [], "app": []}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cgroup" % p) as f:
                cg = f.read()
            if args.cgroup_marker not in cg:
                continue
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmd = f.read().split(b"\0")
            with open("/proc/%s/comm" % p) as f:
                comm = f.read().strip()
        except OSError:
            continue
        slice_ = "berth-%s.slice" % args.service
        if cmd[:2] == [b"/usr/bin/berth", b"serve"]:
            groups["supervisor"].append(p)
        elif slice_ in cg and (comm in ("berth-stage", "berth-init") or
                               (len(cmd) > 1 and cmd[1] in (b"sandbox-stage", b"sandbox-zygote"))):
            groups["stage"].append(p)
        elif slice_ in cg and comm == args.app:
            groups["app"].append(p)
    out = {}
    for g, pids in groups.items():
        pss = rss = 0
        for p in pids:
            r = read_kv("/proc/%s/smaps_rollup" % p)
            pss += r.get("Pss", 0)
            rss += r.get("Rss", 0)
        out[g] = {"count": len(pids), "pss_kib": pss, "rss_kib": rss}
    if groups["supervisor"]:
        st = read_kv("/proc/%s/status" % groups["supervisor"][0])
        out["supervisor"].update({"vmrss_kib": st.get("VmRSS"), "vmhwm_kib": st.get("VmHWM"),
                                  "threads": st.get("Threads"), "host_pid": int(groups["supervisor"][0])})
    # The slice's charged memory, v1 memory controller (user + kernel memory).
    base = "/sys/fs/cgroup/memory"
    found = None
    for d in os.listdir(base):
        if args.cgroup_marker in d:
            for root, dirs, _ in os.walk(os.path.join(base, d)):
                if os.path.basename(root) == "berth-%s.slice" % args.service:
                    found = root
                    break
                dirs[:] = [x for x in dirs if not x.endswith(".scope")]
            break
    if found:
        def rd(n):
            try:
                with open(os.path.join(found, n)) as f:
                    return int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                return None
        stat = {}
        try:
            with open(os.path.join(found, "memory.stat")) as f:
                for line in f:
                    k, v = line.split()
                    stat[k] = int(v)
        except OSError:
            pass
        out["slice"] = {
            "path": found,
            "usage_bytes": rd("memory.usage_in_bytes"),
            "kmem_usage_bytes": rd("memory.kmem.usage_in_bytes"),
            "total_rss_bytes": stat.get("total_rss"),
            "total_cache_bytes": stat.get("total_cache"),
            "total_shmem_bytes": stat.get("total_shmem"),
        }
    out["meminfo_kib"] = {k: v for k, v in read_kv("/proc/meminfo").items()
                          if k in ("MemTotal", "MemAvailable", "Slab", "SUnreclaim", "KernelStack", "PageTables")}
    json.dump(out, sys.stdout)
    print()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("floor-server")
    p.add_argument("port", type=int)
    p = sub.add_parser("latency")
    p.add_argument("--target", action="append", required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--send", default="")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--gap", type=float, default=0.0, help="ms of pause after each connection (profiling)")
    p = sub.add_parser("first-byte")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--send", default="")
    p.add_argument("--timeout", type=float, default=10.0)
    p = sub.add_parser("hold")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--close-file", required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--wave", type=int, default=0, help="re-open failed connections in waves of this many")
    p = sub.add_parser("memstat")
    p.add_argument("--cgroup-marker", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--app", required=True)
    a = ap.parse_args()
    if a.cmd == "floor-server":
        floor_server(a.port)
    elif a.cmd == "latency":
        latency(a)
    elif a.cmd == "first-byte":
        first_byte(a)
    elif a.cmd == "hold":
        hold(a)
    elif a.cmd == "memstat":
        memstat(a)


if __name__ == "__main__":
    main()
