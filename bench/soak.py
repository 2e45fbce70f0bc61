#!/usr/bin/env python3
"""Soak: N real deploys of a fast app under load; nothing may grow.

One dewy-master (started the way the integration tests start it, tests/helpers.Master) runs the sample
app from a `file://` registry with `interval = 0.1s` (the least dewy takes) and `ready = delay:0.05s`,
under HTTP load (new connection per request). The soak publishes a new version, waits until it serves (status and a GET), and
publishes the next (deleting the version REGISTRY_KEEPS back, as a registry with a retention rule
would, so the registry's listing does not grow): every deploy goes through the poller (poll, download,
SHA-256, unpack, prune) and the master (switch, spawn, readiness, retire). Every `--every` deploys, once
the old generation has exited, it samples

  master fds, master RSS, poller fds, poller RSS   /proc/<pid>/fd, psutil's rss
  children        the master's live children (the poller, the sentinel, one app generation)
  zombies         the master's children left unreaped (after a 1 s grace)
  releases        release directories in releases/ (the poller prunes to keep-releases)

and prints a row. It fails (exit 1) when, after the first sample (the baseline: caches warm, the first
pruning done), fds grow by more than FD_SLACK, RSS by more than RSS_SLACK_MIB, the child count changes,
a zombie exists, releases/ holds more than keep-releases, the poller was restarted, or any request failed.

    python3 bench/soak.py [--deploys 1000] [--every 100] [--threads 2] [--pace S] [--json PATH] [--keep]

tests/reliability/test_soak.py runs a short one (run_soak) with the same checks.
Exit codes: 0 flat and no failure; 1 something grew or failed; 2 bad arguments; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import psutil  # noqa: E402

from helpers import Load, Master, Registry, audit_entries, fd_count, wait_until  # noqa: E402

KEEP_RELEASES = 3
REGISTRY_KEEPS = 5  # versions left in the registry (older ones are deleted, so only dewy's own state could grow)
FD_SLACK = 2  # descriptors a process may have open beyond the baseline (a log file reopened, a cache handle)
RSS_SLACK_MIB = 2.0  # RSS growth beyond the baseline (allocator noise; 2 KiB more per deploy shows at 1000)
COLUMNS = ["deploys", "elapsed s", "master fds", "master RSS MiB", "poller fds", "poller RSS MiB", "children",
           "zombies", "releases", "requests", "failed"]


def rss_mib(pid: int) -> float:
    """Resident set size of pid in MiB."""
    return psutil.Process(pid).memory_info().rss / 1048576.0


def zombies_of(pid: int) -> list:
    """pids of pid's children that are zombies (exited, not reaped)."""
    try:
        return [c.pid for c in psutil.Process(pid).children() if c.status() == psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def sample(master: Master, deploys: int, started: float, load: Load) -> dict:
    """One row of measurements, taken once nothing is starting or retiring and the poller has finished the
    deploy (its audit line comes last, after pruning releases/)."""
    st = master.quiesce(60)
    if deploys:
        wait_until(lambda: (audit_entries(master.workdir) or [{}])[-1].get("version") == st["version"], 30,
                   "the audit line of %s" % st["version"], master.details)
    zombies = zombies_of(master.pid)
    if zombies:  # reaped within a pass of the loop normally: give it a second before counting
        time.sleep(1.0)
        zombies = [z for z in zombies if z in zombies_of(master.pid)]
    children = [c for c in psutil.Process(master.pid).children() if c.status() != psutil.STATUS_ZOMBIE]
    releases = [p for p in (master.workdir / "releases").iterdir() if not p.name.endswith(".tmp")]
    poller = st["poller_pid"]
    return {
        "deploys": deploys, "elapsed s": round(time.monotonic() - started, 1),
        "master fds": fd_count(master.pid), "master RSS MiB": round(rss_mib(master.pid), 1),
        "poller fds": fd_count(poller), "poller RSS MiB": round(rss_mib(poller), 1),
        "children": len(children), "zombies": len(zombies), "releases": len(releases),
        "requests": load.total, "failed": int(load.failed), "poller_pid": poller,
    }


def problems(rows: list, keep: int) -> list:
    """What grew or went wrong across the samples (empty: flat), one line each."""
    found = []
    base = rows[1] if len(rows) > 1 else rows[0]
    for row in rows:
        where = "after %d deploys" % row["deploys"]
        if row["zombies"]:
            found.append("%s: %d zombie(s)" % (where, row["zombies"]))
        if row["releases"] > keep:
            found.append("%s: %d releases in releases/ (keep-releases = %d)" % (where, row["releases"], keep))
        if row["failed"]:
            found.append("%s: %d request(s) failed" % (where, row["failed"]))
    for row in rows[rows.index(base) + 1:]:
        where = "after %d deploys" % row["deploys"]
        for key in ("master fds", "poller fds"):
            if row[key] > base[key] + FD_SLACK:
                found.append("%s: %s grew from %d to %d" % (where, key, base[key], row[key]))
        for key in ("master RSS MiB", "poller RSS MiB"):
            if row[key] > base[key] + RSS_SLACK_MIB:
                found.append("%s: %s grew from %.1f to %.1f" % (where, key, base[key], row[key]))
        if row["children"] != base["children"]:
            found.append("%s: the master has %d children (was %d)" % (where, row["children"], base["children"]))
        if row["poller_pid"] != base["poller_pid"]:
            found.append("%s: the poller was restarted (pid %d, was %d)"
                         % (where, row["poller_pid"], base["poller_pid"]))
    return found


def run_soak(base: Path, deploys: int, every: int, threads: int = 2, out=sys.stdout, pace: float = 0.0) -> dict:
    """Run the soak in directory base; {"rows", "problems", "requests", "failed", "failures", "seconds"}.

    pace: at least this many seconds from one publication to the next (0: as fast as deploys go)."""
    registry = Registry(base)
    registry.publish("1.0.0")
    master = Master(base, registry, interval="0.1s", ready="delay:0.05s", graceful_timeout="5s",
                    keep_releases=str(KEEP_RELEASES), log_level="info")
    rows = []
    started = time.monotonic()
    try:
        master.start(wait_version="1.0.0", timeout=60)
        with Load(master.port, threads=threads) as load:
            rows.append(sample(master, 0, started, load))
            print_row(rows[-1], out, header=True)
            for n in range(1, deploys + 1):
                published = time.monotonic()
                master.deploy("1.%d.0" % n, timeout=60)
                if n > REGISTRY_KEEPS:  # a registry keeps its last few versions: its listing stays the same size
                    registry.unpublish("1.%d.0" % (n - REGISTRY_KEEPS))
                time.sleep(max(0.0, published + pace - time.monotonic()))
                if n % every == 0 or n == deploys:
                    rows.append(sample(master, n, started, load))
                    print_row(rows[-1], out)
        rows[-1]["failed"] = int(load.failed)  # requests in flight at the last sample have finished now
        result = {"rows": rows, "requests": load.total, "failed": int(load.failed),
                  "failures": list(load.failed.reasons), "seconds": round(time.monotonic() - started, 1)}
        result["problems"] = problems(rows, KEEP_RELEASES)
        if master.stop() != 0:
            result["problems"].append("dewy-master did not exit 0 at the end")
        return result
    except BaseException:
        out.write("\n%s\n" % master.details())
        raise
    finally:
        if master.running():
            master.kill_tree()


def print_row(row: dict, out, header: bool = False) -> None:
    """One table row (and the header before the first)."""
    widths = [max(len(c), 8) for c in COLUMNS]
    if header:
        out.write(" | ".join(c.rjust(w) for c, w in zip(COLUMNS, widths)) + "\n")
        out.write("-|-".join("-" * w for w in widths) + "\n")
    out.write(" | ".join(str(row[c]).rjust(w) for c, w in zip(COLUMNS, widths)) + "\n")
    out.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deploys", type=int, default=1000, help="how many deploys (default 1000)")
    parser.add_argument("--every", type=int, default=100, help="sample every N deploys (default 100)")
    parser.add_argument("--threads", type=int, default=2, help="load threads (default 2)")
    parser.add_argument("--pace", type=float, default=0.0, help="at least this many seconds between deploys")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (workdir, logs)")
    args = parser.parse_args(argv)
    if args.deploys < 1 or args.every < 1 or args.threads < 1:
        parser.error("--deploys, --every and --threads must be at least 1")
    base = Path(tempfile.mkdtemp(prefix="dewy-soak-"))
    command = "python3 bench/soak.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print("# %s  (scratch: %s)" % (command.strip(), base))
    try:
        result = run_soak(base, args.deploys, args.every, args.threads, pace=args.pace)
    except KeyboardInterrupt:
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print("%d deploys in %.0fs; %d requests, %d failed%s" % (
        args.deploys, result["seconds"], result["requests"], result["failed"],
        (": " + "; ".join(result["failures"][:5])) if result["failures"] else ""))
    for line in result["problems"]:
        print("PROBLEM: %s" % line)
    print("outcome: %s" % ("flat, no failed request, no zombie" if not result["problems"] else "FAILED"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"title": "Soak: %d deploys under load" % args.deploys, "command": command.strip(),
                       "columns": COLUMNS, "rows": [[r[c] for c in COLUMNS] for r in result["rows"]],
                       "notes": result["problems"],
                       "extra": {k: result[k] for k in ("requests", "failed", "failures", "seconds")}}, fh, indent=1)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
