#!/usr/bin/env python3
"""Figure 1: failed requests over N deploys under load, dewy beside start_server and gunicorn; then two bad releases.

Each tool serves the sample app under HTTP load (4 threads GET /, one GET /slow?ms=200, a new connection per
request) and is deployed N times, a new version each time:

  dewy          a real deploy: the version is published in a file:// registry (interval 0.5s), the poller
                downloads, unpacks and asks the master to switch; ready = notify:5s (READY=1 from the app)
  start_server  the release unpacked into releases/<v>, `current` moved, HUP (--interval=1)
  gunicorn      the same, HUP (new worker imports the new release; the old one is stopped at once)

After each deploy the bench waits until the new version answers and the old generation has exited.
Then two bad releases follow, the same for every tool:

  never-ready   the app serves but never sends READY=1 (dewy: refused at the notify timeout, the old
                version keeps serving; the peers have no such signal and switch to it)
  crash-at-start  the app exits 3 at once (dewy: refused; start_server: retries it every interval while
                the old worker serves; gunicorn: "Worker failed to boot", the master exits)

Every request's answer (which version) and failure is kept for the timeline picture (bench/plots.py).

    python3 bench/failures.py [--deploys 10] [--quick] [--json PATH] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (SETTLE_TIMEOUT, Dewy, Load, Scratch, common_args, fmt, peer_classes,  # noqa: E402
                     peers_missing, poll_until, report, restart_once, serving_version, tail, timeline)

def bad_release(sup, load, version: str, behaviour: str, watch: float) -> dict:
    """Deploy a bad release and watch what the tool does for `watch` seconds (dewy: until it refused)."""
    t0 = time.monotonic()
    failed0 = sum(load.failed_by_kind.values())
    before = serving_version(sup.port)
    sup.deploy(version, behaviour)
    outcome = ""
    if isinstance(sup, Dewy):
        def refused():
            last = sup.status().get("last_deploy") or {}
            return last if last.get("version") == version and last.get("ok") is False else None
        last = poll_until(refused, SETTLE_TIMEOUT + 10, 0.05)
        took = time.monotonic() - t0
        outcome = ("refused after %.1fs: %s" % (took, (last.get("error") or "").split(";")[0][:120])
                   if last else "NOT refused within %.0fs" % (SETTLE_TIMEOUT + 10))
        time.sleep(1.0)  # and keep serving afterwards
    else:
        time.sleep(watch)
        log = tail(sup.log_path, 400)
        if sup.proc.poll() is not None:
            outcome = "%s exited with %s" % (sup.name, sup.proc.returncode)
            if "Worker failed to boot" in log:
                outcome += " (Worker failed to boot): nothing serves any more"
        else:
            retries = len(re.findall(r"seems to have failed to start", log))
            now = serving_version(sup.port)
            if retries:
                outcome = "keeps the old worker serving, retries the crashing release (%d tries in %.0fs)" % (
                    retries, watch)
            elif now == version:
                outcome = "switched to it: the bad release serves"
            else:
                outcome = "serving %s" % now
    after = serving_version(sup.port)
    return {"version": version, "behaviour": behaviour, "at": t0 - load.t0, "before": before, "after": after,
            "failed": sum(load.failed_by_kind.values()) - failed0, "outcome": outcome}


def run_tool(scratch: Scratch, cls, args) -> dict:
    """One tool: start, N deploys under load, the two bad releases; everything measured."""
    if cls is Dewy:
        sup = scratch.supervisor(Dewy, interval="0.5s", ready="notify:%ds" % args.notify_timeout)
    else:
        sup = scratch.supervisor(cls)
    print("[%s] starting" % sup.name, flush=True)
    pid = sup.start()
    load = Load(sup.port, args.threads, args.slow_ms, versions=None)
    events, switches, error = [], [], None
    load.start()
    try:
        time.sleep(1.0)
        for i in range(1, args.deploys + 1):
            version = "1.0.%d" % i
            r = restart_once(sup, load, pid, trigger=lambda v=version: sup.deploy(v), status_grace=0.2)
            pid = r["new_pid"]
            now = serving_version(sup.port)
            switches.append(r)
            events.append({"t": r["signal"], "what": "deploy %s" % version, "ok": now == version})
            print("[%s] deploy %2d/%d (%s): new version answers after %4.0f ms, old gen gone after %5.0f ms%s"
                  % (sup.name, i, args.deploys, version, r["first_answer"] * 1000, r["old_exited"] * 1000,
                     "" if now == version else "  (GET / answers %r!)" % now), flush=True)
        failed_good = sum(load.failed_by_kind.values())
        time.sleep(0.5)
        bad = []
        for version, behaviour in (("1.1.0", "never-ready"), ("1.2.0", "crash-at-start")):
            b = bad_release(sup, load, version, behaviour, args.watch)
            bad.append(b)
            events.append({"t": b["at"], "what": "%s %s" % (behaviour, version), "ok": False})
            print("[%s] %s release %s: %s; %d request(s) failed; serving %s -> %s" % (
                sup.name, behaviour, version, b["outcome"], b["failed"], b["before"], b["after"]), flush=True)
        time.sleep(0.5)
    except Exception as exc:  # noqa: BLE001 — report what broke, keep the other tools' runs
        error = str(exc).split("\n")[0]
        print("[%s] run broke: %s\n%s" % (sup.name, error, sup.details()), flush=True)
        failed_good, bad = sum(load.failed_by_kind.values()), []
    finally:
        load.stop()
        sup.stop()
    ok = sum(1 for kind in load.records.values() for r in kind if r[2])
    return {"name": sup.name, "deploys": len(switches), "failed_deploys": failed_good, "ok": ok,
            "seconds": load.stopped_at - load.t0,
            "first_mean": sum(r["first_answer"] for r in switches) / len(switches) if switches else None,
            "done_mean": sum(r["old_exited"] for r in switches) / len(switches) if switches else None,
            "bad": bad, "error": error, "reasons": load.reasons[:5], "events": events,
            "timeline": timeline(load), "command": " ".join(sup.command)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--slow-ms", type=int, default=200)
    parser.add_argument("--watch", type=float, default=5.0, help="seconds to watch a peer after a bad release")
    parser.add_argument("--notify-timeout", type=int, default=5, help="dewy's ready = notify:<N>s")
    common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.deploys, args.watch, args.notify_timeout = min(args.deploys, 3), 3.0, 3
    missing = peers_missing()
    results = {}
    with Scratch("dewy-bench-failures-", args.keep) as scratch:
        for cls in [Dewy] + peer_classes(missing):
            results[cls.name] = run_tool(scratch, cls, args)
    tools = list(results)
    columns = ["", *tools]
    rows = [
        ["deploys done (new version each)"] + [str(results[t]["deploys"]) for t in tools],
        ["requests answered ok (whole run)"] + [str(results[t]["ok"]) for t in tools],
        ["length of the run, s"] + ["%.1f" % results[t]["seconds"] for t in tools],
        ["**requests failed over the deploys**"] + ["**%d**" % results[t]["failed_deploys"] for t in tools],
        ["deploy -> new version answers, mean ms (dewy: publish, so with the poll wait)"]
        + [fmt(results[t]["first_mean"], "%.0f", 1000) for t in tools],
        ["deploy -> old generation gone, mean ms"] + [fmt(results[t]["done_mean"], "%.0f", 1000) for t in tools],
    ]
    for i, label in enumerate(("never-ready release", "crash-at-start release")):
        rows.append(["%s: what the tool does" % label] + [
            (results[t]["bad"][i]["outcome"] if len(results[t]["bad"]) > i else "-") for t in tools])
        rows.append(["%s: requests failed (peers: %gs watched; dewy: until refused + 1 s)" % (label, args.watch)] + [
            (str(results[t]["bad"][i]["failed"]) if len(results[t]["bad"]) > i else "-") for t in tools])
        rows.append(["%s: version serving afterwards" % label] + [
            (str(results[t]["bad"][i]["after"]) if len(results[t]["bad"]) > i else "-") for t in tools])
        rows.append(["%s: requests it answered" % label] + [
            (str(sum(results[t]["timeline"].get("versions", {}).get(results[t]["bad"][i]["version"], [])))
             if len(results[t]["bad"]) > i else "-") for t in tools])
    notes = ["dewy deploys for real: publish to a file:// registry, poll (interval 0.5s), download, unpack, "
             "switch with ready = notify:%ds; the peers are deployed by moving a `current` symlink and HUP "
             "(start_server --interval=1; gunicorn has no readiness rule)." % args.notify_timeout,
             "dewy's new generation accepts on the shared socket as soon as it runs, before it is ready: a release "
             "that never becomes ready answers requests for its readiness timeout, then dewy stops it and the old "
             "version (which kept serving beside it) serves alone. Clients see answers from both, no failures.",
             "A failed request is any error or non-200 answer seen by the load (4 threads GET /, 1 GET /slow?ms=%d, "
             "a new connection per request)." % args.slow_ms]
    for t in tools:
        if results[t]["error"]:
            notes.append("%s: the run broke: %s" % (t, results[t]["error"]))
        if results[t]["reasons"]:
            notes.append("%s: first failed requests: %s" % (t, "; ".join(results[t]["reasons"][:3])))
    extra = {t: {k: results[t][k] for k in ("timeline", "events", "command", "bad")} for t in tools}
    report(args, 1, "failed requests over %d deploys under load, then a never-ready and a crashing release"
           % args.deploys, columns, rows, notes, missing, extra)
    good = all(results[t]["failed_deploys"] == 0 and not results[t]["error"] for t in tools)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
