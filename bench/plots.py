#!/usr/bin/env python3
"""The pictures of bench/RESULTS.md (matplotlib, PNG in bench/), drawn from the figure scripts' JSON.

  timeline.png   figure 1: answers per 100 ms, stacked by the version that gave them, one panel per tool;
                 deploys (grey) and bad releases (orange) marked, failed requests in red below the axis
  latency.png    figure 2: p50 and max latency per 100 ms across the restarts, switches shaded
  soak_rss.png   RSS of the master and the poller over the soak (bench/soak.py's JSON: `bench/run --soak N`)

bench/run calls draw(); alone:  python3 bench/plots.py figure1.json [figure2.json] [--soak soak.json] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
SOAK = 9  # bench/run files the soak (bench/soak.py) as number 9, after the eight figures


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt
    return plt


def _version_key(v: str):
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (999,)


def timeline(doc: dict, path: str) -> None:
    """Figure 1's answers per 100 ms by version, one panel per tool, deploys and failures marked."""
    plt = _pyplot()
    tools = [t for t in doc["extra"] if doc["extra"][t].get("timeline")]
    versions = sorted({v for t in tools for v in doc["extra"][t]["timeline"]["versions"]}, key=_version_key)
    cmap = plt.get_cmap("tab20")
    colour = {v: cmap(i % 20) for i, v in enumerate(versions)}
    fig, axes = plt.subplots(len(tools), 1, figsize=(13, 2.9 * len(tools)), sharex=True, squeeze=False)
    for ax, tool in zip(axes[:, 0], tools):
        tl = doc["extra"][tool]["timeline"]
        n = len(tl["failed"])
        xs = [i * tl["bin"] for i in range(n)]
        bottom = [0] * n
        for v in versions:
            ys = tl["versions"].get(v)
            if not ys:
                continue
            ax.bar(xs, ys, width=tl["bin"], bottom=bottom, color=colour[v], align="edge", label=v, linewidth=0)
            bottom = [b + y for b, y in zip(bottom, ys)]
        if any(tl["failed"]):
            ax.bar(xs, [-f for f in tl["failed"]], width=tl["bin"], color="red", align="edge", label="failed",
                   linewidth=0)
        for ev in doc["extra"][tool].get("events", []):
            bad = not ev["what"].startswith("deploy")
            ax.axvline(ev["t"], color="darkorange" if bad else "grey", linestyle="-" if bad else "--", linewidth=1)
            if bad:
                ax.text(ev["t"], ax.get_ylim()[1] * 0.92, " " + ev["what"], fontsize=8, color="darkorange", va="top")
        total_failed = sum(tl["failed"])
        ax.set_title("%s — %d failed request(s)" % (tool, total_failed), loc="left", fontsize=10)
        ax.set_ylabel("answers / 100 ms")
        ax.axhline(0, color="black", linewidth=0.5)
    axes[-1, 0].set_xlabel("seconds since the load started (grey dashes: deploys; orange: bad releases; "
                           "red below 0: failed requests)")
    handles, labels = [], []
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper right", ncol=min(8, len(labels)), fontsize=8, title="answered by")
    fig.suptitle("Figure 1: answers per 100 ms, coloured by the version that gave them", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def latency(doc: dict, path: str) -> None:
    """Figure 2's p50 and max latency per 100 ms across the restarts, switch windows shaded."""
    plt = _pyplot()
    tools = [t for t in doc["extra"] if doc["extra"][t].get("timeline")]
    fig, axes = plt.subplots(len(tools), 1, figsize=(13, 2.6 * len(tools)), sharex=True, squeeze=False)
    for ax, tool in zip(axes[:, 0], tools):
        tl = doc["extra"][tool]["timeline"]
        xs = [i * tl["bin"] for i in range(len(tl["p50_ms"]))]
        # NaN breaks the line where a bin had no request (a stall shows as a gap, not a slope).
        nan = float("nan")
        ax.plot(xs, [nan if y is None else y for y in tl["max_ms"]], color="tab:red", linewidth=0.8, label="max")
        ax.plot(xs, [nan if y is None else y for y in tl["p50_ms"]], color="tab:blue", linewidth=0.8, label="p50")
        for a, b in doc["extra"][tool].get("windows", []):
            ax.axvspan(a, b, color="grey", alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(tool, loc="left", fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since the load started (grey: signal -> old generation gone)")
    fig.suptitle("Figure 2: latency of GET / per 100 ms across the restarts", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def soak_rss(doc: dict, path: str) -> None:
    """RSS of the master and the poller over the soak, from bench/soak.py's JSON (columns + rows)."""
    plt = _pyplot()
    cols = doc["columns"]
    x = cols.index("deploys")
    fig, ax = plt.subplots(figsize=(13, 3.5))
    for name in ("master RSS MiB", "poller RSS MiB"):
        if name in cols:
            i = cols.index(name)
            ax.plot([r[x] for r in doc["rows"]], [r[i] for r in doc["rows"]], marker="o", label=name.split()[0])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("deploys")
    ax.set_ylabel("RSS, MiB")
    ax.legend(fontsize=8)
    ax.set_title("RSS over the soak (%s)" % doc.get("title", "bench/soak.py"), loc="left", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw(docs: dict, out_dir: str, soak: dict | None = None) -> list:
    """Draw every picture the documents (figure number -> JSON document) allow; the file names written."""
    made = []
    jobs = [(1, "timeline.png", timeline), (2, "latency.png", latency)]
    for number, name, fn in jobs:
        doc = docs.get(number)
        if doc and doc.get("extra"):
            try:
                fn(doc, os.path.join(out_dir, name))
                made.append(name)
            except (KeyError, TypeError, ValueError) as exc:  # a document without the data: say so, go on
                print("picture %s not drawn: %r" % (name, exc), flush=True)
    soak = soak or docs.get(SOAK)
    if soak and soak.get("rows"):
        soak_rss(soak, os.path.join(out_dir, "soak_rss.png"))
        made.append("soak_rss.png")
    return made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", help="figure JSON files written with --json")
    ap.add_argument("--soak", help="bench/soak.py's JSON with RSS samples")
    ap.add_argument("--out", default=BENCH, help="where the PNGs go (default bench/)")
    args = ap.parse_args()
    docs = {}
    for path in args.json:
        with open(path) as fh:
            doc = json.load(fh)
        docs[doc["figure"]] = doc
    soak = None
    if args.soak:
        with open(args.soak) as fh:
            soak = json.load(fh)
    print("wrote: %s" % ", ".join(draw(docs, args.out, soak)) or "nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
