#!/usr/bin/env python3
"""Graceful restarts under load: dewy-master beside Server::Starter (`start_server`), in one run.

Both supervisors run the same sample app (one release tarball, `dewy/demo/app.py`) with the same
interpreter on a free 127.0.0.1 port, get the same HTTP load and the same number of graceful
restarts, and use the same readiness rule ("alive N seconds after the start counts as ready",
stop signal TERM for the old generation):

  Server::Starter   start_server --interval=N --signal-on-hup=TERM ...   restart: kill -HUP
  dewy              ready = delay:Ns, stop-signal = TERM                   restart: kill -USR1

After each restart signal the benchmark waits until the new generation answers, the old generation
has exited and the supervisor's status file says so (Server::Starter: `--status-file` has exactly
one `generation:pid` line; dewy: `.dewy/status.json` names the new generation and no
`retiring_pids`) before it sends the next one.

Usage:
  python3 bench/restart.py [--restarts N] [--ready-delay S] [--threads N] [--slow-ms MS]
                           [--order dewy-first|peer-first] [--no-peer] [--require-peer] [--keep]

Exit codes: 0 all restarts done and no request failed; 1 a request failed or a supervisor run broke;
2 bad arguments; 3 --require-peer and start_server is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import time

# bench/ is on sys.path when this runs as `python3 bench/restart.py`; the machinery is shared.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (PEER, PEER_INSTALL, STATUS_GRACE, VERSION, Dewy, Load, ResourceMonitor,  # noqa: E402
                     ServerStarter, Supervisor, build_release, cpu_seconds, ignore_interrupts, interpreter_rss,
                     interrupt_on_term, measure_idle, percentile, print_header, restart_once, tail)


def run_supervisor(sup: Supervisor, args) -> dict:
    """Start sup, put it under load, restart it args.restarts times, stop it; the measurements."""
    print("[%s] starting" % sup.name, flush=True)
    pid = sup.start()
    print("[%s] command: %s" % (sup.name, shlex.join(sup.command)), flush=True)
    if isinstance(sup, Dewy):
        with open(sup.ini) as fh:
            print("[%s] %s:\n    %s" % (sup.name, sup.ini, fh.read().strip().replace("\n", "\n    ")))
    helpers = sup.helpers()
    monitor = ResourceMonitor(sup.ps, helpers)
    load = Load(sup.port, args.threads, args.slow_ms)
    restarts = []
    error = None
    monitor.start()
    cpu_main0, cpu_helpers0 = cpu_seconds([sup.ps]), cpu_seconds(helpers)
    load.start()
    try:
        time.sleep(args.warmup)  # requests in flight before the first signal
        for i in range(args.restarts):
            r = restart_once(sup, load, pid)
            restarts.append(r)
            pid = r["new_pid"]
            print("[%s] restart %2d/%d: new gen answers after %4.0f ms, old gen gone after %5.0f ms, status %s"
                  % (sup.name, i + 1, args.restarts, r["first_answer"] * 1000, r["old_exited"] * 1000,
                     "in step" if r["status_lag"] is not None and r["status_lag"] < 0.05
                     else "lagged %.0f ms" % (r["status_lag"] * 1000) if r["status_lag"] is not None
                     else "STALE > %.0f ms" % (STATUS_GRACE * 1000)), flush=True)
        time.sleep(args.warmup)  # and after the last switch
    except Exception as exc:  # noqa: BLE001 — report what broke, keep the other supervisor's run
        error = str(exc)
    finally:
        load.stop()
        cpu_main = cpu_seconds([sup.ps]) - cpu_main0
        cpu_helpers = cpu_seconds(helpers) - cpu_helpers0
        monitor.stop()
    return summarise(sup, load, restarts, monitor, cpu_main, cpu_helpers, error)


def summarise(sup, load, restarts, monitor, cpu_main, cpu_helpers, error) -> dict:
    """Turn raw records into the numbers the table shows."""
    duration = load.stopped_at - load.t0
    fast = load.records.get("fast", [])
    slow = load.records.get("slow", [])
    ok = sum(1 for r in fast + slow if r[2])
    failed = sum(load.failed_by_kind.values())
    lat = [r[1] for r in fast if r[2]]
    windows = [(r["signal"], r["signal"] + r["old_exited"]) for r in restarts]
    in_switch = [r[1] for r in fast if r[2] and any(a <= r[0] <= b for a, b in windows)]
    first = [r["first_answer"] for r in restarts]
    done = [r["old_exited"] for r in restarts]
    lags = [r["status_lag"] for r in restarts]
    # The sample app logs "got SIGTERM: stopped accepting, finishing N connection(s)" when it
    # retires: proof that requests really were in flight at the switches (and then succeeded).
    inflight = [int(m) for m in re.findall(r"got SIGTERM: stopped accepting, finishing (\d+) connection",
                                           tail(sup.log_path, 100000))]
    return {
        "name": sup.name, "command": sup.command, "error": error, "restarts": len(restarts),
        "duration": duration, "ok": ok, "failed": failed, "failed_by_kind": dict(load.failed_by_kind),
        "reasons": list(load.reasons), "slow_ok": sum(1 for r in slow if r[2]),
        "throughput": ok / duration if duration > 0 else math.nan,
        "p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat) if lat else math.nan,
        "p99_switch": percentile(in_switch, 99),
        "first_mean": sum(first) / len(first) if first else math.nan, "first_max": max(first, default=math.nan),
        "done_mean": sum(done) / len(done) if done else math.nan, "done_max": max(done, default=math.nan),
        "inflight_total": sum(inflight), "inflight_switches": sum(1 for n in inflight if n),
        "status_stale": sum(1 for x in lags if x is None),
        "status_lag_max": max((x for x in lags if x is not None), default=math.nan),
        "rss_main": monitor.peak_main, "rss_all": monitor.peak_all, "rss_helpers": monitor.peak_helpers,
        "cpu_main": cpu_main, "cpu_all": cpu_main + cpu_helpers,
        "log_tail": tail(sup.log_path, 60) if (failed or error) else "",
    }


# --------------------------------------------------------------------------- report
ROWS = [
    # (label, key, format, scale)
    ("restarts done", "restarts", "%d", 1),
    ("requests ok (fast + slow)", "ok", "%d", 1),
    ("requests failed (all kinds)", "failed", "%d", 1),
    ("throughput, ok req/s over the run", "throughput", "%.0f", 1),
    ("fast latency p50, ms", "p50", "%.2f", 1000),
    ("fast latency p99, ms", "p99", "%.2f", 1000),
    ("fast latency max, ms", "max", "%.1f", 1000),
    ("fast latency p99 during switches, ms", "p99_switch", "%.2f", 1000),
    ("switches with requests in flight at TERM", "inflight_switches", "%d", 1),
    ("in-flight requests the old gens finished", "inflight_total", "%d", 1),
    ("switch: signal -> new gen answers, mean ms", "first_mean", "%.0f", 1000),
    ("switch: signal -> new gen answers, max ms", "first_max", "%.0f", 1000),
    ("switch: signal -> old gen exited, mean ms", "done_mean", "%.0f", 1000),
    ("switch: signal -> old gen exited, max ms", "done_max", "%.0f", 1000),
    ("status file stale > %.1fs after old gen exit" % STATUS_GRACE, "status_stale", "%d", 1),
    ("supervisor RSS peak, MiB (main process)", "rss_main", "%.1f", 1 / 2 ** 20),
    ("supervisor RSS peak, MiB (+ helpers)", "rss_all", "%.1f", 1 / 2 ** 20),
    ("helpers RSS peak, MiB (dewy: the poller)", "rss_helpers", "%.1f", 1 / 2 ** 20),
    ("supervisor CPU during run, ms (main)", "cpu_main", "%.1f", 1000),
    ("supervisor CPU during run, ms (+ helpers)", "cpu_all", "%.1f", 1000),
]


def fmt(value, pattern: str, scale: float) -> str:
    """value * scale formatted, or '-' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return pattern % (value * scale)


