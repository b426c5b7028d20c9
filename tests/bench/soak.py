#!/usr/bin/env python3
"""The soak benchmark's client, sampler and plotter (driven by tests/bench/soak.sh).

  soak.py drive --pid PID --port P [--port P2] --n N --threads T --csv OUT.csv
      N inetd connections (connect, read to EOF) from T closed-loop threads,
      spread over the ports; once a second (and at the end) one CSV row with
      the connections done so far and the supervisor's (host pid PID) RSS,
      open descriptors and threads. A summary in JSON on stdout.

  soak.py plot --csv OUT.csv --drive DRIVE.json --extra EXTRA.json --png OUT.png --json OUT.json
      the plot (RSS, descriptors, threads against containers served) and the
      figures: warm-up, then flat or not.
"""
import argparse
import collections
import csv
import json
import os
import socket
import sys
import threading
import time


def status(pid):
    """VmRSS, RssAnon (KiB), Threads of /proc/PID/status; None if gone."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "Threads", "VmHWM"):
                    out[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return out


def nfds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("MemAvailable", "Slab", "SUnreclaim"):
                out[k] = int(v.split()[0])
    return out


def one(port, timeout):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        return "connect: %s" % e.__class__.__name__
    try:
        got = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            got += b
        return None if got == b"hi\n" else "unexpected answer %r" % got[:20]
    except OSError as e:
        return "recv: %s" % e.__class__.__name__
    finally:
        s.close()


def drive(args):
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "err": 0}
    errors = collections.Counter()
    stop = threading.Event()

    def worker(i):
        port = args.port[i % len(args.port)]
        while not stop.is_set():
            with lock:
                if state["next"] >= args.n:
                    return
                state["next"] += 1
            e = one(port, args.timeout)
            with lock:
                if e:
                    state["err"] += 1
                    errors[e] += 1
                else:
                    state["ok"] += 1

    fields = ["t_s", "sent", "served", "errors", "rss_kib", "rss_anon_kib", "fds", "threads",
              "mem_available_kib", "slab_kib", "sunreclaim_kib"]
    f = open(args.csv, "w", newline="") if args.csv else None
    w = csv.writer(f) if f else None
    if w:
        w.writerow(fields)
    t0 = time.monotonic()
    gone = False

    def sample():
        nonlocal gone
        st = status(args.pid)
        fd = nfds(args.pid)
        if st is None or fd is None:
            gone = True
            return
        mi = meminfo()
        with lock:
            done, ok, err = state["ok"] + state["err"], state["ok"], state["err"]
        if w:
            w.writerow(["%.2f" % (time.monotonic() - t0), done, ok, err, st.get("VmRSS"), st.get("RssAnon"),
                        fd, st.get("Threads"), mi.get("MemAvailable"), mi.get("Slab"), mi.get("SUnreclaim")])
            f.flush()
        return done

    sample()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.threads)]
    for t in threads:
        t.start()
    last_log = 0.0
    while any(t.is_alive() for t in threads):
        time.sleep(args.interval)
        done = sample()
        if gone:
            stop.set()
            print("soak: the supervisor (pid %d) is gone" % args.pid, file=sys.stderr)
            break
        now = time.monotonic() - t0
        if args.progress and now - last_log >= args.progress:
            last_log = now
            print("soak: %d/%d connections, %d errors, %.0f/s" % (done, args.n, state["err"], done / now),
                  file=sys.stderr)
    for t in threads:
        t.join(timeout=args.timeout + 5)
    wall = time.monotonic() - t0
    sample()
    if f:
        f.close()
    json.dump({"requested": args.n, "served": state["ok"], "errors": state["err"],
               "error_kinds": dict(errors.most_common(10)), "threads": args.threads, "ports": args.port,
               "wall_s": round(wall, 1), "per_s": round((state["ok"] + state["err"]) / wall, 1) if wall else None,
               "supervisor_gone": gone}, sys.stdout)
    print()
    return 1 if gone else 0


# ---------------------------------------------------------------- plot
def median(v):
    v = sorted(v)
    n = len(v)
    if not n:
        return None
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def fit(xs, ys):
    """Least-squares slope of ys over xs."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def plot(args):
    rows = []
    with open(args.csv) as f:
        for r in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", "None") else None) for k, v in r.items()})
    if len(rows) < 4:
        print("soak: too few samples (%d)" % len(rows), file=sys.stderr)
        return 2
    drive_sum = json.load(open(args.drive)) if args.drive else {}
    extra = json.load(open(args.extra)) if args.extra else {}
    total = rows[-1]["sent"]
    warm_until = total * args.warmup
    after = [r for r in rows if r["sent"] >= warm_until]
    # Windows of the same width (5% of the run) just after warm-up and at the end.
    win = max(total * 0.05, 1)
    early = [r for r in after if r["sent"] <= warm_until + win] or after[:3]
    late = [r for r in rows if r["sent"] >= total - win] or rows[-3:]
    figs = {}
    for key in ("rss_kib", "rss_anon_kib", "fds", "threads", "sunreclaim_kib"):
        xs = [r["sent"] for r in after if r[key] is not None]
        ys = [r[key] for r in after if r[key] is not None]
        allv = [r[key] for r in rows if r[key] is not None]
        figs[key] = {
            "start": allv[0],
            "after_warmup_median": median([r[key] for r in early if r[key] is not None]),
            "end_median": median([r[key] for r in late if r[key] is not None]),
            "max_after_warmup": max(ys) if ys else None,
            "max_during_warmup": max([r[key] for r in rows if r["sent"] < warm_until and r[key] is not None],
                                     default=None),
            "slope_per_10k": round(fit(xs, ys) * 10000, 3),
            "final": allv[-1],
        }
    # Flat: medians over a window just after warm-up and over the last one
    # (the final sample, taken once the clients are done, left out: it is the
    # idle supervisor) differ by no more than a tolerance: RSS 512 KiB or 5%,
    # descriptors 4 and threads 1 (those two move with the containers in
    # flight, up to 2 x 64 here, not with the containers served); and the
    # idle supervisor holds no more descriptors or threads at the end than at
    # the start.
    late_run = [r for r in late if r is not rows[-1]] or late
    tol = {"rss_kib": lambda v: max(512, 0.05 * v), "fds": lambda v: 4, "threads": lambda v: 1}
    verdict = {"warmup_connections": int(warm_until)}
    flat = True
    for key, t in tol.items():
        a = figs[key]["after_warmup_median"]
        b = median([r[key] for r in late_run if r[key] is not None])
        figs[key]["end_median"] = b
        ok = b - a <= t(a)
        verdict["%s_growth_after_warmup" % key] = b - a
        verdict["flat_%s" % key] = ok
        flat = flat and ok
    for key in ("fds", "threads"):
        ok = figs[key]["final"] <= figs[key]["start"]
        verdict["idle_%s_start_end" % key] = [figs[key]["start"], figs[key]["final"]]
        verdict["idle_%s_not_above_start" % key] = ok
        flat = flat and ok
    verdict["flat"] = flat
    out = {"drive": drive_sum, "figures": figs, "verdict": verdict, "samples": len(rows)}
    out.update(extra)
    # The samples themselves, thinned to at most ~600 rows, so the JSON stays small.
    step = max(1, len(rows) // 600)
    keep = rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])
    out["series"] = {"columns": ["t_s", "sent", "served", "rss_kib", "fds", "threads", "sunreclaim_kib"],
                     "rows": [[r["t_s"], int(r["sent"]), int(r["served"]), r["rss_kib"], r["fds"], r["threads"],
                               r["sunreclaim_kib"]] for r in keep]}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = [r["served"] for r in rows]
    fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax[0].plot(x, [r["rss_kib"] / 1024 for r in rows], lw=0.8, label="VmRSS")
    ax[0].plot(x, [r["rss_anon_kib"] / 1024 for r in rows], lw=0.8, label="RssAnon (heap, stacks)")
    ax[0].set_ylabel("MiB")
    ax[0].set_ylim(bottom=0)
    ax[0].legend(loc="lower right")
    ax[0].set_title("berth serve, %d inetd connections: %s\nVmRSS %.1f MiB after warm-up, %.1f MiB at the end"
                    % (int(total), "flat after warm-up" if verdict["flat"] else "NOT flat",
                       figs["rss_kib"]["after_warmup_median"] / 1024, figs["rss_kib"]["end_median"] / 1024))
    ax[1].plot(x, [r["fds"] for r in rows], lw=0.8, color="tab:green")
    ax[1].set_ylabel("open descriptors")
    ax[1].set_ylim(bottom=0)
    ax[2].plot(x, [r["threads"] for r in rows], lw=0.8, color="tab:red")
    ax[2].set_ylabel("threads")
    ax[2].set_ylim(bottom=0)
    ax[2].set_xlabel("containers served")
    for a in ax:
        a.axvline(warm_until, color="grey", ls=":", lw=0.8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    print(json.dumps(verdict))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("drive")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--port", type=int, action="append", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--csv")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--progress", type=float, default=0.0, help="log progress every this many seconds")
    p = sub.add_parser("plot")
    p.add_argument("--csv", required=True)
    p.add_argument("--drive")
    p.add_argument("--extra")
    p.add_argument("--png", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the run counted as warm-up")
    a = ap.parse_args()
    return drive(a) if a.cmd == "drive" else plot(a)


if __name__ == "__main__":
    sys.exit(main())
