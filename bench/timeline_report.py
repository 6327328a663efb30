#!/usr/bin/env python3
"""Reads the records `moekit_layer_bench --timeline` dumps (MOEKIT_TIMELINE_DUMP,
one graph replay of a timeline build; src/kernels/timeline.hpp) and prints,
per kernel launch in start order, where its time went:

  start        first and last warp start (µs from the replay's first record)
  wait         PDL wait release: first, median (per warp, its first release)
  +prev        the first release after the previous launch's last end (the
               cost of a kernel boundary that PDL does not hide)
  stage        a GEMM consumer warp's first full stage: first, median, last
  end          warp ends (each warp's last): median, 90th percentile, last
  blocks/SMs   distinct blocks and SMs that recorded

and, for the GEMM kernels that mark their items (decode, prefill), a second
table: items per consumer warp, and per item its main loop (from the warp's
previous item stored, or from its first full stage for its first item) and
its epilogue (accumulators done to outputs stored), median and 90th
percentile over the launch's warps.

    python3 bench/timeline_report.py records.csv [--png timeline.png]
    python3 bench/timeline_report.py --compare a.csv b.csv   (two builds or knobs, side by side)
    python3 bench/timeline_report.py --self-test

--png draws one bar per warp (start to end, wait and first stage marked) when
matplotlib is importable.
"""
import csv
import statistics
import sys

START, WAIT, STAGE, END, ITEM_MATH, ITEM_STORED = 0, 1, 2, 3, 4, 5


def load(path):
    with open(path, newline="") as f:
        return [
            {
                "grid": int(r["grid"]),
                "kind": r["kind"],
                "event": int(r["event"]),
                "block": int(r["block"]),
                "warp": int(r["warp"]),
                "smid": int(r["smid"]),
                "ns": int(r["ns"]),
                "clock": int(r.get("clock") or 0),
            }
            for r in csv.DictReader(f)
        ]


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]


def launches(records):
    """Per grid: kind, starts, each warp's first wait / last end, first stages, blocks, SMs."""
    by = {}
    for r in records:
        g = by.setdefault(r["grid"], {"kind": "?", "starts": [], "wait": {}, "end": {}, "stage": [],
                                      "blocks": set(), "sms": set()})
        w = (r["block"], r["warp"])
        if r["event"] == START:
            g["kind"] = r["kind"]
            g["starts"].append(r["ns"])
            g["blocks"].add(r["block"])
            g["sms"].add(r["smid"])
        elif r["event"] == WAIT:
            g["wait"][w] = min(g["wait"].get(w, r["ns"]), r["ns"])
        elif r["event"] == STAGE:
            g["stage"].append(r["ns"])
        elif r["event"] == END:
            g["end"][w] = max(g["end"].get(w, r["ns"]), r["ns"])
    out = [dict(grid=k, **v) for k, v in by.items() if v["starts"]]
    out.sort(key=lambda g: (min(g["starts"]), g["grid"]))
    return out


def items(records):
    """Per grid with item records: (kind, items per warp, first main loops, later main loops, epilogues), ns."""
    events, kind, first_stage = {}, {}, {}
    for r in records:
        w = (r["grid"], r["block"], r["warp"])
        if r["event"] == START:
            kind[r["grid"]] = r["kind"]
        elif r["event"] == STAGE:
            first_stage[w] = min(first_stage.get(w, r["ns"]), r["ns"])
        elif r["event"] in (ITEM_MATH, ITEM_STORED):
            events.setdefault(w, []).append((r["ns"], r["event"], r.get("clock", 0)))
    out = {}
    for w, ev in events.items():
        g = out.setdefault(w[0], {"kind": kind.get(w[0], "?"), "count": [], "first": [], "loop": [], "epilogue": [],
                                  "epilogue_clocks": []})
        ev.sort()
        prev_stored, n = first_stage.get(w), 0
        math = None
        for ns, e, clock in ev:
            if e == ITEM_MATH:
                math = (ns, clock)
                if prev_stored is not None:
                    (g["loop"] if n else g["first"]).append(ns - prev_stored)
            elif math is not None:  # ITEM_STORED of the item whose math was marked
                g["epilogue"].append(ns - math[0])
                g["epilogue_clocks"].append((clock - math[1]) % (1 << 32))  # the SM's clock(): finer than the timer
                prev_stored, math, n = ns, None, n + 1
        g["count"].append(n)
    return out


