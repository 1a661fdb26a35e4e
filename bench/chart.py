#!/usr/bin/env python3
"""Draws bench/results/latest.png from latest.json: one bar per row that has an anchor,
its ratio to the anchor (1.0 = as fast as the anchor), with the goal line where one applies.

Usage: bench/chart.py [latest.json] [latest.png]       (needs python3-matplotlib)
"""
import json
import sys

# Goals from the issues (ratio to the row's anchor; higher is better).
GOALS = {"proxy_gbps": 1.2, "proxy_conn_per_s": 1.0, "xsk_reflector_mpps": 0.95,
         "dsr_mpps": 0.9, "passthrough_mpps": 0.9}


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else src.rsplit(".", 1)[0] + ".png"
    with open(src) as f:
        rows = [r for r in json.load(f) if r.get("ratio") is not None]
    if not rows:
        print("chart.py: no row with an anchor in %s; no chart drawn" % src, file=sys.stderr)
        return 0
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["%s\nvs %s" % (r["name"], r["anchor"]) for r in rows]
    ratios = [r["ratio"] for r in rows]
    colors = []
    for r in rows:
        goal = GOALS.get(r["name"])
        colors.append("tab:gray" if goal is None else ("tab:green" if r["ratio"] >= goal else "tab:red"))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 5))
    bars = ax.bar(range(len(rows)), ratios, color=colors)
    ax.axhline(1.0, color="black", linewidth=0.8)
    for i, r in enumerate(rows):
        goal = GOALS.get(r["name"])
        if goal is not None:
            ax.plot([i - 0.4, i + 0.4], [goal, goal], color="tab:blue", linestyle="--", linewidth=1.2)
        ax.annotate("%.2fx\n%.3g %s" % (r["ratio"], r["value"], r["unit"]), (i, ratios[i]),
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("ratio to anchor (1 = the anchor)")
    ax.set_ylim(0, max(ratios + [1.0]) * 1.2)
    ax.set_title("Convey benchmarks vs their anchors (green: goal met, red: missed, gray: no goal; dashed: goal)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print("chart.py: wrote %s" % dst, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
