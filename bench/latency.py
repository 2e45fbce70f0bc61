#!/usr/bin/env python3
"""Figure 2: request latency p50 / p99 / max during switches vs. idle, dewy beside start_server and gunicorn.

Each tool serves the sample app under the same load (4 threads GET /, one GET /slow?ms=200, a new
connection per request); after a quiet stretch it gets N graceful restarts (dewy USR1 with ready = delay:1s;
start_server HUP with --interval=1; gunicorn HUP). A request belongs to a switch when it started between the
signal and 100 ms after the old generation exited; every other request counts as idle. Latencies are those of
the fast GET / requests that succeeded; failed requests are counted separately.

    python3 bench/latency.py [--restarts 10] [--quick] [--json PATH] [--keep]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Dewy, Load, Scratch, common_args, comparison_rows, latency_summary, peer_classes,  # noqa: E402
                     peers_missing, report, restart_once, timeline)

METRICS = [
    ("restarts done", "restarts", "%d", 1),
    ("requests failed (all kinds)", "failed", "%d", 1),
    ("idle: requests", "n_idle", "%d", 1),
    ("idle: p50, ms", "p50_idle", "%.2f", 1000),
    ("idle: p99, ms", "p99_idle", "%.2f", 1000),
    ("idle: max, ms", "max_idle", "%.1f", 1000),
    ("switches: requests", "n_switch", "%d", 1),
    ("switches: p50, ms", "p50_switch", "%.2f", 1000),
    ("switches: p99, ms", "p99_switch", "%.2f", 1000),
    ("switches: max, ms", "max_switch", "%.1f", 1000),
    ("p99 switches / p99 idle", "p99_growth", "%.2f", 1),
]


def run_tool(scratch: Scratch, cls, args) -> dict:
    """One tool: start, quiet load, N restarts under load; latency inside and outside the switches."""
    sup = scratch.supervisor(cls)
    print("[%s] starting" % sup.name, flush=True)
    pid = sup.start()
    load = Load(sup.port, args.threads, args.slow_ms)
    switches, error = [], None
    load.start()
    try:
        time.sleep(args.idle)
        for i in range(args.restarts):
            r = restart_once(sup, load, pid)
            switches.append(r)
            pid = r["new_pid"]
            print("[%s] restart %2d/%d: new gen answers after %4.0f ms, old gen gone after %5.0f ms"
                  % (sup.name, i + 1, args.restarts, r["first_answer"] * 1000, r["old_exited"] * 1000), flush=True)
        time.sleep(1.0)
    except Exception as exc:  # noqa: BLE001 — report what broke, keep the other tools' runs
        error = str(exc).split("\n")[0]
        print("[%s] run broke: %s\n%s" % (sup.name, error, sup.details()), flush=True)
    finally:
        load.stop()
        sup.stop()
    windows = [(r["signal"], r["signal"] + r["old_exited"] + 0.1) for r in switches]
    result = latency_summary(load.records.get("fast", []), windows)
    result.update({"restarts": len(switches), "failed": sum(load.failed_by_kind.values()), "error": error,
                   "reasons": load.reasons[:5], "command": " ".join(sup.command),
                   "timeline": timeline(load), "events": [{"t": w[0], "what": "restart", "ok": True} for w in windows],
                   "windows": windows})
    result["p99_growth"] = (result["p99_switch"] / result["p99_idle"]) if result["p99_idle"] else None
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of load before the first restart")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--slow-ms", type=int, default=200)
    common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.restarts, args.idle = min(args.restarts, 3), 2.0
    missing = peers_missing()
    results = {}
    with Scratch("dewy-bench-latency-", args.keep) as scratch:
        for cls in [Dewy] + peer_classes(missing):
            results[cls.name] = run_tool(scratch, cls, args)
    tools = list(results)
    columns, rows = comparison_rows(METRICS, results, tools)
    notes = ["Same readiness rule where the tool has one: dewy ready = delay:1s, start_server --interval=1 "
             "(gunicorn stops the old worker as soon as the new one is forked)."]
    for t in tools:
        if results[t]["error"]:
            notes.append("%s: the run broke: %s" % (t, results[t]["error"]))
        if results[t]["reasons"]:
            notes.append("%s: first failed requests: %s" % (t, "; ".join(results[t]["reasons"][:3])))
    extra = {t: {k: results[t][k] for k in ("timeline", "events", "windows", "command")} for t in tools}
    report(args, 2, "latency during switches vs idle (%d restarts under load)" % args.restarts,
           columns, rows, notes, missing, extra)
    return 0 if all(results[t]["failed"] == 0 and not results[t]["error"] for t in tools) else 1


if __name__ == "__main__":
    sys.exit(main())