def item_report(records):
    per = items(records)
    if not per:
        return ""
    order = {g["grid"]: i for i, g in enumerate(launches(records))}
    q = lambda v, p: "-" if not v else f"{pct(v, p) / 1000:.2f}"
    lines = ["\n| # | kernel | items per warp (median / max) | first item's main loop | main loop median | p90 | "
             "epilogue median | p90 | epilogue SM cycles median |", "|" + "---|" * 9]
    for grid, g in sorted(per.items(), key=lambda kv: order.get(kv[0], 1 << 30)):
        lines.append(f"| {order.get(grid, '?')} | {g['kind']} | {int(statistics.median(g['count']))} / "
                     f"{max(g['count'])} | {q(g['first'], 0.5)} | {q(g['loop'], 0.5)} | {q(g['loop'], 0.9)} | "
                     f"{q(g['epilogue'], 0.5)} | {q(g['epilogue'], 0.9)} | "
                     f"{pct(g['epilogue_clocks'], 0.5) if g['epilogue_clocks'] else '-'} |")
    return "\n".join(lines) + "\n(µs per item and consumer warp)\n"


def report(records):
    gs = launches(records)
    if not gs:
        return "no launch with a start record\n"
    t0 = min(min(g["starts"]) for g in gs)
    us = lambda ns: "-" if ns is None else f"{(ns - t0) / 1000:.2f}"
    dus = lambda ns: "-" if ns is None else f"{ns / 1000:.2f}"
    lines = ["| # | kernel | blocks | SMs | first start | last start | first wait | median wait | +prev end | "
             "first stage | median stage | last stage | median end | p90 end | last end |",
             "|" + "---|" * 15]
    prev_end = None
    for i, g in enumerate(gs):
        waits, ends = list(g["wait"].values()), list(g["end"].values())
        first_wait = min(waits) if waits else None
        med = lambda v: None if not v else int(statistics.median(v))
        after = None if first_wait is None or prev_end is None else first_wait - prev_end
        lines.append(
            f"| {i} | {g['kind']} | {len(g['blocks'])} | {len(g['sms'])} | {us(min(g['starts']))} | "
            f"{us(max(g['starts']))} | {us(first_wait)} | {us(med(waits))} | {dus(after)} | "
            f"{us(min(g['stage']) if g['stage'] else None)} | {us(med(g['stage']))} | "
            f"{us(max(g['stage']) if g['stage'] else None)} | {us(med(ends))} | {us(pct(ends, 0.9))} | "
            f"{us(max(ends) if ends else None)} |")
        if ends:
            prev_end = max(ends)
    last = max(max(g["end"].values()) for g in gs if g["end"])
    lines.append(f"\nreplay: first start to last end {(last - t0) / 1000:.2f} µs over {len(gs)} launches")
    return "\n".join(lines) + "\n" + item_report(records)


def compare(a, b):
    """Per launch position, a's and b's first start, median wait, last end (µs from each replay's first start)."""
    ga, gb = launches(a), launches(b)
    ta = min(min(g["starts"]) for g in ga) if ga else 0
    tb = min(min(g["starts"]) for g in gb) if gb else 0
    f = lambda ns, t0: "-" if ns is None else f"{(ns - t0) / 1000:.2f}"
    med = lambda v: None if not v else int(statistics.median(v))
    lines = ["| # | kernel (a / b) | start a / b | median wait a / b | last end a / b |", "|---|---|---|---|---|"]
    for i in range(max(len(ga), len(gb))):
        x = ga[i] if i < len(ga) else None
        y = gb[i] if i < len(gb) else None
        cell = lambda g, key, t0: "-" if g is None else f(key(g), t0)
        kinds = f"{x['kind'] if x else '-'} / {y['kind'] if y else '-'}"
        lines.append(
            f"| {i} | {kinds} | {cell(x, lambda g: min(g['starts']), ta)} / {cell(y, lambda g: min(g['starts']), tb)} | "
            f"{cell(x, lambda g: med(list(g['wait'].values())), ta)} / {cell(y, lambda g: med(list(g['wait'].values())), tb)} | "
            f"{cell(x, lambda g: max(g['end'].values()) if g['end'] else None, ta)} / "
            f"{cell(y, lambda g: max(g['end'].values()) if g['end'] else None, tb)} |")
    return "\n".join(lines) + "\n"


