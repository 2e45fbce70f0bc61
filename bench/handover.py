#!/usr/bin/env python3
"""Figure 3: handover. Signal -> first answer from the new generation, -> last answer from the old one.

dewy is restarted (USR1) with each readiness rule — `ready = notify` (READY=1 from the app), `ready =
http:/healthz` (GET until 2xx) and `ready = delay:1s` — beside `start_server --interval=1` (HUP) and gunicorn
(HUP). Three prober threads GET /env (the answer names the pid) on new connections all the time; for each
restart the bench takes the first answer from a new pid and the last answer from the old one.

The floor is the new app's own start-up, measured in place for every restart: from the creation of its
process (/proc start time) to its first answer. A supervisor cannot hand over faster than its app starts;
the table says how far above that floor each handover ends — signal -> new process plus first new answer
-> last old answer (dewy's target: 50 ms, for the rules that wait for the app: notify and http).
app_floor() measures the same without any supervisor (figure 8 uses it).

    python3 bench/handover.py [--restarts 8] [--quick] [--json PATH] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (REQUEST_TIMEOUT, Dewy, Load, Scratch, clean_environment, common_args, fmt,  # noqa: E402
                     http_get, peer_classes, peers_missing, report, restart_once)

MODES = [("notify", "notify:10s"), ("http", "http:/healthz:10s"), ("delay", "delay:1s")]


class EnvProber:
    """Threads sending GET /env on new connections; every answer kept as (monotonic time answered, pid)."""

    def __init__(self, port: int, threads: int = 3):
        self.port, self.nthreads = port, threads
        self.answers = []
        self.failed = 0
        self._stop = threading.Event()
        self._threads = []

    def start(self) -> "EnvProber":
        """Start probing."""
        for _ in range(self.nthreads):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop probing."""
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = http_get(self.port, "/env", REQUEST_TIMEOUT)
                if status != 200:
                    raise RuntimeError(status)
                self.answers.append((time.monotonic(), json.loads(body)["pid"]))
            except Exception:  # noqa: BLE001 — counted; figure 1 and 2 say more about failures
                self.failed += 1
            self._stop.wait(0.001)


def app_floor(tarball_dir: str, n: int) -> list:
    """Seconds from exec of the sample app (on an inherited listening socket) to its first answer, n times."""
    times = []
    for _ in range(n):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        port = sock.getsockname()[1]
        fd = sock.fileno()
        env = clean_environment({"SERVER_STARTER_PORT": "127.0.0.1:%d=%d" % (port, fd)})
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, os.path.join(tarball_dir, "app.py")], env=env, pass_fds=(fd,),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # The connection waits in the backlog until the app accepts: one GET is exec -> first answer.
            status, _ = http_get(port, "/", REQUEST_TIMEOUT)
            if status == 200:
                times.append(time.monotonic() - t0)
        finally:
            proc.terminate()
            proc.wait(10)
            sock.close()
    return times