def table(results: dict) -> str:
    """The comparison table as GitHub markdown (readable as plain text too)."""
    d, p = results.get("dewy"), results.get(PEER)
    lines = ["| metric | dewy | Server::Starter | dewy / S::S |", "|---|---:|---:|---:|"]
    for label, key, pattern, scale in ROWS:
        a = d[key] if d else None
        b = p[key] if p else None
        ratio = "-"
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not (
                math.isnan(a) or math.isnan(b)) and b != 0:
            ratio = "%.2f" % (a / b)
        elif a == 0 and b == 0:
            ratio = "="
        lines.append("| %s | %s | %s | %s |" % (label, fmt(a, pattern, scale), fmt(b, pattern, scale), ratio))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def parse_args(argv):
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--restarts", type=int, default=10, help="graceful restarts per supervisor (default 10)")
    ap.add_argument("--ready-delay", type=float, default=1,
                    help="seconds a new generation must stay alive to count as ready, for both (default 1; "
                         "start_server accepts whole seconds only, so 0 or 1 or ...)")
    ap.add_argument("--threads", type=int, default=4, help="fast client threads, GET / (default 4)")
    ap.add_argument("--slow-ms", type=int, default=200,
                    help="one more client GETs /slow?ms=N so requests are in flight at each switch "
                         "(default 200; 0: none)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of load before the first and after "
                                                              "the last restart (default 1)")
    ap.add_argument("--order", choices=("dewy-first", "peer-first"), default="dewy-first",
                    help="which supervisor runs first (the box may drift; swap to check)")
    ap.add_argument("--no-peer", action="store_true", help="run dewy only")
    ap.add_argument("--require-peer", action="store_true", help="exit 3 if start_server is missing")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs) and print its path")
    ap.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    ap.add_argument("--no-site", action="store_true",
                    help="run dewy-master with python -S (site-packages on PYTHONPATH, no .pth hooks executed)")
    ap.add_argument("--idle", type=float, default=0, metavar="SECONDS",
                    help="afterwards, measure dewy's idle CPU (master + poller, interval = 10s) for SECONDS")
    args = ap.parse_args(argv)
    if args.restarts < 1 or args.threads < 1 or args.slow_ms < 0 or args.ready_delay < 0:
        ap.error("--restarts and --threads must be >= 1, --slow-ms and --ready-delay >= 0")
    return args, ap


