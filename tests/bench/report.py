#!/usr/bin/python3
"""Assemble the raw results of tests/bench/run.sh into docs/benchmarks.json and
render docs/benchmarks.md from it.

    report.py RESULTS_DIR OUT_DIR      # what run.sh does at its end
    report.py --render OUT_DIR         # re-render the .md from an existing .json
"""

import json
import os
import re
import statistics
import sys

# ---------------------------------------------------------------- helpers


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def pct(vals, p):
    s = sorted(v for v in vals if v is not None)
    if not s:
        return None
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def f(v, unit="", nd=1):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return ("%." + str(nd) + "f%s") % (v, unit)
    return "%s%s" % (v, unit)


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def slab(path):
    out = {}
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(("slabinfo", "#")):
                    continue
                p = line.split()
                if len(p) > 4:
                    out[p[0]] = int(p[2]) * int(p[3])   # num_objs * objsize
    except OSError:
        pass
    return out


def smaps_txt(path):
    rows = []
    try:
        with open(path) as fh:
            for line in fh:
                kib, _, name = line.rstrip("\n").partition("\t")
                rows.append({"rss_kib": int(kib), "mapping": name})
    except (OSError, ValueError):
        pass
    return rows


# ---------------------------------------------------------------- assemble


def parallel_summary(pairs):
    """b, both variants at once: the figure and its spread."""
    return {"wrk": "two wrk -t1 -c8 --latency at the same time, one per variant",
            "rounds": pairs,
            # wrk runs the same time in every round: total requests over all rounds
            "ratio_total": ratio(sum(p["berth"].get("requests") or 0 for p in pairs),
                                 sum(p["direct"].get("requests") or 0 for p in pairs)),
            "ratio_median": med([p["ratio"] for p in pairs]),
            "ratio_min": min((p["ratio"] for p in pairs if p["ratio"] is not None), default=None),
            "ratio_max": max((p["ratio"] for p in pairs if p["ratio"] is not None), default=None),
            "berth_rps_mean": sum(p["berth"].get("rps") or 0 for p in pairs) / max(1, len(pairs)),
            "direct_rps_mean": sum(p["direct"].get("rps") or 0 for p in pairs) / max(1, len(pairs)),
            "berth_rps_median": med([p["berth"].get("rps") for p in pairs]),
            "direct_rps_median": med([p["direct"].get("rps") for p in pairs]),
            "berth_p99_median": med([p["berth"].get("p99_ms") for p in pairs]),
            "direct_p99_median": med([p["direct"].get("p99_ms") for p in pairs])}



def assemble_f(res, raw):
    """f: first byte after a frozen idle period; memory frozen vs running."""
    samples, running, twin, errors = [], [], [], []
    for line in open(raw):
        k, _, js = line.partition(" ")
        try:
            r = json.loads(js)
        except ValueError:
            continue
        if r.get("error"):
            errors.append("%s: %s" % (k, r["error"]))
        elif k == "frozen":
            samples.append(r["first_byte_ms"])
        elif k == "running":
            running.append(r["first_byte_ms"])
        elif k == "twin":
            twin.append(r["first_byte_ms"])
    mem = {}
    for state in ("frozen", "running", "twin"):
        rows = []
        for name in sorted(os.listdir(res)):
            if re.match(r"f_mem_%s_\d+\.json$" % state, name):
                m = load(os.path.join(res, name), {})
                rows.append({"state": m.get("state"), "unit": (m.get("scope") or {}).get("unit"),
                             "memory_current_bytes": (m.get("scope") or {}).get("memory_current_bytes"),
                             "app_rss_kib": (m.get("app") or {}).get("rss_kib"),
                             "app_pss_kib": (m.get("app") or {}).get("pss_kib"),
                             "app_count": (m.get("app") or {}).get("count"),
                             "stage_pss_kib": (m.get("stage") or {}).get("pss_kib"),
                             "slice_usage_bytes": (m.get("slice") or {}).get("usage_bytes")})
        mem[state] = {"samples": rows,
                      "median": {k: med([r[k] for r in rows]) for k in
                                 ("memory_current_bytes", "app_rss_kib", "app_pss_kib", "stage_pss_kib",
                                  "slice_usage_bytes")},
                      "states_seen": sorted(set(str(r["state"]) for r in rows)),
                      "units_seen": sorted(set(str(r["unit"]) for r in rows))}
    summ = lambda v: {"n": len(v), "p50": med(v), "p90": pct(v, 90), "min": min(v) if v else None,
                      "max": max(v) if v else None}
    return {"samples_ms": samples, "running_samples_ms": running, "twin_samples_ms": twin, "errors": errors,
            "summary": summ(samples), "running_summary": summ(running), "twin_summary": summ(twin),
            "memory": mem, "list": load(os.path.join(res, "f_list.json"), {}),
            "journal": load(os.path.join(res, "f_journal.json"), {})}


def assemble(res):
    d = {"machine": load(os.path.join(res, "machine.json"), {}),
         "run": load(os.path.join(res, "end.json"), {})}

    # a
    a = {}
    for c in (1, 8):
        r = load(os.path.join(res, "a_c%d.json" % c))
        if r:
            a["c%d" % c] = r
    if a:
        d["a"] = a

    # b
    rounds = []
    for name in sorted(os.listdir(res)):
        m = re.match(r"b_(direct|berth)_(\d+)\.json$", name)
        if m:
            r = load(os.path.join(res, name), {})
            r.update({"variant": m.group(1), "round": int(m.group(2))})
            rounds.append(r)
    pairs = []
    for name in sorted(os.listdir(res)):
        m = re.match(r"bp_berth_(\d+)\.json$", name)
        if m:
            rb = load(os.path.join(res, name), {})
            rd = load(os.path.join(res, "bp_direct_%s.json" % m.group(1)), {})
            pairs.append({"round": int(m.group(1)), "berth": rb, "direct": rd,
                          "ratio": ratio(rb.get("rps"), rd.get("rps"))})
    pairs.sort(key=lambda p: p["round"])
    if rounds:
        summ = {}
        for v in ("direct", "berth"):
            rr = [r for r in rounds if r["variant"] == v]
            summ[v] = {"rps_median": med([r.get("rps") for r in rr]),
                       "p99_ms_median": med([r.get("p99_ms") for r in rr]),
                       "p50_ms_median": med([r.get("p50_ms") for r in rr]),
                       "rounds": len(rr),
                       "errors": sum(1 for r in rr if r.get("socket_errors") or r.get("non2xx"))}
        d["b"] = {"wrk": "wrk -t2 -c16 --latency, HTTP/1.1 keep-alive, GET / (index.html)",
                  "rounds": rounds, "summary": summ}
        if pairs:
            d["b"]["parallel"] = parallel_summary(pairs)

    # c
    raw = os.path.join(res, "c_raw.txt")
    if os.path.exists(raw):
        samples = {"berthwarm": [], "berth": [], "ssa": [], "direct": []}
        errors = []
        for line in open(raw):
            k, _, js = line.partition(" ")
            try:
                r = json.loads(js)
            except ValueError:
                continue
            if r.get("error"):
                errors.append("%s: %s" % (k, r["error"]))
            elif k in samples:
                samples[k].append(r["first_byte_ms"])
        summ = {k: {"n": len(v), "p50": med(v), "p90": pct(v, 90), "min": min(v) if v else None,
                    "max": max(v) if v else None} for k, v in samples.items()}
        d["c"] = {"samples_ms": samples, "summary": summ, "errors": errors}

    # f
    raw = os.path.join(res, "f_raw.txt")
    if os.path.exists(raw):
        d["f"] = assemble_f(res, raw)

    # d
    if os.path.exists(os.path.join(res, "d_held.json")):
        idle = load(os.path.join(res, "d_mem_idle.json"), {})
        held = load(os.path.join(res, "d_mem_held.json"), {})
        after = load(os.path.join(res, "d_mem_after.json"), {})
        up = load(os.path.join(res, "d_hold_up.json"), {})
        n = (up.get("held") or 0)
        dd = {"requested": (up.get("burst") or {}).get("requested"),
              "hold_client": up,
              "held": load(os.path.join(res, "d_held.json"), {}),
              "teardown": load(os.path.join(res, "d_teardown.json"), {}),
              "before": load(os.path.join(res, "d_before.json"), {}),
              "after": load(os.path.join(res, "d_after.json"), {}),
              "mem_idle": idle, "mem_held": held, "mem_after": after,
              "app_alone": load(os.path.join(res, "d_app_alone.json"), {}),
              "supervisor_smaps_held": smaps_txt(os.path.join(res, "d_supervisor_smaps.txt"))}
        try:
            dd["failures"] = [l.strip() for l in open(os.path.join(res, "d_failures.txt")) if l.strip()]
        except OSError:
            dd["failures"] = []
        s0, s1 = slab(os.path.join(res, "d_slab_idle.txt")), slab(os.path.join(res, "d_slab_held.txt"))
        deltas = sorted(((s1.get(k, 0) - s0.get(k, 0), k) for k in set(s0) | set(s1)), reverse=True)
        dd["slab_growth_top"] = [{"cache": k, "bytes": b} for b, k in deltas[:10] if b > 0]
        # derived figures
        if n and held.get("stage"):
            mi0, mi1 = idle.get("meminfo_kib", {}), held.get("meminfo_kib", {})
            kern = {k: (mi1.get(k, 0) - mi0.get(k, 0)) for k in ("SUnreclaim", "PageTables", "KernelStack")}
            stage_pss = held["stage"]["pss_kib"] / n
            app_pss = held["app"]["pss_kib"] / n
            kern_per = sum(kern.values()) / n
            dd["per_container_kib"] = {
                "containers": n,
                "stage_processes_pss": round(stage_pss, 1),
                "app_pss": round(app_pss, 1),
                "kernel_delta_total": round(kern_per, 1),
                "kernel_delta": {k: round(v / n, 1) for k, v in kern.items()},
                "beyond_app": round(stage_pss + kern_per, 1),
                "memavailable_drop": round((mi0.get("MemAvailable", 0) - mi1.get("MemAvailable", 0)) / n, 1),
                "slice_charged": round((held.get("slice") or {}).get("usage_bytes", 0) / 1024 / n, 1),
            }
        sup = held.get("supervisor", {})
        dd["supervisor"] = {"idle_vmrss_kib": idle.get("supervisor", {}).get("vmrss_kib"),
                            "held_vmrss_kib": sup.get("vmrss_kib"),
                            "peak_vmhwm_kib": sup.get("vmhwm_kib"),
                            "after_vmrss_kib": after.get("supervisor", {}).get("vmrss_kib"),
                            "threads": sup.get("threads")}
        d["d"] = dd

    # profile
    prof = {}
    for k, fn in (("timeline", "prof_timeline.json"), ("timeline_wake", "prof_timeline_wake.json"),
                  ("timeline_wakewarm", "prof_timeline_wakewarm.json"), ("timeline_ssa", "prof_timeline_ssa.json"),
                  ("cgattach", "prof_cgattach.json"),
                  ("cpu_berth_warm0", "prof_cpu_berth_warm0.json"), ("cpu_berth_warm8", "prof_cpu_berth_warm8.json"),
                  ("cpu_systemd_bare", "prof_cpu_systemd_bare.json"),
                  ("cpu_systemd_sandboxed", "prof_cpu_systemd_sandboxed.json"),
                  ("client", "prof_client.json"), ("client_wake", "prof_client_wake.json")):
        v = load(os.path.join(res, fn))
        if v:
            prof[k] = v
    if prof:
        d["profile"] = prof
    d["targets"] = targets(d)
    return d


