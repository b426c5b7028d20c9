#!/usr/bin/python3
"""Check a `berth metrics` scrape against `berth list --json` and the journal.

The body is parsed by prometheus_client's OpenMetrics parser (Debian:
python3-prometheus-client), which rejects anything that is not valid
OpenMetrics text (a missing `# EOF`, a counter without `_total`, bad
escaping, non-cumulative buckets ...).

usage: metrics_check.py BODY LIST_BEFORE LIST_AFTER SERVICE JOURNAL_STARTED MADE

LIST_BEFORE/LIST_AFTER: `berth list --json` taken just before and after the
scrape. JOURNAL_STARTED: BERTH_EVENT=started entries of SERVICE in this
berth.service invocation. MADE: connections the test made to SERVICE.
Prints one line per failed check and exits 1 if any failed.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

FAMILIES = {
    "berth_up": "gauge",
    "berth_connections_accepted": "counter",
    "berth_connections_refused": "counter",
    "berth_containers_started": "counter",
    "berth_containers_stopped": "counter",
    "berth_containers_failed": "counter",
    "berth_wakes": "counter",
    "berth_warm_hits": "counter",
    "berth_warm_misses": "counter",
    "berth_freezes": "counter",
    "berth_thaws": "counter",
    "berth_container_start_latency_seconds": "histogram",
    "berth_containers": "gauge",
    "berth_container_memory_bytes": "gauge",
    "berth_container_cpu_seconds": "counter",
    "berth_container_tasks": "gauge",
}


def main():
    body_path, before_path, after_path, service, journal_started, made = sys.argv[1:7]
    journal_started, made = int(journal_started), int(made)
    errors = []

    with open(body_path, encoding="utf-8") as f:
        body = f.read()
    try:
        families = {f.name: f for f in text_string_to_metric_families(body)}
    except Exception as e:  # the parser's only verdict on bad text
        print(f"OpenMetrics parser rejected the body: {e}")
        return 1

    for name, kind in FAMILIES.items():
        if name not in families:
            errors.append(f"family {name} missing")
        elif families[name].type != kind:
            errors.append(f"family {name} is {families[name].type}, not {kind}")
    if errors:
        print("\n".join(errors))
        return 1

    def value(family, sample, **labels):
        for s in families[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        return None

    if value("berth_up", "berth_up") != 1:
        errors.append("berth_up is not 1 (the supervisor's counters are missing)")

    started = value("berth_containers_started", "berth_containers_started_total", service=service)
    if started != journal_started:
        errors.append(
            f"berth_containers_started_total{{service={service!r}}} = {started}, "
            f"journal has {journal_started} BERTH_EVENT=started in this invocation"
        )
    accepted = value("berth_connections_accepted", "berth_connections_accepted_total", service=service)
    if accepted is None or accepted < made:
        errors.append(f"berth_connections_accepted_total{{service={service!r}}} = {accepted}, made {made}")

    h = "berth_container_start_latency_seconds"
    count = value(h, h + "_count", service=service)
    if count != started:
        errors.append(f"{h}_count = {count} but {started} containers started")
    inf = value(h, h + "_bucket", service=service, le="+Inf")
    if inf != count:
        errors.append(f"{h}_bucket{{le=+Inf}} = {inf}, _count = {count}")
    total_sum = value(h, h + "_sum", service=service)
    if total_sum is None or total_sum <= 0:
        errors.append(f"{h}_sum = {total_sum}: starts take time")

    stopped = sum(
        s.value
        for s in families["berth_containers_stopped"].samples
        if s.labels.get("service") == service
    )
    if stopped > started:
        errors.append(f"{stopped} containers of {service} stopped but only {started} started")

    # Containers with a scope (running, and warm ones prepared ahead): one
    # listed before and after the scrape must be in it, with systemd's
    # numbers; one in the scrape must be in a list.
    def scoped(path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not data.get("supervisor"):
            errors.append(f"{path}: berth list --json was not answered by the supervisor")
        return {
            c["unit"]: c
            for c in data["containers"]
            if c["unit"]
        }

    before, after = scoped(before_path), scoped(after_path)
    memory = {
        s.labels["unit"]: s
        for s in families["berth_container_memory_bytes"].samples
    }
    both = set(before) & set(after)
    if not both:
        errors.append("no container was listed across the scrape (nothing to compare)")
    unknown = 2**64 - 1  # berth list's "not accounted"
    for unit in sorted(both):
        c = after[unit]
        if not c.get("stats") or not before[unit].get("stats"):
            errors.append(f"{unit}: berth list has no systemd accounting for it")
            continue
        if c["stats"]["memory_current"] == unknown:
            if unit in memory:
                errors.append(f"{unit}: memory not accounted by systemd, yet in the scrape")
            continue
        s = memory.get(unit)
        if s is None:
            errors.append(f"{unit} runs (berth list) but has no berth_container_memory_bytes")
            continue
        if s.labels.get("service") != c["service"] or s.labels.get("container") != c["id"]:
            errors.append(f"{unit}: labels {s.labels} do not name service {c['service']} id {c['id']}")
        lo = min(before[unit]["stats"]["memory_current"], c["stats"]["memory_current"])
        hi = max(before[unit]["stats"]["memory_current"], c["stats"]["memory_current"])
        # Memory moves a little between three separate reads.
        slack = max(4 << 20, hi // 4)
        if not lo - slack <= s.value <= hi + slack:
            errors.append(f"{unit}: memory {s.value} outside berth list's {lo}..{hi} (±{slack})")
    for unit in memory:
        if unit not in before and unit not in after:
            errors.append(f"{unit} is in the scrape but in neither berth list")
    gauge = {
        s.labels["service"]: s.value
        for s in families["berth_containers"].samples
        if s.labels.get("state") == "running"
    }
    run_before = [c for c in before.values() if c["state"] == "running"]
    run_after = [c for c in after.values() if c["state"] == "running"]
    for svc in {c["service"] for c in run_after} & {c["service"] for c in run_before}:
        n_before = sum(1 for c in run_before if c["service"] == svc)
        n_after = sum(1 for c in run_after if c["service"] == svc)
        got = gauge.get(svc, 0)
        if not min(n_before, n_after) <= got <= max(n_before, n_after):
            errors.append(f"berth_containers{{service={svc!r},state=running}} = {got}, berth list: {n_before}/{n_after}")

    if errors:
        print("\n".join(errors))
        return 1
    print(
        f"{len(families)} families; {service}: started {started:g} (journal {journal_started}), "
        f"accepted {accepted:g}; {len(both)} containers' accounting agrees with berth list"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
