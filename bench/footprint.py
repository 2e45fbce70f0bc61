#!/usr/bin/env python3
"""Figure 5: footprint. The supervisor's own RSS and CPU, idle and per restart, beside start_server and gunicorn.

All tools start together and sit idle for the same window (`--idle`, 60 s; dewy polls its file:// registry
with its default `interval = 10s`): CPU time from /proc/PID/schedstat, RSS sampled every 100 ms. Then each
gets N graceful restarts, one after the other, with no load: CPU per restart and the RSS peak. What is
counted is the supervisor, never the app: dewy's master and every process of its own (the poller worker and
the sentinel), start_server's perl process, gunicorn's master (its worker is the app). RSS counts a page
shared by two processes twice (the sentinel is forked from the master); PSS divides it among them, so the
rows give both.

    python3 bench/footprint.py [--idle 60] [--restarts 10] [--quick] [--json PATH] [--keep]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (SETTLE_TIMEOUT, Dewy, Load, ResourceMonitor, Scratch, common_args,  # noqa: E402
                     comparison_rows, cpu_seconds, interpreter_rss, peer_classes, peers_missing, report,
                     restart_once, wait_until)

MIB = 1 / 2 ** 20
METRICS = [
    ("idle: main process RSS, MiB", "idle_rss_main", "%.1f", MIB),
    ("idle: helpers RSS, MiB (dewy: the poller and the sentinel)", "idle_rss_helpers", "%.1f", MIB),
    ("idle: main + helpers RSS, MiB", "idle_rss_all", "%.1f", MIB),
    ("idle: main process PSS, MiB", "idle_pss_main", "%.1f", MIB),
    ("idle: helpers PSS, MiB", "idle_pss_helpers", "%.1f", MIB),
    ("idle: main + helpers PSS, MiB", "idle_pss_all", "%.1f", MIB),
    ("idle: main process CPU, % of a core", "idle_cpu_main_pct", "%.3f", 1),
    ("idle: main + helpers CPU, % of a core", "idle_cpu_all_pct", "%.3f", 1),
    ("restarts done", "restarts", "%d", 1),
    ("per restart: main process CPU, ms", "restart_cpu_main", "%.2f", 1000),
    ("per restart: main + helpers CPU, ms", "restart_cpu_all", "%.2f", 1000),
    ("restarts: main process RSS peak, MiB", "restart_rss_main", "%.1f", MIB),
    ("restarts: main + helpers RSS peak, MiB", "restart_rss_all", "%.1f", MIB),
    ("restarts: main + helpers PSS peak, MiB", "restart_pss_all", "%.1f", MIB),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle window (default 60)")
    parser.add_argument("--restarts", type=int, default=10)
    common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.idle, args.restarts = min(args.idle, 10.0), min(args.restarts, 3)
    missing = peers_missing()
    results = {}
    with Scratch("dewy-bench-footprint-", args.keep) as scratch:
        sups = [scratch.supervisor(Dewy, interval="10s")] + [scratch.supervisor(c) for c in peer_classes(missing)]
        pids = {}
        for sup in sups:
            print("[%s] starting" % sup.name, flush=True)
            pids[sup.name] = sup.start()
        dewy = sups[0]
        wait_until(lambda: dewy.helpers(), SETTLE_TIMEOUT, "dewy's poller and sentinel", dewy.details)
        time.sleep(2)  # past the start-up and dewy's first poll
        monitors = {s.name: ResourceMonitor(s.ps, s.helpers(), pss=True) for s in sups}
        before = {s.name: (cpu_seconds([s.ps]), cpu_seconds(s.helpers())) for s in sups}
        for m in monitors.values():
            m.start()
        print("idle for %.0fs ..." % args.idle, flush=True)
        time.sleep(args.idle)
        for s in sups:
            m = monitors[s.name]
            m.stop()
            main_cpu = cpu_seconds([s.ps]) - before[s.name][0]
            helper_cpu = cpu_seconds(s.helpers()) - before[s.name][1]
            results[s.name] = {
                "idle_rss_main": m.peak_main, "idle_rss_helpers": m.peak_helpers, "idle_rss_all": m.peak_all,
                "idle_pss_main": m.peak_pss_main, "idle_pss_helpers": m.peak_pss_helpers,
                "idle_pss_all": m.peak_pss_all,
                "idle_cpu_main_pct": main_cpu / args.idle * 100,
                "idle_cpu_all_pct": (main_cpu + helper_cpu) / args.idle * 100,
                "idle_seconds": args.idle}
        for s in sups:
            load = Load(s.port, 1, 0)  # not started: restart_once's own probe failures are counted in it
            load.t0 = time.monotonic()
            helpers = s.helpers()
            monitor = ResourceMonitor(s.ps, helpers, pss=True)
            monitor.start()
            c0, h0 = cpu_seconds([s.ps]), cpu_seconds(helpers)
            pid, done = pids[s.name], 0
            try:
                for _ in range(args.restarts):
                    pid = restart_once(s, load, pid, status_grace=0.2)["new_pid"]
                    done += 1
            except Exception as exc:  # noqa: BLE001
                print("[%s] restarts broke: %s" % (s.name, str(exc).split("\n")[0]), flush=True)
            monitor.stop()
            main_cpu, helper_cpu = cpu_seconds([s.ps]) - c0, cpu_seconds(helpers) - h0
            results[s.name].update({
                "restarts": done, "restart_cpu_main": main_cpu / done if done else None,
                "restart_cpu_all": (main_cpu + helper_cpu) / done if done else None,
                "restart_rss_main": monitor.peak_main, "restart_rss_all": monitor.peak_all,
                "restart_pss_all": monitor.peak_pss_all,
                "probe_failures": sum(load.failed_by_kind.values()), "command": " ".join(s.command)})
            print("[%s] %d restarts: %.2f ms CPU each (main)" % (s.name, done, main_cpu / max(done, 1) * 1000),
                  flush=True)
    tools = list(results)
    columns, rows = comparison_rows(METRICS, results, tools)
    floor = interpreter_rss()
    notes = ["Idle window %.0f s, all tools at once; dewy interval = 10s (its default), ready = delay:1s; "
             "start_server --interval=1; gunicorn 1 gthread worker." % args.idle,
             "Bare interpreter RSS (the floor under any Python supervisor): %s." % floor,
             "The restarts run without load (dewy USR1, the peers HUP); CPU from /proc/PID/schedstat.",
             "dewy's helpers: the poller and the sentinel (forked from the master: RSS counts the pages they "
             "share twice, PSS once, divided); PSS from /proc/PID/smaps_rollup, sampled with RSS every 100 ms."]
    report(args, 5, "footprint: the supervisor's RSS and CPU, idle (%.0f s) and per restart" % args.idle,
           columns, rows, notes, missing, {"results": results, "interpreter_rss": floor})
    return 0


if __name__ == "__main__":
    sys.exit(main())