def main(argv=None) -> int:
    """Run the benchmark; see the module docstring for exit codes."""
    args, ap = parse_args(sys.argv[1:] if argv is None else argv)
    print_header()
    peer = None if args.no_peer else shutil.which(PEER)
    if not args.no_peer and peer is None:
        print("\n*** Server::Starter SKIPPED: `%s` is not on PATH; %s. Only dewy is measured. ***\n"
              % (PEER, PEER_INSTALL), flush=True)
        if args.require_peer:
            return 3
    if peer and args.ready_delay != int(args.ready_delay):
        ap.error("--ready-delay %g: start_server's --interval takes whole seconds only (Getopt `interval=i`, "
                 "Perl's integer sleep), so the same readiness rule for both needs 0, 1, 2, ..." % args.ready_delay)
    if args.ready_delay == int(args.ready_delay):
        args.ready_delay = int(args.ready_delay)
    print("load: %d client thread(s) GET / + %s, new connection per request; %d restart(s) each; "
          "ready = alive after %gs; stop signal TERM" % (
              args.threads, "1 GET /slow?ms=%d" % args.slow_ms if args.slow_ms else "no slow client",
              args.restarts, args.ready_delay), flush=True)

    interrupt_on_term()  # a CI timeout's TERM must also reach the finally below

    scratch = tempfile.mkdtemp(prefix="dewy-bench-restart-")
    results = {}
    idle = None
    sups = []
    interrupted = False
    try:
        tarball = os.path.join(scratch, "app.tar.gz")
        build_release(tarball, VERSION)
        order = ["dewy", PEER] if args.order == "dewy-first" else [PEER, "dewy"]
        for name in order:
            if name == PEER and not peer:
                continue
            base = os.path.join(scratch, name)
            os.makedirs(base)
            sup = (Dewy if name == "dewy" else ServerStarter)(base, tarball, args.ready_delay)
            sup.no_site = args.no_site
            sups.append(sup)
            try:
                results[name] = run_supervisor(sup, args)
            except Exception as exc:  # noqa: BLE001 — start-up failed: say so, measure the other one
                results[name] = None
                print("[%s] FAILED: %s" % (name, exc), flush=True)
            finally:
                sup.stop()
        if args.idle > 0:
            base = os.path.join(scratch, "dewy-idle")
            os.makedirs(base)
            sup = Dewy(base, tarball, args.ready_delay)
            sup.no_site, sup.interval = args.no_site, "10s"
            sups.append(sup)
            try:
                idle = measure_idle(sup, args.idle)
            finally:
                sup.stop()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the supervisors and cleaning up", flush=True)
        interrupted = True
    finally:
        ignore_interrupts()  # a second Ctrl-C must not abandon the clean-up
        for sup in sups:
            sup.stop()
        if args.keep:
            print("scratch directory kept: %s" % scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if interrupted:
        return 130

    print()
    print(table(results))
    print()
    if idle:
        print("idle, %(seconds).0fs with interval = 10s: master %(master_ms).1f ms CPU (%(master_pct).3f %% of a core), "
              "poller %(poller_ms).1f ms (%(poller_pct).3f %%), together %(total_pct).3f %% of a core; "
              "RSS master %(rss_master).1f MiB, poller %(rss_poller).1f MiB" % idle)
    print("bare interpreter RSS (%s -c ''): %s" % (sys.executable, interpreter_rss()))
    bad = False
    for name, r in results.items():
        if r is None:
            bad = True
            continue
        if r["error"]:
            bad = True
            print("[%s] run broke after %d restart(s): %s" % (name, r["restarts"], r["error"]))
        if r["failed"]:
            bad = True
            print("[%s] %d request(s) FAILED (%s):" % (name, r["failed"], ", ".join(
                "%s: %d" % kv for kv in sorted(r["failed_by_kind"].items()))))
            for reason in r["reasons"]:
                print("    %s" % reason)
        if r["log_tail"]:
            print("[%s] supervisor log tail:\n%s" % (name, r["log_tail"]))
    if args.no_peer:
        print("Server::Starter was not measured (--no-peer).")
    elif not peer:
        print("Server::Starter was not measured (%s not found; %s)." % (PEER, PEER_INSTALL))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
