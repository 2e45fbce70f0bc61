#!/usr/bin/env python3
"""Figure 8: cold start. Supervisor start -> first request served, dewy beside start_server and gunicorn.

Each start is a fresh process on a free port; the clock starts just before the exec and stops when a GET /
is answered 200 (the client retries a refused connection every 2 ms; once the port is bound, the request
waits in the backlog until the app accepts it). N starts each, alternating between the tools:

  dewy, first start   `python -m dewy.master -c INI` (what the `dewy-master` script runs) with an empty
                      workdir: bind, start the poller, poll the file:// registry, download, verify, unpack,
                      switch, start the app (ready = delay:1s does not delay the first answer: the app
                      accepts as soon as it runs)
  dewy, restart       the same workdir again: `current` is already unpacked, the app starts at once
  start_server        start_server --interval=1 -- python3 current/app.py
  gunicorn            gunicorn with one gthread worker, bench/wsgi_app.py

The floor is the app alone: exec of `python3 app.py` on a listening socket -> first answer.

    python3 bench/coldstart.py [--starts 5] [--quick] [--json PATH] [--keep]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from handover import app_floor  # noqa: E402
from harness import (Dewy, Scratch, common_args, fmt, free_port, http_get, peer_classes,  # noqa: E402
                     peers_missing, poll_until, ratio, report)


def first_answer(sup, timeout: float = 60.0) -> float:
    """Launch sup on a free port; seconds until GET / answers 200. The supervisor is stopped afterwards."""
    sup.port = free_port()
    t0 = time.monotonic()
    sup._launch()
    try:
        while True:
            try:
                status, _ = http_get(sup.port, "/", 10.0)
                if status == 200:
                    took = time.monotonic() - t0
                    if isinstance(sup, Dewy):
                        # Let the first deploy finish (ready = delay:1s), so the next start finds `current`
                        # unpacked; a stop during the readiness wait would put `current` back.
                        poll_until(sup.status_serving, 15.0, 0.05)
                    return took
            except OSError:
                pass
            if sup.proc.poll() is not None:
                raise RuntimeError("%s exited with %s\n%s" % (sup.name, sup.proc.returncode, sup.details()))
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("%s did not answer within %.0fs\n%s" % (sup.name, timeout, sup.details()))
            time.sleep(0.002)
    finally:
        import psutil
        sup.ps = psutil.Process(sup.proc.pid)
        sup.stop()
        sup.proc = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=5)
    common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.starts = min(args.starts, 2)
    missing = peers_missing()
    times = {}
    with Scratch("dewy-bench-coldstart-", args.keep) as scratch:
        times["app alone (the floor)"] = app_floor(scratch.unpacked_app(), args.starts)
        for i in range(args.starts):
            # dewy's first start needs a fresh workdir (and registry) each time; the restart reuses it.
            dewy = scratch.supervisor(Dewy, name="dewy-%d" % i, interval="600s")
            for label, sup in [("dewy, first start (poll + download + unpack)", dewy),
                               ("dewy, restart (release already unpacked)", dewy)] + [
                    (cls.name, scratch.supervisor(cls, name="%s-%d" % (cls.name, i))) for cls in peer_classes(missing)]:
                try:
                    t = first_answer(sup)
                except RuntimeError as exc:
                    print("[%s] FAILED: %s" % (label, exc), flush=True)
                    continue
                times.setdefault(label, []).append(t)
                print("[%s] start %d/%d: first answer after %.0f ms" % (label, i + 1, args.starts, t * 1000),
                      flush=True)
    labels = list(times)
    med = {k: statistics.median(v) if v else None for k, v in times.items()}
    peers = [cls.name for cls in peer_classes(missing)]
    columns = ["", "median ms", "min ms", "max ms", "starts"] + ["/ %s" % p for p in peers] + ["above the floor, ms"]
    rows = []
    floor = med.get("app alone (the floor)")
    for k in labels:
        v = times[k]
        rows.append([k, fmt(med[k], "%.0f", 1000), fmt(min(v, default=None), "%.0f", 1000),
                     fmt(max(v, default=None), "%.0f", 1000), str(len(v))]
                    + [ratio(med[k], med.get(p)) for p in peers]
                    + [fmt(None if floor is None or med[k] is None else med[k] - floor, "%+.0f", 1000)])
    notes = ["Ratios are medians against each peer's median in the same run.",
             "dewy's first start includes its whole first deploy from a file:// registry; the peers start a release "
             "that is already unpacked, like dewy's restart row."]
    report(args, 8, "cold start: supervisor start -> first request served", columns, rows, notes, missing,
           {"times": times})
    return 0 if all(times.get(k) for k in labels) else 1


if __name__ == "__main__":
    sys.exit(main())
