#!/usr/bin/python3
"""Report of tests/bench/vm.sh (the benchmark on testbed 2, cgroup v2 in qemu TCG).

    vm-report.py RESULTS_DIR OUT_DIR     # assemble OUT_DIR/benchmarks-vm.json, then render
    vm-report.py --render OUT_DIR        # render again from OUT_DIR/benchmarks-vm.json

Writes the section "cgroup v2 (testbed 2, qemu TCG)" of OUT_DIR/benchmarks.md
between its two markers (replaced in place, or appended at the end of the
file, which is below report.py's keep mark, so a render of testbed 1 keeps it).
Testbed 1's ratios come from OUT_DIR/benchmarks.json (figure a and c of the
committed full run), named with its date and commit.
"""
import glob
import json
import os
import re
import sys

START = "<!-- vm-report.py: start (tests/bench/vm.sh writes this section) -->"
END = "<!-- vm-report.py: end -->"
VARIANTS = [("berth_warm0", "berth warm = 0"), ("berth_warm8", "berth warm = 8"),
            ("systemd_bare", "systemd bare Accept=yes"), ("systemd_sandboxed", "systemd sandboxed Accept=yes"),
            ("client_floor", "client floor")]


def load(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def med(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def ratio(a, b):
    return None if a is None or not b else a / b


def f(v, suffix="", nd=2):
    return "n/a" if v is None else ("%.*f%s" % (nd, v, suffix))


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- assemble


def assemble(res):
    d = {"host": load(os.path.join(res, "host.json")) or {},
         "machine": load(os.path.join(res, "machine.json")) or {},
         "end": load(os.path.join(res, "end.json")) or {}, "modes": {}}
    order = (d["machine"].get("bench") or {}).get("modes", "").split()
    found = sorted({re.sub(r"^mode_(.*)\.json$", r"\1", os.path.basename(p))
                    for p in glob.glob(os.path.join(res, "mode_*.json"))})
    for m in [x for x in order if x in found] + [x for x in found if x not in order]:
        e = {"mount": load(os.path.join(res, "mode_%s.json" % m)) or {}}
        for k, fn in (("cgattach", "cgattach_%s.json"), ("fork", "fork_%s.json")):
            v = load(os.path.join(res, fn % m))
            if v is not None:
                e[k] = v
        a = {}
        for c in ("c1", "c8"):
            v = load(os.path.join(res, "a_%s_%s.json" % (m, c)))
            if v is not None:
                a[c] = v
        if a:
            e["a"] = a
        raw = os.path.join(res, "c_%s_raw.txt" % m)
        if os.path.exists(raw):
            samples, errors = {}, {}
            for line in open(raw):
                k, _, js = line.strip().partition(" ")
                try:
                    r = json.loads(js)
                except ValueError:
                    r = {"first_byte_ms": None, "error": js}
                if r.get("first_byte_ms") is not None:
                    samples.setdefault(k, []).append(r["first_byte_ms"])
                else:
                    errors.setdefault(k, []).append(r.get("error"))
            summ = {}
            for k, v in samples.items():
                s = sorted(v)
                summ[k] = {"n": len(s), "p50": med(s), "p90": s[min(len(s) - 1, int(0.9 * len(s)))],
                           "min": s[0], "max": s[-1]}
            e["c"] = {"samples_ms": samples, "summary": summ, "errors": errors}
        d["modes"][m] = e
    return d


def testbed1(out):
    """The ratios of testbed 1's committed full run (docs/benchmarks.json)."""
    t = load(os.path.join(out, "benchmarks.json")) or {}
    a = t.get("a") or {}
    r = {"date": (t.get("machine") or {}).get("date"), "commit": (t.get("machine") or {}).get("berth_commit"),
         "host_kernel": (t.get("machine") or {}).get("kernel"),
         "cgroups": (t.get("machine") or {}).get("cgroups"), "a": {}, "c": {}}
    for c in ("c1", "c8"):
        x = a.get(c) or {}
        r["a"][c] = {k: (x.get(k) or {}).get("first_byte_ms") for k, _ in VARIANTS if x.get(k)}
    cs = (t.get("c") or {}).get("summary") or {}
    r["c"] = {k: v.get("p50") for k, v in cs.items()}
    cga = (t.get("profile") or {}).get("cgattach") or {}
    r["cgattach_unified"] = cga.get("unified")
    return r


# ---------------------------------------------------------------- render


def kind(m):
    return re.sub(r"[0-9]+$", "", m)


def render(d):
    w = []
    h, mc, modes, t1 = d.get("host", {}), d.get("machine", {}), d.get("modes", {}), d.get("testbed1", {})
    b = mc.get("bench") or {}
    names = list(modes)
    label = {m: ("as mounted" if kind(m) == "default" else "favordynmods") + (" (again)" if m[-1:].isdigit() else "")
             for m in names}
    w.append("## cgroup v2 (testbed 2, qemu TCG)\n")
    w.append("Issue 14 point 4: figure a's anchors on testbed 2 - a qemu VM with the full cgroup v2 hierarchy, "
             "%s, kernel %s, %s - measured by `tests/bench/vm.sh` (not part of `tests/ci.sh`) on %s, berth "
             "commit %s. qemu runs with TCG (%s, %s guest CPUs, %s MiB; the host: %s x %s, load average %s at "
             "the start and %s at the end, shared with other jobs), so every absolute time here is many times "
             "testbed 1's; the ratios, each taken within one run, compare. Raw numbers: "
             "[`benchmarks-vm.json`](benchmarks-vm.json).%s\n"
             % (mc.get("os", "Debian"), mc.get("kernel"), mc.get("systemd"), h.get("date"), h.get("berth_commit"),
                h.get("qemu", "qemu"), mc.get("nproc"), (mc.get("mem_total_kib") or 0) // 1024,
                h.get("host_nproc"), h.get("host_cpu"), h.get("host_loadavg_start"), h.get("host_loadavg_end"),
                " **Quick run (few samples): calibration only.**" if h.get("quick") else ""))
    w.append("```sh\nsudo tests/bench/vm.sh      # ~%d min here, with the VM image cached\n```\n"
             % round((h.get("vm_run_s") or 0) / 60))
    w.append("It runs `tests/vm/run.sh` (the package, the cached image, the boot) with `BERTH_VM_GUEST=tests/bench/vm-guest.sh` "
             "and a results disk. In the guest: the package, the services and units of `tests/bench/run.sh`'s figure a "
             "(`echo_toml`, `bare_unit` and `sandboxed_unit` of `tests/bench/lib.sh`: `/bin/echo hi`, berth warm = 0 "
             "and warm = 8 under berth.service, systemd `Accept=yes` bare and sandboxed), `tests/bench/client.py "
             "latency` in the guest (1 and 8 closed-loop clients, %s rounds of %s and %s connections per variant, "
             "interleaved), `tests/bench/cgattach.py` (%s moves after a 0.3 s pause, %s back to back) and fork/exit "
             "timings; then the same with the cgroup2 hierarchy remounted with `favordynmods` (`mount -o "
             "remount,favordynmods /sys/fs/cgroup`, which keeps `nsdelegate,memory_recursiveprot`), in the order "
             "%s, so that drift over the run shows; %s\n"
             % (b.get("a_rounds"), b.get("a_per1"), b.get("a_per8"), b.get("cgattach_n"), b.get("cgattach_n"),
                ", ".join("%s (%s)" % (m, label[m]) for m in names),
                "wake from idle (c) as mounted, %s wakes per variant." % b.get("c_n")
                if any("c" in modes[m] for m in names) else "no wake from idle (c) in this run."))
    w.append("cgroup2 as systemd 252 mounted it: `%s`.\n" % (modes.get(names[0], {}).get("mount", {}).get(
        "cgroup2_mount_options") if names else "n/a"))

    w.append(summary_text(d, names))

    # a: ratios
    t1a = t1.get("a") or {}
    w.append("### a. inetd cold start, ratios\n")
    w.append("p50 (and p99) of connect -> first byte; each ratio is berth / anchor of the same run and mount state. "
             "Testbed 1: the committed full run of `docs/benchmarks.json` (%s, commit %s, %s).\n"
             % (t1.get("date"), t1.get("commit"), t1.get("cgroups")))
    rows = []
    for c in ("c1", "c8"):
        n = c[1:]
        for bv, bl in (("berth_warm0", "warm = 0"), ("berth_warm8", "warm = 8")):
            for av, al in (("systemd_bare", "bare"), ("systemd_sandboxed", "sandboxed")):
                cells = []
                for m in names:
                    r = (modes[m].get("a") or {}).get(c) or {}
                    cells.append(f(ratio((r.get(bv) or {}).get("first_byte_ms", {}).get("p50"),
                                         (r.get(av) or {}).get("first_byte_ms", {}).get("p50")), "x"))
                t = t1a.get(c) or {}
                cells.append(f(ratio((t.get(bv) or {}).get("p50"), (t.get(av) or {}).get("p50")), "x"))
                rows.append(["%s client%s, berth %s p50 / systemd %s p50" % (n, "s" if n != "1" else "", bl, al)] + cells)
            cells = []
            for m in names:
                fb = ((((modes[m].get("a") or {}).get(c) or {}).get(bv) or {}).get("first_byte_ms") or {})
                cells.append(f(ratio(fb.get("p99"), fb.get("p50")), "x"))
            fb = (t1a.get(c) or {}).get(bv) or {}
            cells.append(f(ratio(fb.get("p99"), fb.get("p50")), "x"))
            rows.append(["%s client%s, berth %s p99 / its own p50" % (n, "s" if n != "1" else "", bl)] + cells)
        cells = []
        for m in names:
            r = (modes[m].get("a") or {}).get(c) or {}
            cells.append(f(ratio((r.get("systemd_sandboxed") or {}).get("first_byte_ms", {}).get("p50"),
                                 (r.get("systemd_bare") or {}).get("first_byte_ms", {}).get("p50")), "x"))
        t = t1a.get(c) or {}
        cells.append(f(ratio((t.get("systemd_sandboxed") or {}).get("p50"), (t.get("systemd_bare") or {}).get("p50")), "x"))
        rows.append(["%s client%s, systemd sandboxed p50 / systemd bare p50 (anchors)" % (n, "s" if n != "1" else "")] + cells)
    w.append(table(["ratio"] + ["testbed 2, %s" % label[m] for m in names] + ["testbed 1"], rows))

    for c in ("c1", "c8"):
        n = c[1:]
        w.append("**%s concurrent client%s**: p50 / p99 ms, connections per second of the variant's own wall time "
                 "(errors, if any)\n" % (n, "s" if n != "1" else ""))
        rows = []
        for v, vl in VARIANTS:
            cells = []
            for m in names:
                r = ((modes[m].get("a") or {}).get(c) or {}).get(v)
                if not r:
                    cells.append("n/a")
                    continue
                fb = r.get("first_byte_ms") or {}
                cells.append("%s / %s, %s/s%s" % (f(fb.get("p50"), "", 1), f(fb.get("p99"), "", 1), r.get("rate_per_s"),
                                                 " (%d errors)" % r["errors"] if r.get("errors") else ""))
            t = (t1a.get(c) or {}).get(v) or {}
            cells.append("%s / %s" % (f(t.get("p50"), "", 1), f(t.get("p99"), "", 1)) if t else "n/a")
            conns = next((((modes[m].get("a") or {}).get(c) or {}).get(v, {}).get("connections") for m in names), None)
            rows.append(["%s (%s conns)" % (vl, conns)] + cells)
        w.append(table(["variant"] + ["testbed 2, %s" % label[m] for m in names] + ["testbed 1"], rows))

    # cgattach and fork
    w.append("### What favordynmods changes: one cgroup move, fork and exit\n")
    rows = []
    for m in names:
        cg = (modes[m].get("cgattach") or {}).get("cgroup2") or {}
        fk = modes[m].get("fork") or {}
        rows.append([label[m] + " (`%s`)" % modes[m].get("mount", {}).get("cgroup2_mount_options", ""),
                     f(med(cg.get("after_pause_ms") or []), "", 2),
                     f(max(cg.get("after_pause_ms") or [0]) or None, "", 2),
                     f(med(cg.get("back_to_back_ms") or []), "", 2),
                     f(fk.get("fork_exit_us_median"), "", 0), f(fk.get("spawn_true_us_median"), "", 0)])
    u = t1.get("cgattach_unified") or {}
    rows.append(["testbed 1 (host, hybrid: the cgroup2 hierarchy without controllers)",
                 f(med(u.get("after_pause_ms") or []), "", 2), f(max(u.get("after_pause_ms") or [0]) or None, "", 2),
                 f(med(u.get("back_to_back_ms") or []), "", 2), "n/a", "n/a"])
    w.append("`tests/bench/cgattach.py`: a `sleep` moved into a cgroup made for it below the root and back; "
             "the time of the `cgroup.procs` write. Fork: `os.fork()` + `_exit(0)` + `waitpid` of the Python "
             "process; spawn: `posix_spawn(\"/bin/true\")` + `waitpid` (%s each; medians).\n" % b.get("fork_n"))
    w.append(table(["cgroup2 mount", "move after a 0.3 s pause, ms (median)", "(max)", "move back to back, ms (median)",
                    "fork+exit, us", "spawn /bin/true, us"], rows))

    w.append(favordynmods_text(d, names))

    # c
    cm = [m for m in names if modes[m].get("c")]
    if cm:
        w.append("### c. wake from idle\n")
        w.append("As figure c on testbed 1 (`webidle`/`webwake`: `config/services/web.toml` with `idle_timeout = "
                 "\"1s\"`, the second with `warm = 1`; the anchor is lighttpd exec'd by `systemd-socket-activate` "
                 "on the first connection), the hierarchy as mounted.\n")
        rows = []
        t1c = t1.get("c") or {}
        for k, kl in (("berthwarm", "berth warm = 1, woken from idle"), ("berth", "berth warm = 0, woken from idle"),
                      ("ssa", "lighttpd start-up (systemd-socket-activate)")):
            for m in cm:
                s = (modes[m]["c"].get("summary") or {}).get(k) or {}
                ssa = ((modes[m]["c"].get("summary") or {}).get("ssa") or {}).get("p50")
                rows.append([kl + (", %s" % label[m] if len(cm) > 1 else ""), s.get("n", 0), f(s.get("p50"), "", 1), f(s.get("p90"), "", 1),
                             f(ratio(s.get("p50"), ssa), "x"), f(ratio(t1c.get(k), t1c.get("ssa")), "x")])
        w.append(table(["variant", "n", "p50 ms", "p90 ms", "p50 / lighttpd start-up", "testbed 1"], rows))
    return "\n".join(w)


def pooled(modes, names, k, getter):
    """All samples of getter(mode entry) over the modes of kind k."""
    out = []
    for m in names:
        if kind(m) == k:
            out += getter(modes[m]) or []
    return out


def a_ratio(modes, m, c, b, a, q="p50"):
    r = ((modes[m].get("a") or {}).get(c) or {})
    return ratio(((r.get(b) or {}).get("first_byte_ms") or {}).get(q),
                 ((r.get(a) or {}).get("first_byte_ms") or {}).get(q if b != a else "p50"))


def span(v, suffix="x"):
    v = [x for x in v if x is not None]
    if not v:
        return "n/a"
    lo, hi = min(v), max(v)
    return f(lo, suffix) if "%.2f" % lo == "%.2f" % hi else "%s-%s" % (f(lo, ""), f(hi, suffix))


def summary_text(d, names):
    modes, t1a = d.get("modes", {}), (d.get("testbed1") or {}).get("a") or {}
    rs = lambda k, c, b, a: [a_ratio(modes, m, c, b, a) for m in names if kind(m) == k]
    t1r = lambda c, b, a: f(ratio(((t1a.get(c) or {}).get(b) or {}).get("p50"), ((t1a.get(c) or {}).get(a) or {}).get("p50")), "x")
    cga = lambda k: pooled(modes, names, k, lambda e: ((e.get("cgattach") or {}).get("cgroup2") or {}).get("after_pause_ms"))
    return (
        "**Summary.** As systemd mounts the hierarchy (the two \"as mounted\" runs), berth warm = 0 answers at "
        "%s of systemd bare `Accept=yes`'s p50 with 1 client and %s with 8 (testbed 1: %s and %s), and at %s and "
        "%s of the sandboxed anchor (testbed 1: %s and %s); warm = 8 at %s and %s of bare (testbed 1: %s and %s), "
        "its refills falling behind one busy client (its p99 %s of its p50 with 1 client). With `favordynmods` a "
        "cgroup move after a pause takes %s ms instead of %s ms (medians); berth and the anchors, whose child is "
        "moved the same way, both gain, and warm = 0 / bare becomes %s with 1 client and %s with 8. Each cell below is one run's ratio; the spread between the two runs of the same state (the "
        "host's load changed during the run: see the client floor) is the resolution of this benchmark.\n"
        % (span(rs("default", "c1", "berth_warm0", "systemd_bare")), span(rs("default", "c8", "berth_warm0", "systemd_bare")),
           t1r("c1", "berth_warm0", "systemd_bare"), t1r("c8", "berth_warm0", "systemd_bare"),
           span(rs("default", "c1", "berth_warm0", "systemd_sandboxed")), span(rs("default", "c8", "berth_warm0", "systemd_sandboxed")),
           t1r("c1", "berth_warm0", "systemd_sandboxed"), t1r("c8", "berth_warm0", "systemd_sandboxed"),
           span(rs("default", "c1", "berth_warm8", "systemd_bare")), span(rs("default", "c8", "berth_warm8", "systemd_bare")),
           t1r("c1", "berth_warm8", "systemd_bare"), t1r("c8", "berth_warm8", "systemd_bare"),
           span([a_ratio(modes, m, "c1", "berth_warm8", "berth_warm8", "p99") for m in names]),
           f(med(cga("favordynmods")), "", 1), f(med(cga("default")), "", 1),
           span(rs("favordynmods", "c1", "berth_warm0", "systemd_bare")), span(rs("favordynmods", "c8", "berth_warm0", "systemd_bare"))))


def favordynmods_text(d, names):
    modes, mc = d.get("modes", {}), d.get("machine", {})
    cga = lambda k, key: pooled(modes, names, k, lambda e: ((e.get("cgattach") or {}).get("cgroup2") or {}).get(key))
    fk = lambda k, key: [(e.get("fork") or {}).get(key) for m, e in modes.items() if kind(m) == k]
    pd, pf = med(cga("default", "after_pause_ms")), med(cga("favordynmods", "after_pause_ms"))
    bd, bf = med(cga("default", "back_to_back_ms")), med(cga("favordynmods", "back_to_back_ms"))
    w = []
    w.append("Over both runs of each state (%d moves each): a move after a pause took %s ms (median) as mounted "
             "and %s ms with `favordynmods`; back to back %s and %s ms. Fork+exit of the Python process %s and "
             "%s us, spawn of `/bin/true` %s and %s us (medians of the runs' medians): under TCG a fork costs "
             "tens of milliseconds and the runs scatter by more than the difference `favordynmods` makes on "
             "that path (an atomic operation and a barrier per fork and per exit), which is too small to see "
             "here.\n"
             % (len(cga("default", "after_pause_ms")), f(pd), f(pf), f(bd), f(bf),
                f(med(fk("default", "fork_exit_us_median")), "", 0), f(med(fk("favordynmods", "fork_exit_us_median")), "", 0),
                f(med(fk("default", "spawn_true_us_median")), "", 0), f(med(fk("favordynmods", "spawn_true_us_median")), "", 0)))
    rows = []
    for c in ("c1", "c8"):
        for b, bl in (("berth_warm0", "warm = 0"), ("berth_warm8", "warm = 8")):
            cells = []
            for k in ("default", "favordynmods"):
                v = [a_ratio(modes, m, c, b, "systemd_bare") for m in names if kind(m) == k]
                cells.append(", ".join(f(x, "x") for x in v))
            rows.append(["%s client%s, berth %s p50 / bare p50" % (c[1:], "s" if c != "c1" else "", bl)] + cells)
        cells = []
        for k in ("default", "favordynmods"):
            v = [((((modes[m].get("a") or {}).get(c) or {}).get("systemd_bare") or {}).get("first_byte_ms") or {}).get("p50")
                 for m in names if kind(m) == k]
            cells.append(", ".join(f(x, " ms", 0) for x in v))
        rows.append(["%s client%s, systemd bare p50" % (c[1:], "s" if c != "c1" else "")] + cells)
    w.append("Figure a in both states (the two runs of each, in the order measured):\n")
    w.append(table(["", "as mounted", "favordynmods"], rows))
    w.append(
        "**Why.** Each write to `cgroup.procs` - systemd moving the first process into a transient scope, "
        "or the child of an `Accept=yes` socket into its service's cgroup - takes `cgroup_threadgroup_rwsem` "
        "for writing. It is a per-CPU rw-semaphore: its readers (every fork, every exit, exec's de-threading) "
        "only bump a per-CPU counter, and so the writer first has to switch it to its slow mode with "
        "`rcu_sync_enter()`, which waits for an RCU grace period unless a writer did so less than a grace "
        "period earlier. Hence the first move after a pause is slow and moves in quick succession are not. "
        "`favordynmods` keeps the semaphore in its slow mode for good: no move waits for a grace period, and "
        "every fork and exit takes the slower read side. From Linux 4.6 to 5.19 every kernel behaved like that "
        "([3942a9bd7b58](https://github.com/torvalds/linux/commit/3942a9bd7b5842a924e99ee6ec1350b8006c94ec), "
        "for Android, which moves tasks between cgroups around binder calls); Linux 6.0 made the per-CPU fast "
        "path the default again and the old behaviour the mount option `favordynmods` and "
        "`CONFIG_CGROUP_FAVOR_DYNMODS` "
        "([6a010a49b63a](https://github.com/torvalds/linux/commit/6a010a49b63ac8465851a79185d8deff966f8e1a): "
        "\"There is no reason to force this on everyone\", since `CLONE_INTO_CGROUP` seeds a cgroup without "
        "the write lock); Linux 6.7 added the boot parameter `cgroup_favordynmods=` "
        "([9b81d3a5be05](https://github.com/torvalds/linux/commit/9b81d3a5be05d350ac93d99762c7ee91fe29b4cb)). "
        "The guest's Debian 12 kernel (%s) has `%s`. Later kernels go further only under the option: with "
        "`favordynmods` a `cgroup.procs` write locks just the moved thread group instead of the global "
        "semaphore (commit 0568f89d4fb8, Yi Tao, 2025; in review Tejun Heo asked to \"note that this isn't "
        "necessary for cgroup2's recommended workflow and is thus gated behind favordynmods\": "
        "https://lore.kernel.org/all/aLm-2Lcnu602AB85@slm.duckdns.org/), and since then the option cannot be "
        "switched off again once on (https://lore.kernel.org/all/20260511081607.83490-1-zhangguopeng@kylinos.cn/). "
        "Testbed 1's host (kernel %s) is hybrid: cgroup v1 hierarchies cannot change the flag on a remount "
        "(the reason for that boot parameter), so it was not tried there.\n"
        % (mc.get("kernel"), mc.get("cgroup_favordynmods_config"), (d.get("testbed1") or {}).get("host_kernel") or "6.18"))
    w.append(
        "**systemd does not set it.** systemd 252 mounted the guest's hierarchy with `%s` (above). Upstream "
        "systemd's `src/shared/mount-setup.c` passes `nsdelegate,memory_recursiveprot` and nothing else "
        "(https://github.com/systemd/systemd/blob/02c4d27b1710f70d1925191b18601848a6776d31/src/shared/mount-setup.c; "
        "`memory_hugetlb_accounting` was added in 2025, https://github.com/systemd/systemd/pull/39486); a search "
        "of systemd's issues and pull requests for `favordynmods` finds no request for it. It stays the "
        "administrator's choice: `mount -o remount,favordynmods /sys/fs/cgroup` early at boot (a oneshot unit), "
        "`cgroup_favordynmods=1` on the kernel command line (6.7+), or a kernel built with "
        "`CONFIG_CGROUP_FAVOR_DYNMODS` (NI's real-time kernel does: https://github.com/ni/linux/pull/135; OpenRC "
        "lets `/etc/conf.d/cgroups` add it: https://github.com/OpenRC/openrc/pull/684). berth cannot set it for "
        "its scopes - the option is the hierarchy's, for every process on the host - and a scope that adopts an "
        "existing process (berth's sandbox, as logind's sessions) must move it: `CLONE_INTO_CGROUP` helps only a "
        "process forked straight into its cgroup. The warm pool takes the move off the connection's path instead.\n"
        % (modes.get(names[0], {}).get("mount", {}).get("cgroup2_mount_options") if names else "n/a"))
    return "\n".join(w)


def write_section(out, text):
    path = os.path.join(out, "benchmarks.md")
    old = open(path).read() if os.path.exists(path) else ""
    block = START + "\n\n" + text.rstrip("\n") + "\n\n" + END + "\n"
    if START in old and END in old:
        pre, rest = old.split(START, 1)
        post = rest.split(END, 1)[1].lstrip("\n")
        new = pre + block + ("\n" + post if post else "")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    with open(path, "w") as fh:
        fh.write(new)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        out = sys.argv[2]
        d = load(os.path.join(out, "benchmarks-vm.json"))
        if not d:
            sys.exit("no %s/benchmarks-vm.json" % out)
    elif len(sys.argv) == 3:
        res, out = sys.argv[1], sys.argv[2]
        d = assemble(res)
        d["testbed1"] = testbed1(out)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "benchmarks-vm.json"), "w") as fh:
            json.dump(d, fh, indent=1)
            fh.write("\n")
    else:
        sys.exit("usage: vm-report.py RESULTS_DIR OUT_DIR | vm-report.py --render OUT_DIR")
    write_section(out, render(d))


if __name__ == "__main__":
    main()