# ---------------------------------------------------------------- targets

# What the contract (shared/SPEC.md, "What a container is") makes every
# container cost, in kernel work sorted by cpuprof.py (the first five of its
# WORK), plus the application's exec, which bare pays too.
CONTRACT_WORK = ("network namespace made", "mount, pid, ipc, uts, cgroup namespaces made",
                 "namespaces released at exit",
                 "mount tree (tmpfs root, binds, /proc, pivot_root, detached trees)",
                 "loopback brought up", "application's exec")
# The processes whose whole CPU is the contract's or the application's in
# berth's run: the scope (systemd, the bus, logind watching it) and the
# application after its exec; journald is taken at the lower of the two runs
# (both send the application's stderr there; berth's own lines are berth's).
FLOOR_PROCS = ("testbed: systemd", "testbed: dbus-daemon", "testbed: systemd-logind", "testbed: application")


def cpu_floor(berth, bare):
    """The CPU per connection no sandbox that meets the contract can go
    below in berth's run, next to bare's total: a dict of its parts, or
    None without call chains (older runs)."""
    if not berth or not bare or not berth.get("work"):
        return None

    def grp(v, g):
        return next((x["cpu_ms_per_connection"] for x in v.get("groups", []) if x["group"] == g), 0.0)

    parts = [(g[len("testbed: "):], grp(berth, g)) for g in FLOOR_PROCS]
    parts.append(("systemd-journal (the lower of berth's run and bare's)",
                  min(grp(berth, "testbed: systemd-journal"), grp(bare, "testbed: systemd-journal"))))
    for k in CONTRACT_WORK:
        parts.append(("kernel: " + k, sum(w["cpu_ms_per_connection"] for w in berth["work"] if w["work"] == k
                                          and w["group"] not in FLOOR_PROCS)))
    total = sum(v for _, v in parts)
    return {"parts": parts, "floor": total, "bare": bare.get("testbed_cpu_ms_per_connection"),
            "berth": berth.get("testbed_cpu_ms_per_connection")}


def floor_verdict(fl):
    """One sentence: what the floor leaves for berth's own work."""
    own = f((fl["berth"] or 0) - fl["floor"], "", 2)
    if not fl["bare"]:
        return "berth's own work beyond the floor: %s ms." % own
    if fl["floor"] >= fl["bare"]:
        return ("The floor is %sx bare's total: no sandbox that meets the contract could use less CPU per "
                "connection than bare `Accept=yes` in this run, whatever it did in user space; berth's own work "
                "beyond the floor: %s ms." % (f(fl["floor"] / fl["bare"], "", 2), own))
    return ("The floor is %sx bare's total: to be below bare, everything berth does beyond it (%s ms per "
            "connection in this run: its supervisor, zygote and PID 1 in user space, forks, exits, page faults, "
            "seccomp) would have to fit in %s ms."
            % (f(fl["floor"] / fl["bare"], "", 2), own, f(fl["bare"] - fl["floor"], "", 2)))


def targets(d):
    rows = []
    a = d.get("a", {})
    for c in ("c1", "c8"):
        r = a.get(c)
        if not r:
            continue
        bare = r.get("systemd_bare", {}).get("first_byte_ms", {}).get("p50")
        sbx = r.get("systemd_sandboxed", {}).get("first_byte_ms", {}).get("p50")
        for b, label in (("berth_warm0", "warm = 0"), ("berth_warm8", "warm = 8")):
            fb = r.get(b, {}).get("first_byte_ms", {})
            p50, p99 = fb.get("p50"), fb.get("p99")
            conc = c[1:]
            rows.append({"id": "a", "figure": "a. inetd cold start, %s client%s, berth %s: p50 vs systemd bare Accept=yes p50"
                         % (conc, "s" if conc != "1" else "", label),
                         "berth": p50, "anchor": bare, "unit": "ms", "ratio": ratio(p50, bare),
                         "target": "<= 1.0x", "met": None if ratio(p50, bare) is None else ratio(p50, bare) <= 1.0})
            rows.append({"id": "a", "figure": "a. ... %s client%s, berth %s: p50 vs systemd sandboxed Accept=yes p50"
                         % (conc, "s" if conc != "1" else "", label),
                         "berth": p50, "anchor": sbx, "unit": "ms", "ratio": ratio(p50, sbx),
                         "target": "<= 0.25x", "met": None if ratio(p50, sbx) is None else ratio(p50, sbx) <= 0.25})
            rows.append({"id": "a", "figure": "a. ... %s client%s, berth %s: p99 vs its own p50"
                         % (conc, "s" if conc != "1" else "", label),
                         "berth": p99, "anchor": p50, "unit": "ms", "ratio": ratio(p99, p50),
                         "target": "<= 2.0x", "met": None if ratio(p99, p50) is None else ratio(p99, p50) <= 2.0})
        # The same tail measure of the anchor, in the same run: how far this
        # machine's noise alone spreads a closed-loop client's latencies.
        bfb = r.get("systemd_bare", {}).get("first_byte_ms", {})
        if bfb.get("p50") and bfb.get("p99"):
            conc = c[1:]
            rows.append({"id": "a-info", "figure": "a. ... %s client%s, systemd bare Accept=yes (context: the anchor's own tail): p99 vs its own p50"
                         % (conc, "s" if conc != "1" else ""),
                         "berth": bfb["p99"], "anchor": bfb["p50"], "unit": "ms", "ratio": ratio(bfb["p99"], bfb["p50"]),
                         "target": "-", "met": None})
    prof = d.get("profile", {})
    cb, cs = prof.get("cpu_berth_warm0"), prof.get("cpu_systemd_bare")
    if cb and cs:
        tb, ts = cb.get("testbed_cpu_ms_per_connection"), cs.get("testbed_cpu_ms_per_connection")
        rows.append({"id": "cpu", "figure": "profile. testbed CPU per connection, 8 clients: berth warm = 0 vs "
                     "systemd bare Accept=yes", "berth": tb, "anchor": ts, "unit": "ms", "ratio": ratio(tb, ts),
                     "target": "<= 1.0x", "met": None if ratio(tb, ts) is None else ratio(tb, ts) <= 1.0})
        fl = cpu_floor(cb, cs)
        if fl:
            rows.append({"id": "cpu-info", "figure": "profile. ... (context: the contract's floor) what the scope, "
                         "journald, the application and the namespaces and mounts every container must have cost "
                         "in berth's run, vs systemd bare's total", "berth": fl["floor"], "anchor": ts, "unit": "ms",
                         "ratio": ratio(fl["floor"], ts), "target": "-", "met": None})
    b = d.get("b", {}).get("summary")
    bp = d.get("b", {}).get("parallel")
    if bp:
        rb, rd, rr = bp["berth_rps_mean"], bp["direct_rps_mean"], bp.get("ratio_total")
        rows.append({"id": "b", "figure": "b. listen mode, warm: wrk requests/s, lighttpd in berth vs socket-activated by "
                     "systemd, both at once (mean req/s over the rounds; round ratios %s-%s)"
                     % (f(bp.get("ratio_min"), "", 2), f(bp.get("ratio_max"), "", 2)),
                     "berth": rb, "anchor": rd, "unit": "req/s", "ratio": rr, "target": ">= 0.98x",
                     "met": None if rr is None else rr >= 0.98})
    if b:
        rb, rd = b["berth"]["rps_median"], b["direct"]["rps_median"]
        rows.append({"id": "b" if not bp else "b-info",
                     "figure": "b. ... one after the other, alternating (median of rounds)%s" % ("; context" if bp else ""),
                     "berth": rb, "anchor": rd, "unit": "req/s", "ratio": ratio(rb, rd), "target": ">= 0.98x" if not bp else "-",
                     "met": None if bp or ratio(rb, rd) is None else ratio(rb, rd) >= 0.98})
        pb, pd = (bp["berth_p99_median"], bp["direct_p99_median"]) if bp else (b["berth"]["p99_ms_median"], b["direct"]["p99_ms_median"])
        rows.append({"id": "b-info", "figure": "b. ... wrk p99 latency (no target; shown for the issue)",
                     "berth": pb, "anchor": pd, "unit": "ms", "ratio": ratio(pb, pd), "target": "-", "met": None})
    c = d.get("c", {}).get("summary")
    if c:
        ws = c["ssa"]["p50"]
        for key, label in (("berthwarm", "c. wake from idle, berth warm = 1: first byte after teardown (p50) vs lighttpd's own start-up (p50)"),
                           ("berth", "c. ... berth warm = 0 (built on demand): first byte after teardown (p50) vs lighttpd's own start-up (p50)")):
            if key not in c or not c[key].get("n"):
                continue
            wb = c[key]["p50"]
            rows.append({"id": "c", "figure": label,
                         "berth": wb, "anchor": ws, "unit": "ms", "ratio": ratio(wb, ws), "target": "<= start-up + 5 ms",
                         "met": None if wb is None or ws is None else wb <= ws + 5.0,
                         "gap_ms": None if wb is None or ws is None else wb - ws})
    fz = d.get("f")
    if fz:
        fp = fz["summary"]["p50"]
        cs = d.get("c", {}).get("summary", {})
        for key, label in (("ssa", "lighttpd's own start-up (p50, c)"), ("berthwarm", "berth warm = 1 after a stop (p50, c)"),
                           ("berth", "berth warm = 0 after a stop (p50, c)")):
            an = cs.get(key, {}).get("p50")
            if an is None:
                continue
            rows.append({"id": "f-info", "figure": "f. frozen, not stopped: first byte after a frozen idle period (p50) vs %s"
                         % label, "berth": fp, "anchor": an, "unit": "ms", "ratio": ratio(fp, an), "target": "-",
                         "met": None})
        mf = fz["memory"]["frozen"]["median"].get("memory_current_bytes")
        mr = (fz["memory"].get("twin") or fz["memory"]["running"])["median"].get("memory_current_bytes")
        if mf is not None and mr is not None:
            rows.append({"id": "f-info", "figure": "f. ... memory the frozen lighttpd's scope keeps (MemoryCurrent) vs the same one running",
                         "berth": mf / 1048576.0, "anchor": mr / 1048576.0, "unit": "MB", "ratio": ratio(mf, mr),
                         "target": "-", "met": None})
    dd = d.get("d")
    if dd:
        peak = dd["supervisor"]["peak_vmhwm_kib"]
        rows.append({"id": "d", "figure": "d. %s containers held: supervisor RSS (peak, VmHWM)" % dd["hold_client"].get("held"),
                     "berth": peak / 1024.0 if peak else None, "anchor": 15.0, "unit": "MB",
                     "ratio": ratio(peak / 1024.0 if peak else None, 15.0), "target": "<= 15 MB",
                     "met": None if not peak else peak / 1024.0 <= 15.0})
        burst = dd["hold_client"].get("burst", {})
        rows.append({"id": "d", "figure": "d. all %s connections opened at once: containers started" % burst.get("requested"),
                     "berth": burst.get("up"), "anchor": burst.get("requested"), "unit": "",
                     "ratio": ratio(burst.get("up"), burst.get("requested")), "target": "all (implied)",
                     "met": burst.get("up") == burst.get("requested")})
        b0, b1 = dd.get("before", {}), dd.get("after", {})
        clean = bool(b1) and b1.get("hold_units_any_state") == 0 and all(
            b1.get(k) == b0.get(k) for k in ("mounts_pid1", "mounts_berth", "net_namespaces", "mnt_namespaces")) \
            and b1.get("staging_entries") == 0
        rows.append({"id": "d", "figure": "d. after teardown: no berth-hold-* unit, no extra mount, no extra net/mnt namespace",
                     "berth": "clean" if clean else "leftovers", "anchor": None, "unit": "", "ratio": None,
                     "target": "nothing left", "met": clean})
    return rows


