#!/usr/bin/env python3
"""Where a bench run's latency tail comes from, read off moqcast-bench --latency-trace files.

    python3 scripts/latency-tail.py target/bench/trace-*.csv

For each trace: p50/p99 of the counted samples; the p99 of the first object of each group
(a new subgroup stream on both hops) against the later ones; and how clustered the tail is in
time (the share of tail samples that fall in the 10 busiest 100 ms slots: near 1 means a few
stalls that hit every subscriber at once, as a host hiccup does; low means spread-out delays).
"""
import csv
import sys
from collections import Counter, defaultdict


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))
    return sorted_values[i]


def main(paths):
    print("| trace | samples | p50 ms | p99 ms | first-of-group p50 / p99 ms | later p50 / p99 ms "
          "| tail share first-of-group | tail in 10 busiest 100 ms slots |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        rows = defaultdict(list)
        with open(path) as f:
            for r in csv.DictReader(f):
                if r["counted"] != "1" or not r["latency_us"]:
                    continue
                key = (r["subscriber"], r["track"], r["group"])
                rows[key].append((int(r["send_unix_us"]), int(r["latency_us"])))
        first, later, alls = [], [], []
        for objs in rows.values():
            objs.sort()
            for i, (send, lat) in enumerate(objs):
                (first if i == 0 else later).append((send, lat))
                alls.append((send, lat, i == 0))
        lat = sorted(l for _, l, _ in alls)
        if not lat:
            continue
        p99 = pct(lat, 99)
        tail = [(s, f) for s, l, f in alls if l > p99]
        share_first = sum(1 for _, f in tail if f) / max(1, len(tail))
        slots = Counter(s // 100_000 for s, _ in tail)
        busiest = sum(n for _, n in slots.most_common(10)) / max(1, len(tail))
        fl = sorted(l for _, l in first)
        ll = sorted(l for _, l in later)
        name = path.rsplit("/", 1)[-1]
        print(f"| {name} | {len(lat)} | {pct(lat, 50)/1000:.2f} | {p99/1000:.2f} "
              f"| {pct(fl, 50)/1000:.2f} / {pct(fl, 99)/1000:.2f} "
              f"| {pct(ll, 50)/1000:.2f} / {pct(ll, 99)/1000:.2f} "
              f"| {share_first:.0%} | {busiest:.0%} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