def process_start(pid: int):
    """When pid was created (fork), in seconds since boot (clock ticks, 10 ms); None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # pid (comm) state ppid ...: comm may hold spaces and parentheses, so count after the last ')'.
    return int(stat[stat.rfind(b")") + 2:].split()[19]) / os.sysconf("SC_CLK_TCK")


def run_tool(scratch: Scratch, cls, name: str, ready, args) -> dict:
    """Restart one tool N times under the probers; per restart: when the new process was created, its first
    answer, the old generation's last answer, the old generation's exit (seconds after the signal)."""
    attrs = {"ready": ready} if ready else {}
    sup = scratch.supervisor(cls, name=name, **attrs)
    print("[%s] starting" % name, flush=True)
    pid = sup.start()
    spy = None
    if args.profile and cls is Dewy:
        # py-spy samples the master (not the app) during the restarts: where its time goes.
        out = os.path.join(args.profile, "%s-master.txt" % name)
        spy = subprocess.Popen(["py-spy", "record", "-p", str(sup.proc.pid), "-o", out, "--format", "raw",
                                "--rate", "250", "--nonblocking"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    prober = EnvProber(sup.port).start()
    load = Load(sup.port, 1, 0)  # restart_once counts its own probe failures here
    load.t0 = time.monotonic()
    rows, error = [], None
    try:
        time.sleep(0.5)
        # /proc/PID/stat's start time counts clock ticks since boot: compare on CLOCK_BOOTTIME (psutil's
        # create_time() adds the boot time, which /proc/stat gives in whole seconds only).
        boot = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
        for i in range(args.restarts):
            old = pid
            r = restart_once(sup, load, pid, status_grace=0.3)
            pid = r["new_pid"]
            t_signal = load.t0 + r["signal"]
            time.sleep(0.2)
            old_answers = [t for t, p in list(prober.answers) if p == old and t >= t_signal]
            new_answers = [t for t, p in list(prober.answers) if p == pid and t >= t_signal]
            first_new = min(new_answers + [load.t0 + r["signal"] + r["first_answer"]]) - t_signal
            last_old = (max(old_answers) - t_signal) if old_answers else 0.0
            # The floor, measured in place: the new app process's own start-up, from its creation (fork, in
            # clock ticks of 10 ms) to its first answer, on the same box at the same moment.
            started = process_start(pid)
            spawned = None if started is None else started - boot - t_signal
            floor = None if spawned is None else first_new - spawned
            rows.append({"first_new": first_new, "last_old": last_old, "old_exited": r["old_exited"],
                         "spawned": spawned, "floor": floor, "over": None if floor is None else last_old - floor,
                         "overlap": last_old - first_new})
            print("[%s] restart %d/%d: new process after %s ms, its first answer %4.0f ms, last old answer %5.0f ms, "
                  "old gone %5.0f ms" % (name, i + 1, args.restarts, fmt(spawned, "%.0f", 1000), first_new * 1000,
                                         last_old * 1000, r["old_exited"] * 1000), flush=True)
            time.sleep(0.3)
    except Exception as exc:  # noqa: BLE001
        error = str(exc).split("\n")[0]
        print("[%s] run broke: %s\n%s" % (name, error, sup.details()), flush=True)
    finally:
        prober.stop()
        if spy is not None:
            spy.send_signal(2)  # py-spy writes its profile on SIGINT
            spy.wait(30)
        sup.stop()

    def mean(key):
        return statistics.mean(r[key] for r in rows) if rows else None

    def top(key):
        return max(r[key] for r in rows) if rows else None
    def median(key):
        values = [r[key] for r in rows if r[key] is not None]
        return statistics.median(values) if values else None
    return {"restarts": len(rows), "first_new": mean("first_new"), "spawned_median": median("spawned"),
            "overlap_median": median("overlap"), "over_median": median("over"), "floor_median": median("floor"),
            "first_new_max": top("first_new"),
            "last_old": mean("last_old"), "last_old_max": top("last_old"), "old_exited": mean("old_exited"),
            "failed": prober.failed + sum(load.failed_by_kind.values()), "error": error, "each": rows,
            "command": " ".join(sup.command), "ready": ready}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--modes", default="notify,http,delay", help="dewy's readiness rules to measure")
    parser.add_argument("--no-peers", action="store_true", help="measure dewy only")
    parser.add_argument("--profile", metavar="DIR",
                        help="record the dewy master with py-spy (collapsed stacks, DIR/dewy-<mode>-master.txt)")
    common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.restarts = min(args.restarts, 2)
    missing = peers_missing()
    results = {}
    with Scratch("dewy-bench-handover-", args.keep) as scratch:
        for mode, ready in MODES:
            if mode in args.modes.split(","):
                results["dewy " + mode] = run_tool(scratch, Dewy, "dewy-" + mode, ready, args)
        for cls in [] if args.no_peers else peer_classes(missing):
            results[cls.name] = run_tool(scratch, cls, cls.name, None, args)
    tools = list(results)
    columns = ["", "ready rule", "signal -> new process, ms (median)",
               "new process -> its first answer = the app's start-up, the floor, ms (median)",
               "signal -> first new answer, ms (mean / max)", "signal -> last old answer, ms (mean / max)",
               "old gen exited, ms (mean)", "last old - first new answer, ms (median)",
               "above the floor: last old answer - app start-up, ms (median)", "failed requests"]
    rule = {"start_server": "alive after --interval=1", "gunicorn": "none (old stopped at once)"}
    rows = []
    for t in tools:
        r = results[t]
        rows.append([t, r["ready"] or rule.get(t, "-"), fmt(r["spawned_median"], "%.0f", 1000),
                     fmt(r["floor_median"], "%.0f", 1000),
                     "%s / %s" % (fmt(r["first_new"], "%.0f", 1000), fmt(r["first_new_max"], "%.0f", 1000)),
                     "%s / %s" % (fmt(r["last_old"], "%.0f", 1000), fmt(r["last_old_max"], "%.0f", 1000)),
                     fmt(r["old_exited"], "%.0f", 1000), fmt(r["overlap_median"], "%+.0f", 1000),
                     fmt(r["over_median"], "%+.0f", 1000), str(r["failed"])])
    notes = ["The floor is the new app's own start-up, measured in place for every restart: from the creation of "
             "its process (fork; /proc start time in 10 ms clock ticks, rounded down: a few ms below 0 is rounding) to its first answer. `above the floor` pairs each "
             "restart with its own floor (on this shared box start-up drifts by 100s of ms within a minute) and is "
             "the supervisor's whole share: signal -> new process, plus first new answer -> last old answer.",
             "`last old - first new answer` is the supervisor's own part, free of the app's start-up time: how long "
             "after the new generation first answered the old one still did (readiness detection + stop signal).",
             "Handover is complete at the last answer from the old generation; dewy's target is to be within "
             "50 ms of the floor with ready = notify or http (delay and --interval wait the whole second by "
             "design; gunicorn stops the old worker before the new one answers, with no readiness rule)."]
    for mode in ("notify", "http"):
        r = results.get("dewy " + mode)
        if r and r["over_median"] is not None:
            over = r["over_median"] * 1000
            notes.append("dewy %s: the old generation's last answer comes %.0f ms (median) above the app's own "
                         "start-up, %.0f ms after the new generation's first answer: %s"
                         % (mode, over, r["overlap_median"] * 1000, "within the 50 ms target" if over <= 50
                            else "MISSES the 50 ms target"))
    for t in tools:
        if results[t]["error"]:
            notes.append("%s: the run broke: %s" % (t, results[t]["error"]))
    extra = {"results": results}
    report(args, 3, "handover: signal -> first answer of the new generation, -> last answer of the old one",
           columns, rows, notes, missing, extra)
    return 0 if all(not results[t]["error"] for t in tools) else 1


if __name__ == "__main__":
    sys.exit(main())