# ---------------------------------------------------------------- render


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(out)


def yesno(m):
    return "n/a" if m is None else ("**yes**" if m else "**no**")


def phase_table(tl):
    rows = []
    for tgt, v in tl.items():
        label = "%s (%s conns)" % (tgt, v.get("connections"))
        for i, p in enumerate(v.get("phases", [])):
            rows.append([label if i == 0 else "", p["phase"], f(p["p50_ms"], nd=2), f(p["p90_ms"], nd=2)])
    return table(["variant", "phase", "p50 ms", "p90 ms"], rows)


def cpu_verdict(berth, bare):
    """What the CPU table says about berth warm = 0 against bare Accept=yes,
    round by round: a difference is claimed only where every round agrees."""
    b, s = berth.get("rounds") or [], bare.get("rounds") or []
    tb, ts = berth.get("testbed_cpu_ms_per_connection"), bare.get("testbed_cpu_ms_per_connection")
    if not (tb and ts):
        return ""
    head = "The testbed total for berth warm = 0 is %sx bare `Accept=yes`'s" % f(tb / ts, "", 2)
    if not (b and s):
        return head + " (one round: no measure of the drift between rounds)."
    rounds = " (rounds: berth %s, bare %s ms)" % (" / ".join(f(x, "", 1) for x in b), " / ".join(f(x, "", 1) for x in s))
    if max(b) < min(s):
        return head + rounds + ": below it in every round."
    if min(b) > max(s):
        return head + rounds + ": above it in every round."
    return head + rounds + ": the rounds overlap, so this run does not tell the two apart."


def phase(tl, tgt, name_start):
    for p in tl.get(tgt, {}).get("phases", []):
        if p["phase"].startswith(name_start):
            return p["p50_ms"]
    return None


def render_f(fz, cs):
    """f: frozen instead of stopped, next to c's variants of the same run."""
    L = []
    w = L.append
    s = fz["summary"]
    w("## f. frozen instead of stopped\n")
    w("- **berth, frozen**: the same lighttpd service with `freeze_after = \"1s\"` and `idle_timeout = \"10min\"`: "
      "idle for 1 s, its container is frozen through its scope's cgroup freezer and stays; the next connection "
      "thaws the same container. The script polls `berth list --json` until the service's one container shows "
      "`frozen`, then one HTTP/1.0 request: connect to first byte of the reply. Then it opens a silent connection, "
      "which keeps the thawed container running, measures the memory running and sends one more request to the running container (the same path without a thaw); it closes it and the next "
      "sample starts with the wait for `frozen`.")
    w("- **twin**: the same lighttpd service without `freeze_after` (`idle_timeout = \"10min\"`), started at the "
      "beginning of f and running idle throughout, with no connection open when its memory is read (each sample, "
      "next to the frozen one); one request to it per sample.")
    w("- The other rows are c's, measured in the same run (when c ran).\n")
    anc = cs.get("ssa", {}).get("p50")
    anc2 = cs.get("direct", {}).get("p50")
    rows = [["berth, frozen -> thawed (freeze_after)", s["n"], f(s["p50"], nd=2), f(s["p90"], nd=2), f(s["min"], nd=2),
             f(s["max"], nd=2), f(ratio(s["p50"], anc), "x", 3), f(ratio(s["p50"], anc2), "x", 3)]]
    for k, label in (("running_summary", "berth, the same container running (reference: no thaw)"),
                     ("twin_summary", "berth, its twin without freeze_after, running idle (reference)")):
        rs = fz.get(k) or {}
        if rs.get("n"):
            rows.append([label, rs["n"], f(rs["p50"], nd=2), f(rs["p90"], nd=2), f(rs["min"], nd=2), f(rs["max"], nd=2),
                         f(ratio(rs["p50"], anc), "x", 3), f(ratio(rs["p50"], anc2), "x", 3)])
    for k, label in (("berthwarm", "berth warm = 1, after a stop (c)"), ("berth", "berth warm = 0, after a stop (c)"),
                     ("ssa", "lighttpd start-up (systemd-socket-activate, c)"),
                     ("direct", "systemd restarting lighttpd from its socket (c)")):
        v = cs.get(k)
        if v and v.get("n"):
            rows.append([label, v["n"], f(v["p50"], nd=2), f(v["p90"], nd=2), f(v["min"], nd=2), f(v["max"], nd=2),
                         f(ratio(v["p50"], anc), "x", 3), f(ratio(v["p50"], anc2), "x", 3)])
    w(table(["variant", "n", "p50 ms", "p90 ms", "min ms", "max ms", "p50 / lighttpd start-up",
             "p50 / systemd restart"], rows))
    if fz.get("errors"):
        w("\nErrors: %s" % "; ".join(fz["errors"][:5]))
    w("")
    mf, mr, mt = fz["memory"]["frozen"], fz["memory"]["running"], fz["memory"].get("twin") or {"median": {}}
    mb = lambda v: f(v / 1048576.0 if v is not None else None, " MB", 2)
    kb = lambda v: f(float(v) if v is not None else None, " KiB", 0)
    w("Memory, median of %s samples each (states seen: frozen %s, thawed %s, twin %s; scopes seen: %s):\n"
      % (len(mf["samples"]), "/".join(mf["states_seen"]), "/".join(mr["states_seen"]), "/".join(mt.get("states_seen", [])),
         ", ".join(sorted(set(mf["units_seen"]) | set(mr["units_seen"]) | set(mt.get("units_seen", []))))))
    trs = []
    for key, label, fmt in (("memory_current_bytes", "scope MemoryCurrent (systemd)", mb), ("app_rss_kib", "lighttpd RSS", kb),
                            ("app_pss_kib", "lighttpd PSS", kb), ("stage_pss_kib", "berth's stage processes PSS", kb)):
        a, b, c = mf["median"].get(key), mr["median"].get(key), mt["median"].get(key)
        trs.append([label, fmt(a), fmt(b), fmt(c), f(ratio(a, c), "x", 3), f(ratio(a, b), "x", 3)])
    w(table(["what", "frozen", "same container thawed (1 connection open)", "twin running idle",
             "frozen / twin", "frozen / thawed"], trs))
    msg = (fz.get("journal") or {}).get("last_frozen_message")
    if msg:
        w("\nberth's journal at the last freeze: `%s`" % msg)
    w("")
    return "\n".join(L)