def plot(records, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--png: matplotlib is not importable here; no plot", file=sys.stderr)
        return
    gs = launches(records)
    t0 = min(min(g["starts"]) for g in gs)
    starts = {}
    for r in records:
        if r["event"] == START:
            starts[(r["grid"], r["block"], r["warp"])] = r["ns"]
    fig, ax = plt.subplots(figsize=(14, 8))
    y = 0
    for i, g in enumerate(gs):
        color = f"C{i % 10}"
        for (b, w), end in sorted(g["end"].items()):
            s = starts.get((g["grid"], b, w))
            if s is None:
                continue
            ax.plot([(s - t0) / 1000, (end - t0) / 1000], [y, y], color=color, linewidth=0.6)
            if (b, w) in g["wait"]:
                ax.plot((g["wait"][(b, w)] - t0) / 1000, y, "|", color="k", markersize=2)
            y += 1
        ax.text(0, y, f"{i} {g['kind']}", fontsize=7, va="bottom")
    ax.set_xlabel("µs from the first kernel start")
    ax.set_ylabel("warps, by launch")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def self_test():
    rec = lambda grid, kind, ev, ns, block=0, warp=0, sm=0: {"grid": grid, "kind": kind, "event": ev,
                                                             "block": block, "warp": warp, "smid": sm, "ns": ns,
                                                             "clock": 2 * ns}
    records = [
        rec(1, "sort", START, 0), rec(1, "sort", END, 3000),
        rec(2, "decode GEMM", START, 500, 0, 0, 1), rec(2, "decode GEMM", START, 600, 1, 0, 2),
        rec(2, "?", WAIT, 3500, 0, 0, 1), rec(2, "?", WAIT, 3900, 1, 0, 2), rec(2, "?", WAIT, 9000, 1, 0, 2),
        rec(2, "decode GEMM", STAGE, 4200, 0, 0, 1), rec(2, "decode GEMM", END, 8000, 0, 0, 1),
        rec(2, "decode GEMM", END, 10000, 1, 0, 2),
    ]
    gs = launches(records)
    assert [g["grid"] for g in gs] == [1, 2]
    assert gs[1]["wait"] == {(0, 0): 3500, (1, 0): 3900}, gs[1]["wait"]
    text = report(records)
    row = [l for l in text.splitlines() if l.startswith("| 1 |")][0].split("|")
    assert row[2].strip() == "decode GEMM" and row[3].strip() == "2" and row[4].strip() == "2", row
    assert row[7].strip() == "3.50" and row[9].strip() == "0.50", row  # first wait; 0.5 µs after the sort's end
    assert row[10].strip() == "4.20" and row[15].strip() == "10.00", row
    assert "first start to last end 10.00 µs over 2 launches" in text, text
    # The same replay against one without the sort: rows by position, "-" where b has none.
    cmp = compare(records, [r for r in records if r["grid"] == 2]).splitlines()
    assert cmp[2].startswith("| 0 | sort / decode GEMM | 0.00 / 0.00 |"), cmp
    assert cmp[3].startswith("| 1 | decode GEMM / - | 0.50 / - |"), cmp
    # Items: warp (0, 0) of launch 2 runs two items (first stage at 4.2 µs, math 5.0 / 7.0,
    # stored 5.5 / 7.25), warp (1, 0) one (no first stage: its main loop is not known).
    records += [rec(2, "decode GEMM", ITEM_MATH, 5000, 0, 0, 1), rec(2, "decode GEMM", ITEM_STORED, 5500, 0, 0, 1),
                rec(2, "decode GEMM", ITEM_MATH, 7000, 0, 0, 1), rec(2, "decode GEMM", ITEM_STORED, 7250, 0, 0, 1),
                rec(2, "decode GEMM", ITEM_MATH, 9500, 1, 0, 2), rec(2, "decode GEMM", ITEM_STORED, 9900, 1, 0, 2)]
    it = items(records)
    assert list(it) == [2], it
    assert sorted(it[2]["count"]) == [1, 2] and it[2]["first"] == [800] and it[2]["loop"] == [1500], it
    assert sorted(it[2]["epilogue"]) == [250, 400, 500], it
    assert sorted(it[2]["epilogue_clocks"]) == [500, 800, 1000], it
    row = [l for l in report(records).splitlines() if l.startswith("| 1 | decode GEMM | 1 / 2")]
    assert row and row[0].split("|")[4].strip() == "0.80" and row[0].split("|")[5].strip() == "1.50", row
    print("timeline_report self-test: ok")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        self_test()
        sys.exit(0)
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    if sys.argv[1] == "--compare":
        sys.stdout.write(compare(load(sys.argv[2]), load(sys.argv[3])))
        sys.exit(0)
    recs = load(sys.argv[1])
    sys.stdout.write(report(recs))
    if "--png" in sys.argv:
        plot(recs, sys.argv[sys.argv.index("--png") + 1])