def render(d):
    m = d.get("machine", {})
    L = []
    w = L.append
    rows = d.get("targets", [])
    met = sum(1 for r in rows if r["met"] is True)
    judged = sum(1 for r in rows if r["met"] is not None)
    w("# berth benchmarks\n")
    w("Generated by `tests/bench/run.sh` from [`benchmarks.json`](benchmarks.json) (raw numbers) on %s; "
      "every berth figure and its anchor were measured in the same run, on the same testbed (systemd 252 "
      "in systemd-nspawn with its own user namespace, so limits and accounting are real: `tests/testbed/`)."
      % m.get("date", "?"))
    if m.get("quick"):
        w("\n**This is a short development run (`BERTH_BENCH_QUICK=1`): few samples, do not quote it.**")
    w("\n**%d of %d targets met.** Ratios are berth / anchor from the same run; the host is shared with other "
      "jobs (load average %s at the start, %s at the end), so absolute times move between runs and only the ratios "
      "are meant to be compared.\n" % (met, judged, m.get("loadavg_start", "?"), d.get("run", {}).get("loadavg_end", "?")))

    w("## Targets\n")
    trs = []
    for r in rows:
        u = r["unit"]
        bv = r["berth"] if isinstance(r["berth"], str) else f(r["berth"], (" " + u) if u else "", 1 if u != "" else 0)
        av = f(r["anchor"], (" " + u) if u else "", 1 if u != "" else 0) if r["anchor"] is not None else "-"
        rv = f(r["ratio"], "x", 2) if r["ratio"] is not None else "-"
        if r.get("gap_ms") is not None:
            rv += " (+%.1f ms)" % r["gap_ms"]
        trs.append([r["figure"], bv, av, rv, r["target"], yesno(r["met"])])
    w(table(["figure", "berth", "anchor", "ratio", "target", "met?"], trs))
    w("")

    w("## How to reproduce\n")
    w("On a Debian 12 machine (root; the same set-up as the test suite), from the repository:\n")
    w("```sh\nsudo tests/bench/run.sh\n```\n")
    w("It builds `target/release/berth` (`cargo build --release --bins`), builds or reuses the testbed tree "
      "(`tests/testbed/tree.sh`), boots testbed 1 with `--userns`, installs berth, `units/berth.service`, "
      "`units/berth-inetd@.service` and the benchmark's services and socket units (ports 19101-19131 on "
      "127.0.0.1, 19190 for the client-overhead server), measures a, b, c, f, d and the profile, writes "
      "`docs/benchmarks.json` and this file, and stops the testbed. This run took %s after the build. "
      "`BERTH_BENCH_QUICK=1` makes a short run for development, `BERTH_BENCH_PHASES=\"a b\"` runs a subset, "
      "`BERTH_BENCH_OUT=DIR` writes elsewhere. It is not part of `tests/ci.sh`.\n"
      % (f(d.get("run", {}).get("duration_s"), " s", 0)))

    w("## Machine\n")
    w(table(["", ""], [
        ["CPU", "%s x %s" % (m.get("nproc"), m.get("cpu"))],
        ["memory", f((m.get("mem_total_kib") or 0) / 1048576.0, " GiB", 1)],
        ["kernel", m.get("kernel")],
        ["host", m.get("host_os")],
        ["cgroups", m.get("cgroups")],
        ["testbed", "%s, in systemd-nspawn (tests/testbed/boot.sh --userns), host network shared" % m.get("testbed_systemd")],
        ["peers", "%s; %s; client %s" % (m.get("lighttpd"), m.get("wrk"), m.get("python"))],
        ["berth", "commit %s, release build" % m.get("berth_commit")],
        ["load average", "%s (start) / %s (end)" % (m.get("loadavg_start"), d.get("run", {}).get("loadavg_end"))],
    ]))
    w("")

    # ---------------------------------------------------------------- a
    a = d.get("a")
    if a:
        w("## a. inetd cold start: connect to first byte\n")
        w("The service is `/bin/echo hi`; the client (`tests/bench/client.py latency`, on the host, to 127.0.0.1) "
          "takes the time from just before `connect()` to the first byte received, then reads to EOF. "
          "Clients are closed loops (1 or 8 threads, each opening the next connection when the last one "
          "ended). The variants are interleaved: every round gives each variant its share in rotating "
          "order, so changes in the machine's load hit all of them alike. Rate is connections served per "
          "second of that variant's own wall time.\n")
        w("- **berth warm = 0**: `berth serve` (berth.service), inetd mode, full default sandbox "
          "(mount, pid, ipc, uts, cgroup and network namespaces, tmpfs root with read-only /usr, "
          "seccomp, no capabilities, user nobody), a transient scope per container with MemoryMax=64M and "
          "TasksMax=16, stderr to the journal.")
        w("- **berth warm = 8**: the same with `warm = 8` (8 sandboxes and scopes prepared ahead).")
        w("- **berth inetd (Accept=yes)**: systemd accepts and runs `berth inetd` per connection "
          "(`units/berth-inetd@.service`); shown for information.")
        w("- **systemd bare**: `Accept=yes`, `ExecStart=/bin/echo hi`, nothing else.")
        w("- **systemd sandboxed**: `Accept=yes` with PrivateNetwork, PrivateTmp, ProtectSystem=strict, "
          "PrivateDevices, PrivateIPC, ProtectHostname, NoNewPrivileges, CapabilityBoundingSet= (empty), "
          "MemoryMax=64M, TasksMax=16 (shared/TESTBED.md).")
        w("- **client floor**: a trivial Python server on the host that writes at once: the client's own "
          "overhead.\n")
        names = [("berth_warm0", "berth warm = 0"), ("berth_warm8", "berth warm = 8"),
                 ("berth_inetd_acceptyes", "berth inetd (Accept=yes)"), ("systemd_bare", "systemd bare"),
                 ("systemd_sandboxed", "systemd sandboxed"), ("client_floor", "client floor")]
        for c in ("c1", "c8"):
            r = a.get(c)
            if not r:
                continue
            w("**%s concurrent client%s**\n" % (c[1:], "s" if c != "c1" else ""))
            trs = []
            for k, label in names:
                v = r.get(k)
                if not v:
                    continue
                fb = v["first_byte_ms"]
                trs.append([label, v["connections"], v["errors"], f(fb.get("p50"), nd=2), f(fb.get("p90"), nd=2),
                            f(fb.get("p99"), nd=2), f(fb.get("max"), nd=1), f(v.get("rate_per_s"), "/s", 1)])
            w(table(["variant", "conns", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms", "rate"], trs))
            w("")

    # ---------------------------------------------------------------- b
    b = d.get("b")
    if b:
        w("## b. listen mode, warm: wrk\n")
        w("`%s`, against lighttpd socket-activated by systemd directly (`lighttpd-direct.socket` + "
          "`.service`, User=www-data) and against the same lighttpd and configuration in a berth container "
          "(`config/services/web.toml` with `idle_timeout = \"10min\"`), after a warm-up of each; rounds "
          "alternate the order. The summary is the median over rounds.\n" % b["wrk"])
        trs = [[r["round"], r["variant"], f(r.get("rps"), nd=0), f(r.get("p50_ms"), nd=2), f(r.get("p99_ms"), nd=2),
                r.get("requests"), (r.get("socket_errors") or "") + (" non-2xx %s" % r["non2xx"] if r.get("non2xx") else "")]
               for r in sorted(b["rounds"], key=lambda x: (x["round"], x["variant"]))]
        w(table(["round", "variant", "req/s", "p50 ms", "p99 ms", "requests", "errors"], trs))
        w("")
        bp = b.get("parallel")
        if bp:
            w("Both at once (the target's figure): %s, %s rounds; each round compares the two under the same "
              "load from the rest of the machine. The figure is the ratio of all requests each served over "
              "the rounds: %s (median of the round ratios %s, range %s-%s). On this shared host a single "
              "round's ratio moves by that range, so differences of a few per cent between the two are below "
              "what this benchmark can resolve.\n"
              % (bp["wrk"], len(bp["rounds"]), f(bp.get("ratio_total"), "x", 3), f(bp.get("ratio_median"), "x", 3),
                 f(bp.get("ratio_min"), "", 2), f(bp.get("ratio_max"), "", 2)))
            w(table(["round", "berth req/s", "direct req/s", "ratio", "berth p99 ms", "direct p99 ms"],
                    [[p["round"], f(p["berth"].get("rps"), nd=0), f(p["direct"].get("rps"), nd=0), f(p["ratio"], "x", 3),
                      f(p["berth"].get("p99_ms"), nd=2), f(p["direct"].get("p99_ms"), nd=2)] for p in bp["rounds"]]))
            w("")

    # ---------------------------------------------------------------- c
    c = d.get("c")
    if c:
        s = c["summary"]
        w("## c. wake from idle\n")
        w("- **berth, warm = 1**: lighttpd in berth with `idle_timeout = \"1s\"` and `warm = 1`: once a container "
          "idled out, the next one is prepared (namespaces, root, scope) and parked before the exec. The script waits "
          "until `berth list --json` shows that service's only container in state `warm`, 0.3 s more, then one "
          "HTTP/1.0 request: connect to first byte of the reply. It includes berth noticing the queued connection, "
          "the hand-over to the parked sandbox, lighttpd's exec and its whole start-up.")
        w("- **berth, warm = 0**: the same service without `warm`; the script waits until "
          "`systemctl list-units 'berth-webidle-*'` shows no container, 0.3 s more, then the request. The sandbox "
          "and the scope are built after the connection arrived.")
        w("- **lighttpd start-up (the anchor)**: `systemd-socket-activate -l 127.0.0.1:PORT lighttpd -D -f ...` "
          "(started as a unit, User=www-data) binds the socket and execs lighttpd only when the first connection "
          "arrives; connect to first byte of that first request is lighttpd's exec, start-up, accept and reply, "
          "with nothing else on the path.")
        w("- **systemd restart (context)**: `systemctl stop lighttpd-direct.service` (its socket stays), then "
          "the request: systemd's spawn of the service plus lighttpd's start-up.\n")
        w(table(["variant", "n", "p50 ms", "p90 ms", "min ms", "max ms"], [
            [label, s[k]["n"], f(s[k]["p50"], nd=2), f(s[k]["p90"], nd=2), f(s[k]["min"], nd=2), f(s[k]["max"], nd=2)]
            for k, label in (("berthwarm", "berth warm = 1, woken from idle"), ("berth", "berth warm = 0, woken from idle"),
                             ("ssa", "lighttpd start-up (systemd-socket-activate)"),
                             ("direct", "systemd restarting lighttpd from its socket"))]))
        if c.get("errors"):
            w("\nErrors: %s" % "; ".join(c["errors"][:5]))
        w("")

    # ---------------------------------------------------------------- f
    fz = d.get("f")
    if fz:
        w(render_f(fz, (d.get("c") or {}).get("summary", {})))

    # ---------------------------------------------------------------- d
    dd = d.get("d")
    if dd:
        hc = dd["hold_client"]
        burst = hc.get("burst", {})
        pc = dd.get("per_container_kib", {})
        sup = dd["supervisor"]
        w("## d. %s concurrent inetd containers held open\n" % burst.get("requested"))
        w("Service `hold`: inetd mode, `exec = [\"/bin/cat\"]`, default sandbox, MemoryMax=16M, TasksMax=4, "
          "`max_connections = %s`. The client (`client.py hold`) opens all connections at once, sends a line "
          "on each and counts a container as started when `cat` echoes it. Connections that fail are opened "
          "again in waves of 100 until all are held, so the memory figures are taken with the full number "
          "held. `berth.service` is restarted before this figure, so its peak RSS (VmHWM) is this figure's.\n"
          % (int(burst.get("requested") or 0) + 100))
        waves = hc.get("waves", [])
        w(table(["", ""], [
            ["burst: started / failed", "%s / %s (all that started did so within %s s; median %s s)"
             % (burst.get("up"), burst.get("failed"), burst.get("start_all_s"), burst.get("p50_up_s"))],
            ["why they failed (journal, counts)", "<br>".join(dd.get("failures") or ["-"])],
            ["retries", "%d waves of up to 100: %s" % (len(waves), ", ".join(
                "%s up in %s s" % (x["up"], x["took_s"]) for x in waves)) if waves else "none needed"],
            ["time until all %s were held" % hc.get("held"), f(hc.get("all_up_s"), " s", 1)],
            ["active scopes while held / STATUS=", "%s / %s" % (dd["held"].get("active_scopes"), dd["held"].get("status"))],
            ["teardown of all (clients close -> no container process, no scope)", f(dd["teardown"].get("teardown_all_s"), " s", 2)],
            ["supervisor VmRSS idle / held / peak (VmHWM) / after", "%s / %s / %s / %s MB" % tuple(
                f(x / 1024.0 if x else None, "", 1) for x in (sup["idle_vmrss_kib"], sup["held_vmrss_kib"],
                                                          sup["peak_vmhwm_kib"], sup["after_vmrss_kib"]))],
            ["supervisor threads", sup.get("threads")],
        ]))
        w("")
        if pc:
            w("Memory per container (%d held), KiB:\n" % pc["containers"])
            w(table(["what", "KiB per container", "how"], [
                ["application (`cat`) PSS", pc["app_pss"], "smaps_rollup of the cat processes in berth-hold.slice"],
                ["application alone, for reference", dd.get("app_alone", {}).get("pss_kib"), "PSS of one cat outside any sandbox (nothing to share with)"],
                ["berth's container processes (PID 1, and an outer stage where there is one) PSS", pc["stage_processes_pss"], "smaps_rollup of `berth-init` (and `berth-stage`) processes: forked by the zygote, pages shared with it"],
                ["kernel: unreclaimable slab", pc["kernel_delta"].get("SUnreclaim"), "/proc/meminfo delta idle -> held, divided by N (namespaces, mounts, tmpfs, sockets)"],
                ["kernel: page tables", pc["kernel_delta"].get("PageTables"), "same (every process of a container: PID 1 and the application)"],
                ["kernel: stacks", pc["kernel_delta"].get("KernelStack"), "same (2 tasks: PID 1 and the application)"],
                ["**beyond the application** (PID 1 PSS + kernel)", "**%s**" % pc["beyond_app"], "upper bound: the kernel part includes the app's own page tables and stack"],
                ["MemAvailable drop", pc["memavailable_drop"], "system-wide, includes other jobs on the host: a cross-check only"],
                ["charged to berth-hold.slice", pc["slice_charged"], "memory.usage_in_bytes / N; v1 charges pages to the cgroup that first touched them, so the stage's pages made before the move into the scope stay with berth.service"],
            ]))
            w("")
        b0, b1 = dd.get("before", {}), dd.get("after", {})
        w("Leftovers (inside the testbed, before the burst / after teardown):\n")
        w(table(["", "before", "after"], [
            ["berth-hold-* units in any state (`systemctl list-units --all`)", b0.get("hold_units_any_state"), b1.get("hold_units_any_state")],
            ["mounts in PID 1's namespace", b0.get("mounts_pid1"), b1.get("mounts_pid1")],
            ["mounts in berth serve's namespace", b0.get("mounts_berth"), b1.get("mounts_berth")],
            ["network namespaces (`lsns -t net`)", b0.get("net_namespaces"), b1.get("net_namespaces")],
            ["mount namespaces (`lsns -t mnt`)", b0.get("mnt_namespaces"), b1.get("mnt_namespaces")],
            ["entries in /run/berth/root (staging)", b0.get("staging_entries"), b1.get("staging_entries")],
        ]))
        w("")

    # ---------------------------------------------------------------- profiles
    prof = d.get("profile", {})
    tl = prof.get("timeline", {})
    tlw = dict(list(prof.get("timeline_wake", {}).items()) + list(prof.get("timeline_wakewarm", {}).items())
               + list(prof.get("timeline_ssa", {}).items()))
    if tl or tlw:
        w("## Where the time goes (profile)\n")
        w("Kernel tracepoints recorded system-wide with `perf record` (sched_process_fork/exec, and "
          "connect, accept4, unshare, sendmsg, recvmsg, recvfrom, pivot_root), over a few sequential "
          "connections per variant with pauses between them, cut into phases by `tests/bench/timeline.py`. "
          "No ptrace: `strace -f` was tried first and inflates every phase that makes many system calls "
          "(the posix_spawn child's ~64 rt_sigaction calls alone took 20 ms under strace). The phases of "
          "berth are its critical path in order; the two \"(overlapped)\" rows run beside it (the scope job).\n")
        w(phase_table(dict(list(tl.items()) + list(tlw.items()))))
        w("")

    cga = prof.get("cgattach") or {}
    if cga:
        w("What one move of a process between cgroups (a write to `cgroup.procs`) costs this kernel "
          "(`tests/bench/cgattach.py`, on the host: a `sleep` moved into a cgroup made for it and back, four "
          "times after a 0.3 s pause and four times back to back). A transient scope is such a move, done "
          "by systemd in every hierarchy; cgroup v1 and v2 without `favordynmods` make the first move after "
          "a pause wait for an RCU grace period (`cgroup_threadgroup_rwsem` is a per-CPU rw-semaphore), "
          "later ones in quick succession do not.\n")
        w(table(["hierarchy", "after a pause, ms (median)", "back to back, ms (median)"],
                [[h, f(med(v.get("after_pause_ms") or []), "", 2), f(med(v.get("back_to_back_ms") or []), "", 2)]
                 for h, v in sorted(cga.items()) if "error" not in v]))
        w("")

    cpus = [(k[4:], prof[k]) for k in ("cpu_berth_warm0", "cpu_berth_warm8", "cpu_systemd_bare", "cpu_systemd_sandboxed")
            if k in prof]
    if cpus:
        nr = len(cpus[0][1].get("rounds") or [1])
        w("CPU time per connection with 8 clients, by process: `perf record -a -e cpu-clock -F 999` (with kernel "
          "call chains, `-g --kernel-callchains`, since session 8) while "
          "the variant alone served %s connections (%s), samples attributed to the testbed's processes (and all "
          "they forked), the load client, kernel threads and the rest of the host (`tests/bench/cpuprof.py`). "
          "Two CPUs give 2000 ms of CPU per second, so CPU per connection bounds the rate. The row "
          "\"other host processes\" is the work of other jobs sharing the machine during the window, divided "
          "by this variant's connections: it shows how contended the CPUs were.\n"
          % (cpus[0][1].get("connections"),
             "in one round" if nr == 1 else "in %d rounds that rotate the variants' order; the last row gives "
             "each round's testbed total" % nr))
        allg = []
        for _, v in cpus:
            for g in v["groups"]:
                if g["group"] not in allg and g["group"] != "idle":
                    allg.append(g["group"])
        trs = []
        for g in allg:
            trs.append([g] + [f(next((x["cpu_ms_per_connection"] for x in v["groups"] if x["group"] == g), None), "", 2)
                              for _, v in cpus])
        trs.append(["**testbed total**"] + ["**%s**" % f(v.get("testbed_cpu_ms_per_connection"), "", 2) for _, v in cpus])
        if any(v.get("rounds") for _, v in cpus):
            trs.append(["testbed total by round"] + [" / ".join(f(x, "", 2) for x in (v.get("rounds") or [])) or "-"
                                                     for _, v in cpus])
        w(table(["ms of CPU per connection"] + [k for k, _ in cpus], trs))
        w("")
        works = [(k, v) for k, v in cpus if v.get("work")]
        if works:
            w("The same samples of the testbed's processes, by the kernel work they were in (`perf record -g "
              "--kernel-callchains`; `cpuprof.py` `WORK`: the first category whose functions are in a sample's "
              "kernel call chain takes it). The first six are what every container costs the kernel under the "
              "contract (shared/SPEC.md, \"What a container is\": new mount, pid, ipc, uts, cgroup and network "
              "namespaces, `lo` up, a fresh tmpfs root with `/usr`, `/tmp`, `/run`, `/proc`, a minimal `/dev`), "
              "and the application's exec, which bare pays in systemd's forked child:\n")
            kinds = []
            for _, v in works:
                for x in v["work"]:
                    if x["work"] not in kinds:
                        kinds.append(x["work"])
            kinds = [k for k in CONTRACT_WORK if k in kinds] + [k for k in kinds if k not in CONTRACT_WORK]
            wrs = []
            for k in kinds:
                wrs.append([k] + [f(sum(x["cpu_ms_per_connection"] for x in v["work"] if x["work"] == k), "", 2)
                                  for _, v in works])
            w(table(["ms of CPU per connection, testbed"] + [k for k, _ in works], wrs))
            w("")
        fl = cpu_floor(prof.get("cpu_berth_warm0"), prof.get("cpu_systemd_bare"))
        if fl:
            w("**The contract's floor.** What berth warm = 0's run spent on parts any sandbox that meets the "
              "contract must have, next to systemd bare `Accept=yes`'s whole testbed total in the same run: the "
              "scope (systemd, dbus-daemon and logind, which watches every unit), journald (taken at the lower of "
              "the two runs), the application after its exec, and the kernel work of the container itself (the "
              "table above, in berth's own processes). Forks, exits, page faults, seccomp and everything berth "
              "does in user space are left out, so the floor is a lower bound.\n")
            frs = [[name, f(v, "", 2)] for name, v in fl["parts"]]
            frs.append(["**floor**", "**%s**" % f(fl["floor"], "", 2)])
            frs.append(["systemd bare `Accept=yes`, testbed total", f(fl["bare"], "", 2)])
            frs.append(["berth warm = 0, testbed total", f(fl["berth"], "", 2)])
            w(table(["part", "ms of CPU per connection"], frs))
            w("")
            w(floor_verdict(fl) + "\n")

    if dd:
        w("## Where the memory goes (profile)\n")
        sm = dd.get("supervisor_smaps_held") or []
        if sm:
            w("The supervisor's resident memory by mapping while the containers are held (`/proc/PID/smaps`):\n")
            w(table(["mapping", "RSS KiB"], [[r["mapping"], r["rss_kib"]] for r in sm]))
            w("")
        sg = dd.get("slab_growth_top") or []
        if sg:
            n = (dd.get("per_container_kib") or {}).get("containers") or 1
            w("Kernel slab caches that grew most between idle and %d held (`/proc/slabinfo`, system-wide):\n" % n)
            w(table(["cache", "growth MiB", "per container KiB"],
                    [[r["cache"], f(r["bytes"] / 1048576.0, "", 1), f(r["bytes"] / 1024.0 / n, "", 1)] for r in sg]))
            w("")

    # ---------------------------------------------------------------- analysis
    if d.get("baseline"):
        w(changes(d))
    w("## Missed targets: where it goes and what would close it\n")
    missed = [r for r in rows if r["met"] is False]
    if not missed:
        w("None missed in this run.\n")
    ids = {r["id"] for r in missed}
    w(analysis(d, ids, tl, tlw))
    return "\n".join(L) + "\n"


def changes(d):
    """This issue's changes and the figures before and after them (docs/benchmarks-baseline.json)."""
    L = []
    w = L.append
    base = d.get("baseline") or {}
    w("## Changes made for the missed targets, measured again\n")
    w("The first complete run (commit %s, %s, same testbed and machine; its raw numbers are kept in "
      "[`benchmarks-baseline.json`](benchmarks-baseline.json)) missed 10 of 17 targets. The profile below "
      "located the time and memory; these changes followed, each in the code named:\n"
      % (base.get("commit", "n/a"), base.get("generated", "n/a")))
    w("1. **Stages forked by a zygote, not exec'd** (`src/sandbox/stage.rs` `zygote_main`, "
      "`src/sandbox/spawn.rs` `Stager`). `berth serve` and `berth run` exec one single-threaded "
      "`berth sandbox-zygote`; it forks each container's stage with `CLONE_PARENT`, so the stage is still "
      "the supervisor's child (reaped through a pidfd with `waitid(P_PIDFD)`, exit status as before) and no "
      "container pays for an exec of the whole binary (dynamic loading, relocation, runtime start; 2.2 ms on "
      "the path in the first profile) or for its own copy of the binary's pages. A dead zygote is replaced on "
      "the next container (tested). `berth inetd`, one container per process, still execs the stage.")
    w("2. **Internal stages dispatched before argument parsing** (`src/main.rs`): clap no longer builds its "
      "command tree in every stage.")
    w("3. **Warm pool**: the refill is woken after the taken sandbox got its Start (not before), up to 4 "
      "sandboxes are prepared at once instead of one after the other, and a sandbox prepared ahead runs as "
      "`SCHED_BATCH` until the supervisor resets it at Start (`src/supervisor/inetd.rs`, "
      "`src/sandbox/spawn.rs`). `SCHED_IDLE` was tried first: leaving it needs `CAP_SYS_NICE` in the initial "
      "user namespace, so in the testbed every warm sandbox failed its reset and was replaced on demand "
      "(p50 with warm = 8 went from 4.0 to 14.4 ms in that run); `tests/system/run.sh` now checks that the "
      "connection gets a prepared sandbox inside the testbed.")
    w("4. **`warm = 1` in listen mode** (`src/supervisor/listen.rs`, `src/config.rs`): once a container has "
      "idled out, the next one is built and parked before its exec, so a wake waits for the hand-over and the "
      "application's own start-up only. SPEC.md names `warm` for inetd; listen mode now accepts 0 or 1 "
      "(one container serves all connections), anything else is a configuration error.")
    w("5. **Bounded launches and a smaller supervisor heap**: at most 64 containers of a service are "
      "being launched at once (a burst waits in the kernel's backlog instead of as half-built sandboxes in "
      "berth's heap), the launch runs in its own boxed future that is freed once the container runs, the "
      "stage channel's receive buffer is sized to the datagram (`MSG_PEEK | MSG_TRUNC`) instead of 256 KiB. "
      "A release build for size (`opt-level = \"s\"`) was tried too and reverted: it saved about 1 MB of "
      "resident binary, but in four runs with it lighttpd in berth served 0.93-0.95x of the direct one in "
      "(b), against 1.02-1.03x with the default `opt-level = 3` in runs on either side of it (same testbed, "
      "same hour), for reasons not found. Together with the D-Bus calls bounded "
      "in flight and infrastructure failures no longer throttling (end of the first session), the 1000-"
      "connection burst now starts every container.")
    w("6. **Connections beyond the warm pool wait for sandboxes under way** (`WarmPool::take_or_wait`): with "
      "the pool empty, a connection takes the next refill to finish instead of building its own, whose scope "
      "job would only queue behind the refills' in systemd (tested: five connections at once with `warm = 1` "
      "all get prepared sandboxes).\n")
    # Figures carry run-specific details in parentheses (round ratios); match without them.
    key = lambda fig: fig.split(" (")[0]
    rows_b = {key(r["figure"]): r for r in base.get("targets", [])}
    old_c = next((r for r in base.get("targets", []) if r["id"] == "c"), None)
    trs = []
    for r in d.get("targets", []):
        o = rows_b.get(key(r["figure"])) or (old_c if r["id"] == "c" else None)
        if o is None and r["id"] == "d" and "containers started" in r["figure"]:
            o = next((x for x in base.get("targets", []) if "containers started" in x["figure"]), None)
        def val(x):
            if x is None:
                return "n/a"
            if x.get("unit") == "ms" and x["id"] == "c":
                return "%s ms (+%s)" % (f(x.get("berth"), "", 1), f(x.get("gap_ms"), "", 1))
            if x.get("ratio") is not None and x.get("unit") in ("ms", "req/s"):
                return f(x["ratio"], "x", 2)
            return f(x.get("berth"), "", 1) if x.get("berth") is not None else "-"
        trs.append([r["figure"], val(o), yesno(o["met"]) if o else "n/a", val(r), yesno(r["met"]), r["target"]])
    if trs:
        w("Before and after (ratios to the anchor of the same run; c in ms over lighttpd's start-up; before "
          "`warm = 1` existed a listen service always woke on demand, so both c rows compare with the same "
          "earlier figure):\n")
        w(table(["figure", "before", "met", "after", "met", "target"], trs))
        w("")
    return "\n".join(L)


def analysis(d, ids, tl, tlw):
    """The reading of the profile for each missed target, with the numbers of this run."""
    L = []
    w = L.append
    a = d.get("a", {})
    prof = d.get("profile", {})
    cpu = lambda v: prof.get("cpu_" + v, {})
    cpu_of = lambda v, pre: sum(x["cpu_ms_per_connection"] for x in cpu(v).get("groups", [])
                                if any(x["group"].startswith(p) for p in pre))
    fb = lambda c, v: a.get(c, {}).get(v, {}).get("first_byte_ms", {})
    if "a" in ids:
        g = lambda t, p: phase(tl, t, p)
        w("### a. inetd cold start\n")
        w0, w8, bare, sbx = fb("c1", "berth_warm0"), fb("c1", "berth_warm8"), fb("c1", "systemd_bare"), fb("c1", "systemd_sandboxed")
        cga = prof.get("cgattach") or {}
        pause = med([med(v.get("after_pause_ms") or []) for v in cga.values() if "error" not in v])
        b2b = med([med(v.get("back_to_back_ms") or []) for v in cga.values() if "error" not in v])
        w("**warm = 0, one client** (p50 %s ms; systemd bare %s ms, sandboxed %s ms). In the profile (connections "
          "250 ms apart) a cold start took %s ms: the zygote forked PID 1 into its pid namespace %s ms after the "
          "accept, PID 1's `unshare()` of four more namespaces took %s ms, its mounts, pivot_root and seccomp "
          "%s ms - the sandbox is "
          "ready about %s ms after the accept - and then PID 1 waited %s ms for the scope. Inside systemd the "
          "scope job took %s ms from the call to its last message; its first completed move of a pid into the "
          "scope's cgroups came %s ms after the call and the %s moves after it %s ms. The kernel makes the first "
          "cgroup move after a pause wait for an RCU grace period: %s ms on this host, against %s ms for moves in "
          "quick succession (table above). systemd's own `Accept=yes` child pays the same move before its exec "
          "(%s ms from fork to exec for the bare unit in this profile). In the closed-loop figure connections "
          "follow each other within milliseconds, so most moves find the grace period already passed, which "
          "is why the p50 there is far below the profile's total; the "
          "remaining gap to bare systemd is the scope job's other work (creating and configuring the scope's "
          "cgroups in %s hierarchies, the D-Bus round trip, journald and logind following the new unit) plus "
          "the sandbox itself, one after the other on the path.\n"
          % (f(w0.get("p50"), "", 1), f(bare.get("p50"), "", 1), f(sbx.get("p50"), "", 1),
             f(g("berth_warm0", "total"), "", 1), f(g("berth_warm0", "accept -> PID 1 forked"), "", 2),
             f(g("berth_warm0", "PID 1 (new pid namespace): unshare"), "", 1), f(g("berth_warm0", "PID 1: lo up"), "", 1),
             f(sum(x for x in (g("berth_warm0", "accept -> PID 1 forked"),
                               g("berth_warm0", "PID 1 (new pid namespace): unshare"), g("berth_warm0", "PID 1: lo up"))
                   if x), "", 1),
             f(g("berth_warm0", "Prepared -> Start"), "", 1),
             f(g("berth_warm0", "(overlapped, of which) systemd:"), "", 1),
             f(g("berth_warm0", "(overlapped, within it) call received -> first cgroup attach"), "", 1),
             f((tl.get("berth_warm0", {}).get("cgroup_attaches_per_scope") or 1) - 1, "", 0),
             f(g("berth_warm0", "(overlapped, within it) first -> last"), "", 2),
             f(pause, "", 1), f(b2b, "", 2), f(g("systemd_bare", "child fork"), "", 1), len(cga) or "n/a"))
        w("What would close it: (1) take the scope job off the path with a sandbox and scope made ahead - that "
          "is `warm`, which the administrator sets per service (the warm = 8 rows meet both p50 targets, and "
          "`warm = 1` is enough for a service that sees one connection at a time); (2) the job already starts "
          "as soon as the zygote reports PID 1 (StartTransientUnit %s ms after the fork) and overlaps the whole "
          "build (unshare and mounts, %s ms), so what is left on the path is systemd's job itself (issue 14.3 "
          "below); (3) on a host with cgroup v2 only, mounting it with `favordynmods` (Linux 6.0+) keeps "
          "the grace period out of every move; that is the host's setting, not berth's; (4) cheaper assembly "
          "for the part that stays: PID 1 makes %s mount-related system calls per container, the read-only "
          "part of the tree already cloned from a template built once per definition (issue 14.1 below).\n"
          % (f(g("berth_warm0", "(overlapped) PID 1 fork -> StartTransientUnit"), "", 1),
             f(sum(x for x in (g("berth_warm0", "PID 1 (new pid namespace): unshare"), g("berth_warm0", "PID 1: lo up"))
                   if x), "", 1),
             f(tl.get("berth_warm0", {}).get("mount_calls_per_container"), "", 0)))
        cb8 = cpu("berth_warm8").get("testbed_cpu_ms_per_connection")
        rate8 = a.get("c1", {}).get("berth_warm8", {}).get("rate_per_s")
        w("**warm = 8, one client** (p50 %s ms, p90 %s ms, p99 %s ms = %sx its p50; systemd bare's own p99 is "
          "%sx its p50 in the same run). A connection that finds a prepared sandbox costs accept -> Start sent "
          "%s ms, the application's fork %s ms and exec %s ms in the profile. The tail is the pool running dry: "
          "the single closed-loop client opens the next connection as soon as the last one ended, %s a "
          "second, and every one of them is a container to be replaced - %s ms of CPU each in the testbed "
          "(the 8-client table, warm = 8 column), so the client asks for about %s of the 2 CPUs' 2000 ms per "
          "second. Refills (as many at once as the arrival rate asks, up to two per CPU, as `SCHED_BATCH`) then "
          "fall behind within a round of 100 connections; a connection that finds the pool empty waits for the "
          "next sandbox under way (it does not build its own, whose scope job would queue behind the refills in "
          "systemd). What would "
          "close it is less CPU per container (items below); with clients that pause between connections, "
          "as the profile's do, the pool never empties and every connection takes the path above.\n"
          % (f(w8.get("p50"), "", 1), f(w8.get("p90"), "", 1), f(w8.get("p99"), "", 1),
             f((w8.get("p99") or 0) / (w8.get("p50") or 1), "", 1),
             f((bare.get("p99") or 0) / (bare.get("p50") or 1), "", 1),
             f(g("berth_warm8", "accept -> Start sent"), "", 2), f(g("berth_warm8", "Start -> application"), "", 2),
             f(g("berth_warm8", "application fork"), "", 2), f(rate8, "", 0), f(cb8, "", 1),
             f((rate8 or 0) * (cb8 or 0), " ms", 0)))
        cb0 = cpu("berth_warm0").get("testbed_cpu_ms_per_connection")
        cs = cpu("systemd_bare").get("testbed_cpu_ms_per_connection")
        cx = cpu("systemd_sandboxed").get("testbed_cpu_ms_per_connection")
        own = cpu_of("berth_warm0", ("testbed: berth",))
        sd = cpu_of("berth_warm0", ("testbed: systemd", "testbed: dbus-daemon"))
        sd = sd - cpu_of("berth_warm0", ("testbed: systemd-journal", "testbed: systemd-logind"))
        jl = cpu_of("berth_warm0", ("testbed: systemd-journal", "testbed: systemd-logind"))
        kt = cpu_of("berth_warm0", ("kernel threads",))
        w8c8, w0c8, bc8 = fb("c8", "berth_warm8"), fb("c8", "berth_warm0"), fb("c8", "systemd_bare")
        r0 = a.get("c8", {}).get("berth_warm0", {}).get("rate_per_s")
        r8 = a.get("c8", {}).get("berth_warm8", {}).get("rate_per_s")
        rb = a.get("c8", {}).get("systemd_bare", {}).get("rate_per_s")
        use = lambda r, c: f((r or 0) * (c or 0) / 20.0, "%", 0)
        w("**8 clients** (p50 %s ms with warm = 0, %s ms with warm = 8; systemd bare %s ms). Eight closed-loop "
          "clients load the machine, and what the testbed spends per connection decides how many a second it "
          "can serve: %s ms of CPU for berth with warm = 0 and %s ms with warm = 8, against %s ms for systemd "
          "bare and %s ms for systemd sandboxed (table above). At the rates of the figure (berth %s and %s a "
          "second, systemd bare %s) that is %s and %s of the two CPUs for berth's testbed processes alone, "
          "before the client, the host's other work and the kernel's own threads: the machine is at or near its "
          "limit, and what is left of the wait is queueing - for the scope jobs, which systemd runs one at a "
          "time, and with warm = 8 for the refills under way. A warm pool moves work ahead in time but cannot "
          "remove it under sustained load. Of berth's CPU "
          "(warm = 0), its own processes (supervisor, zygote, PID 1, including the kernel work of their "
          "namespaces and mounts) take %s ms; systemd and dbus-daemon for the transient scope %s ms; journald "
          "and logind, which follow every unit and stream, %s ms; kernel threads %s ms (not in the testbed "
          "total: mostly tearing down each container's network namespace, which systemd's sandboxed variant "
          "pays too). %s\n"
          % (f(w0c8.get("p50"), "", 1), f(w8c8.get("p50"), "", 1), f(bc8.get("p50"), "", 1),
             f(cb0, "", 1), f(cb8, "", 1), f(cs, "", 1), f(cx, "", 1), f(r0, "", 0), f(r8, "", 0), f(rb, "", 0),
             use(r0, cb0), use(r8, cb8), f(own, "", 1), f(sd, "", 1), f(jl, "", 1), f(kt, "", 1),
             cpu_verdict(cpu("berth_warm0"), cpu("systemd_bare"))))
    if ("a" in ids or "cpu" in ids) and cpu_floor(cpu("berth_warm0"), cpu("systemd_bare")):
        fl = cpu_floor(cpu("berth_warm0"), cpu("systemd_bare"))
        w("**CPU per connection below bare** (issue 14.1). The contract's floor in berth's run (the profile's "
          "last table: the scope, journald, the application, and the kernel work of the namespaces and mounts "
          "every container must have) is %s ms against systemd bare's testbed total of %s ms. %s\n"
          % (f(fl["floor"], "", 2), f(fl["bare"], "", 2), floor_verdict(fl)))
    if "b" in ids:
        w("### b. listen mode, warm\n")
        w("Once lighttpd runs, berth is not on the data path: lighttpd accepts on the socket systemd made "
          "and berth passed. The differences left are inside the container. Run side by side, berth's lighttpd "
          "served %s of the direct one's requests (per round: %s); the first two runs of this benchmark gave "
          "1.06x and 1.01x, and one after the other the two serve the same (the context row). The spread between rounds is of the order of the gap, so the first step is more rounds "
          "(`WRK_PAR_ROUNDS` in run.sh). The candidates, each to be switched off in turn with the same "
          "side-by-side pair: the seccomp filter (on kernels from 5.11 on, the kernel caches the verdict of "
          "calls the filter allows whatever their arguments, so lighttpd's epoll, read, writev and sendfile "
          "should not even run it), the scope's memory cgroup (`memory_max`), and the pid namespace.\n"
          % (f(d.get("b", {}).get("parallel", {}).get("ratio_total"), "x", 3),
             ", ".join(f(p["ratio"], "", 3) for p in d.get("b", {}).get("parallel", {}).get("rounds", []))))
    c = d.get("c", {}).get("summary", {})
    crow = {r["figure"][:40]: r for r in d.get("targets", []) if r["id"] == "c"}
    if "c" in ids or c:
        gw = lambda p: phase(tlw, "berth_wake", p)
        gww = lambda p: phase(tlw, "berth_wakewarm", p)
        w("### c. wake from idle\n")
        w("With `warm = 1` a wake took %s ms (p50) to the first byte, lighttpd's own start-up %s ms. In the "
          "profile of a warm wake (%s ms in all): berth noticed the connection and sent Start to the parked "
          "sandbox %s ms after connect, PID 1 forked lighttpd %s ms later (connecting its stdout and stderr "
          "to journald first), lighttpd's exec %s ms, and lighttpd's own start-up, accept and reply %s ms "
          "(under systemd-socket-activate: %s ms from connect to lighttpd's exec, %s ms from exec to first "
          "byte). That meets the target.\n"
          % (f(c.get("berthwarm", {}).get("p50"), "", 1), f(c.get("ssa", {}).get("p50"), "", 1),
             f(gww("total"), "", 1), f(gww("connect -> Start sent"), "", 2), f(gww("Start -> application"), "", 2),
             f(gww("application fork"), "", 2), f(gww("application exec"), "", 2),
             f(phase(tlw, "lighttpd_startup", "connect -> exec"), "", 1),
             f(phase(tlw, "lighttpd_startup", "lighttpd exec"), "", 1)))
        w("Without `warm` (built on demand) a wake took %s ms: in the profile (%s ms) the zygote forked PID 1 "
          "%s ms after connect, unshare %s ms, PID 1's mounts %s ms, then PID 1 waited %s ms for the scope job "
          "(StartTransientUnit -> Start sent %s ms) - as in (a), the scope is the largest item, and only a "
          "sandbox made ahead takes it off the path. For a service where the wake matters, `warm = 1` is the "
          "setting; it costs one parked sandbox (a sleeping PID 1, its namespaces and a scope) while "
          "idle.\n"
          % (f(c.get("berth", {}).get("p50"), "", 1), f(gw("total"), "", 1),
             f(gw("connect -> PID 1 forked"), "", 1),
             f(gw("PID 1 (new pid namespace): unshare"), "", 1), f(gw("PID 1: lo up"), "", 1), f(gw("Prepared -> Start"), "", 1),
             f(gw("(overlapped) StartTransientUnit"), "", 1)))
    if "d" in ids or d.get("d"):
        dd = d.get("d", {})
        sup = dd.get("supervisor", {})
        sm = {r["mapping"]: r["rss_kib"] for r in dd.get("supervisor_smaps_held") or []}
        pc = dd.get("per_container_kib", {})
        w("### d. 1000 containers\n")
        if sup.get("peak_vmhwm_kib"):
            n = pc.get("containers") or 1
            idle = sup.get("idle_vmrss_kib") or 0
            w("**Supervisor RSS.** %s MB at peak with %s containers (target 15 MB), %s MB idle. By mapping while "
              "held: heap %s MB, the berth binary %s MB (touched text and data), libc and the loader about 2 MB; "
              "%s KiB more per held container. Before this issue's changes the figure was %s MB (and 16.3 MB with "
              "heap 9.3 MB and binary 4.9 MB in the first session's run, with all 1000 launches in flight at "
              "once): bounding the launches per service to 64 and boxing the launch "
              "future cut the heap.\n"
              % (f(sup["peak_vmhwm_kib"] / 1024.0, "", 1), n, f(idle / 1024.0, "", 1),
                 f((sm.get("[heap]") or 0) / 1024.0, "", 1), f((sm.get("/usr/bin/berth") or 0) / 1024.0, "", 1),
                 f(((sup.get("held_vmrss_kib") or 0) - idle) / float(n), "", 1),
                 f(next((r.get("berth") for r in (d.get("baseline") or {}).get("targets", [])
                         if r["id"] == "d" and "RSS" in r["figure"]), None), "", 1)))
        if pc:
            w("**Memory per container** (no target; for the issue): %s KiB beyond the application "
              "(%s KiB PSS of PID 1, %s KiB of kernel memory: slab %s, page tables %s, "
              "stacks %s), against %s KiB for `cat` itself. PID 1 is forked by the zygote straight into its "
              "pid namespace and shares the zygote's pages (there used to be an outer stage process too, "
              "and each was once an exec of the whole binary: 511 KiB PSS for the two). What "
              "is left is the kernel's: mostly the network namespace and the mounts of each container (slab "
              "table above), the price of `network = \"none\"` and of a private tree.\n"
              % (pc.get("beyond_app"), pc.get("stage_processes_pss"), pc.get("kernel_delta_total"),
                 pc.get("kernel_delta", {}).get("SUnreclaim"), pc.get("kernel_delta", {}).get("PageTables"),
                 pc.get("kernel_delta", {}).get("KernelStack"), pc.get("app_pss")))
    return "\n".join(L)


def attach_baseline(d, out):
    """The run the changes in benchmarks.md's "Changes" section were measured against."""
    base = load(os.path.join(out, "benchmarks-baseline.json"))
    if base:
        d["baseline"] = {"commit": base.get("machine", {}).get("berth_commit"),
                         "generated": base.get("machine", {}).get("date"), "targets": base.get("targets", [])}


# Sections after this line in benchmarks.md (the soak, quick before/after
# runs) are written by hand or by other scripts: a new render keeps them.
KEEP_MARK = "<!-- report.py keeps everything below this line -->"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        out = sys.argv[2]
        d = load(os.path.join(out, "benchmarks.json"))
        if d.get("b", {}).get("parallel"):
            pairs = sorted(d["b"]["parallel"]["rounds"], key=lambda p: p["round"])
            d["b"]["parallel"] = parallel_summary(pairs)
        d["targets"] = targets(d)
        attach_baseline(d, out)
        with open(os.path.join(out, "benchmarks.json"), "w") as fh:
            json.dump(d, fh, indent=1)
            fh.write("\n")
    elif len(sys.argv) == 3:
        res, out = sys.argv[1], sys.argv[2]
        d = assemble(res)
        attach_baseline(d, out)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "benchmarks.json"), "w") as fh:
            json.dump(d, fh, indent=1)
            fh.write("\n")
    else:
        sys.exit("usage: report.py RESULTS_DIR OUT_DIR | report.py --render OUT_DIR")
    path = os.path.join(out, "benchmarks.md")
    kept = ""
    if os.path.exists(path):
        with open(path) as fh:
            old = fh.read()
        if KEEP_MARK in old:
            kept = "\n" + KEEP_MARK + old.split(KEEP_MARK, 1)[1]
    with open(path, "w") as fh:
        fh.write(render(d).rstrip("\n") + "\n" + kept)


if __name__ == "__main__":
    main()
