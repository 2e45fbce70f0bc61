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
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import psutil

# Run from a checkout without installing too: bench/ sits next to the dewy package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dewy.demo.app import build_release  # noqa: E402
from dewy.demo.demo import clean_environment, free_port, http_get, poll_until  # noqa: E402
from dewy.status import status_path  # noqa: E402

VERSION = "1.0.0"
PEER = "start_server"
PEER_INSTALL = ("install it with `apt-get install -y libserver-starter-perl` (Debian/Ubuntu) "
                "or `cpanm Server::Starter`")
POLL = 0.005           # how often the switch prober asks GET /env (the switch-time resolution)
STATUS_POLL = 0.01     # how often status files and pids are looked at while settling
SETTLE_TIMEOUT = 20.0  # a restart that has not settled by then is an error, not a slow result
STATUS_GRACE = 0.5     # how long a status file may lag behind the real process table
REQUEST_TIMEOUT = 10.0
MAX_REASONS = 20


# --------------------------------------------------------------------------- load
class Load:
    """HTTP load with per-request latency: `threads` clients GET /, one more GETs /slow?ms=N.

    Every request uses a new connection (as the sample app speaks HTTP/1.0 with Connection: close),
    so each one goes through accept() on the shared listening socket — the path a restart disturbs.
    The slow client often has a request in flight on the old generation when it is told to stop
    (the report counts how often), so a stop that drops accepted connections instead of finishing
    them shows up as a failure.
    """

    def __init__(self, port: int, threads: int, slow_ms: int, pause: float = 0.002):
        self.port = port
        self.nthreads = threads
        self.slow_ms = slow_ms
        self.pause = pause  # a breath between requests: on a 2-core box the client must leave CPU
        self.t0 = None
        self.stopped_at = None
        self._stop = threading.Event()
        self._threads = []
        # Per-thread lists, appended without a lock (list.append is atomic under the GIL);
        # each entry is (start relative to t0, latency seconds, ok).
        self.records = {}
        self.reasons = []  # first failures, "kind t=+S: Exception: message"
        self.failed_by_kind = {}
        self._lock = threading.Lock()

    def start(self) -> "Load":
        """Start the client threads; returns self."""
        self.t0 = time.monotonic()
        specs = [("fast", "/")] * self.nthreads
        if self.slow_ms > 0:
            specs.append(("slow", "/slow?ms=%d" % self.slow_ms))
        for i, (kind, path) in enumerate(specs):
            records = self.records.setdefault(kind, [])
            thread = threading.Thread(target=self._run, args=(kind, path, records),
                                      name="load-%s-%d" % (kind, i), daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        """Stop the clients after their current request."""
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT + 5)
        if self.stopped_at is None and self.t0 is not None:
            self.stopped_at = time.monotonic()

    def record_failure(self, kind: str, exc: BaseException) -> None:
        """Count a failed request of kind (fast/slow/probe) and keep the first reasons."""
        with self._lock:
            self.failed_by_kind[kind] = self.failed_by_kind.get(kind, 0) + 1
            if len(self.reasons) < MAX_REASONS:
                self.reasons.append("%s t=+%.3fs %s: %s" % (kind, time.monotonic() - self.t0,
                                                           type(exc).__name__, exc))

    def _run(self, kind: str, path: str, records: list) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                status, body = http_get(self.port, path, REQUEST_TIMEOUT)
                if status != 200 or body.strip() != VERSION:
                    raise RuntimeError("HTTP %d %r" % (status, body[:80]))
            except Exception as exc:  # noqa: BLE001 — every failure counts, whatever it is
                records.append((start - self.t0, time.monotonic() - start, False))
                self.record_failure(kind, exc)
            else:
                records.append((start - self.t0, time.monotonic() - start, True))
            if self.pause:
                self._stop.wait(self.pause)


def percentile(values: list, p: float) -> float:
    """The p-th percentile (nearest rank) of values; NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------- processes
def alive(proc: psutil.Process) -> bool:
    """True while proc runs (a zombie has exited: it only waits for its parent to reap it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float, what: str, details=lambda: "", interval: float = STATUS_POLL):
    """Poll predicate() until truthy (returned); RuntimeError naming what (and details()) on timeout."""
    value = poll_until(predicate, timeout, interval)
    if value is None:
        raise RuntimeError("timed out after %.1fs waiting for %s\n%s" % (timeout, what, details()))
    return value


def serving_pid(port: int, timeout: float = 2.0):
    """The pid of the app process that answered GET /env, or None if nothing answered."""
    try:
        status, body = http_get(port, "/env", timeout)
    except OSError:
        return None
    return json.loads(body)["pid"] if status == 200 else None


def tail(path: str, lines: int = 40) -> str:
    """The last lines of a log file."""
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return "(no log at %s)\n" % path


class Supervisor:
    """One supervisor under test: start it, signal restarts, read its status, stop it, clean up.

    Subclasses set `name`, `restart_signal` and implement `_launch()`, `status_serving()`
    (the (generation, pid) its status file says serves, or None) and `status_settled(pid)`
    (the status file shows only that pid serving, nothing retiring).
    """

    name = "?"
    restart_signal = signal.SIGUSR1

    def __init__(self, base: str, tarball: str, ready_delay: int | float):
        self.base = base
        self.tarball = tarball
        self.ready_delay = ready_delay
        self.log_path = os.path.join(base, "supervisor.log")
        self.port = None
        self.proc = None       # subprocess.Popen of the supervisor
        self.ps = None         # psutil.Process of the supervisor
        self.command = []      # the exact command line, for the report
        self.seen = {}         # pid -> psutil.Process of every app process met, for the cleanup

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 30.0) -> int:
        """Start the supervisor on a free port and wait until the first generation serves; its pid."""
        for attempt in range(5):
            self.port = free_port()
            self._launch()
            self.ps = psutil.Process(self.proc.pid)
            try:
                serving = wait_until(lambda: self._first_serving(), timeout,
                                     "%s to serve on 127.0.0.1:%d" % (self.name, self.port), self.details)
                return serving
            except RuntimeError:
                # Someone took the free port between our probe and the supervisor's bind: try another.
                if self.proc.poll() is not None and "in use" in tail(self.log_path) and attempt < 4:
                    continue
                raise
        raise RuntimeError("unreachable")

    def _first_serving(self):
        if self.proc.poll() is not None:
            raise RuntimeError("%s exited with %s during start-up\n%s" % (
                self.name, self.proc.returncode, self.details()))
        st = self.status_serving()
        if not st:
            return None
        pid = serving_pid(self.port)
        if pid is None or not self.status_settled(pid):
            return None
        self.remember(pid)
        return pid

    def _popen(self, argv: list, env: dict | None = None, **kw) -> None:
        self.command = argv
        with open(self.log_path, "ab") as log:
            # A session of its own: a Ctrl-C in the terminal reaches only the benchmark, which then
            # stops the supervisors in order instead of racing them against the signal.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env or clean_environment(), start_new_session=True, **kw)

    def remember(self, pid: int) -> None:
        """Track an app pid so the cleanup can kill it should the supervisor not."""
        if pid not in self.seen:
            try:
                self.seen[pid] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                pass

    def helpers(self) -> list:
        """Processes besides the main one that belong to the supervisor itself (not the app)."""
        return []

    def signal_restart(self) -> None:
        """Ask the supervisor for a graceful restart."""
        os.kill(self.proc.pid, self.restart_signal)

    def stop(self) -> None:
        """Stop gracefully (TERM), then KILL whatever of ours is left; never raises."""
        if self.proc is None:
            return
        try:
            for child in self.ps.children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.Error:
            pass
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                print("  %s did not stop within 15s of SIGTERM: killing it" % self.name, flush=True)
                self.proc.kill()
                self.proc.wait()
        for proc in self.seen.values():
            if alive(proc):
                try:
                    proc.kill()
                except psutil.Error:
                    pass

    def details(self) -> str:
        """The supervisor's log tail, for error messages."""
        return "%s log tail (%s):\n%s" % (self.name, self.log_path, tail(self.log_path))

    # ---------------------------------------------------------------- to override
    def _launch(self) -> None:
        raise NotImplementedError

    def status_serving(self):
        """(generation, pid) the status file says serves, or None."""
        raise NotImplementedError

    def status_settled(self, pid: int) -> bool:
        """True when the status file lists pid as the only generation."""
        raise NotImplementedError


class ServerStarter(Supervisor):
    """Server::Starter's start_server running the sample app unpacked from the release tarball."""

    name = "start_server"
    restart_signal = signal.SIGHUP

    def _launch(self) -> None:
        app_dir = os.path.join(self.base, "app")
        if not os.path.isdir(app_dir):
            os.makedirs(app_dir)
            with tarfile.open(self.tarball) as tar:
                tar.extractall(app_dir, filter="data")
        self.status_path = os.path.join(self.base, "start_server.status")
        self._popen([
            shutil.which(PEER), "--port=127.0.0.1:%d" % self.port,
            # --interval is Getopt "interval=i" and Perl's integer sleep(): whole seconds only.
            "--interval=%d" % self.ready_delay, "--signal-on-hup=TERM",
            "--backlog=1024",  # dewy's default, so both queues are the same size
            "--status-file=%s" % self.status_path, "--pid-file=%s" % os.path.join(self.base, "start_server.pid"),
            "--", sys.executable, os.path.join(app_dir, "app.py"),
        ])

    def _lines(self) -> list:
        try:
            with open(self.status_path) as fh:
                return [tuple(int(x) for x in line.split(":")) for line in fh.read().split()]
        except (FileNotFoundError, ValueError):
            return []

    def status_serving(self):
        """The newest generation:pid line (start_server writes the current worker with the old ones)."""
        lines = self._lines()
        return max(lines) if lines else None

    def status_settled(self, pid: int) -> bool:
        """Exactly one generation:pid line, for pid."""
        lines = self._lines()
        return len(lines) == 1 and lines[0][1] == pid


class Dewy(Supervisor):
    """dewy-master with a file:// registry that already has the release published."""

    name = "dewy"
    restart_signal = signal.SIGUSR1
    interval = "600s"  # restarts come from USR1; --idle measures with 10s
    no_site = False  # --no-site

    def _launch(self) -> None:
        registry = os.path.join(self.base, "registry")
        self.workdir = os.path.join(self.base, "workdir")
        for d in (registry, self.workdir):
            os.makedirs(d, exist_ok=True)
        if not os.path.isdir(os.path.join(registry, "v" + VERSION)):
            # The same bytes Server::Starter runs, published before the master starts (so no
            # poller can see a half-written version directory).
            os.makedirs(os.path.join(registry, "v" + VERSION))
            shutil.copyfile(self.tarball, os.path.join(registry, "v" + VERSION, "app.tar.gz"))
        self.ini = os.path.join(self.base, "dewy.ini")
        with open(self.ini, "w") as fh:
            fh.write("\n".join([
                "[dewy]",
                "registry = file://%s?artifact=app.tar.gz" % registry,
                "port = 127.0.0.1:%d" % self.port,
                # Restarts come from USR1, not the registry: one poll at start-up, then the poller
                # sleeps, so its CPU does not blur the comparison with a supervisor that has none.
                "interval = %s" % self.interval,
                "ready = delay:%gs" % self.ready_delay,
                "stop-signal = TERM",
                "graceful-timeout = 10s",
                "backlog = 1024",
                "log-level = info",
                "app = %s" % shlex.join([sys.executable, os.path.join(self.workdir, "current", "app.py")]),
                "workdir = %s" % self.workdir,
                "",
            ]))
        if self.no_site:
            # What a host without this interpreter's site-packages .pth hooks runs: site-packages on the
            # path, but no .pth file executed (here, one of them imports certifi and importlib.resources).
            import site
            env = clean_environment({"PYTHONPATH": os.pathsep.join([ROOT] + site.getsitepackages())})
            self._popen([sys.executable, "-S", "-m", "dewy.master", "-c", self.ini], cwd=self.base, env=env)
        else:
            self._popen([sys.executable, "-m", "dewy.master", "-c", self.ini], cwd=self.base)

    def status(self) -> dict:
        """The parsed .dewy/status.json ({} before the first write)."""
        try:
            with open(status_path(self.workdir)) as fh:
                return json.load(fh)
        except (FileNotFoundError, ValueError):
            return {}

    def status_serving(self):
        """(generation, pid) of the serving generation once the master says `running`."""
        st = self.status()
        if st.get("state") == "running" and st.get("generation") and st.get("app_pids"):
            return (st["generation"], st["app_pids"][0])
        return None

    def status_settled(self, pid: int) -> bool:
        """running, app_pids == [pid], nothing starting, no retiring_pids."""
        st = self.status()
        return (st.get("state") == "running" and st.get("app_pids") == [pid]
                and not st.get("starting_pid") and not st.get("retiring_pids"))

    def helpers(self) -> list:
        """The poller worker (part of dewy, not of the app)."""
        pid = self.status().get("poller_pid")
        try:
            return [psutil.Process(pid)] if pid else []
        except psutil.NoSuchProcess:
            return []


# --------------------------------------------------------------------------- measuring
class ResourceMonitor(threading.Thread):
    """Samples the supervisor's RSS (main process, and with its helpers) every 100 ms; keeps the peak."""

    def __init__(self, main: psutil.Process, helpers: list):
        super().__init__(name="rss-monitor", daemon=True)
        self.main, self.helpers = main, helpers
        self.peak_main = self.peak_all = self.peak_helpers = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        """One RSS sample."""
        try:
            main = self.main.memory_info().rss
        except psutil.Error:
            return
        extra = 0
        for proc in self.helpers:
            try:
                extra += proc.memory_info().rss
            except psutil.Error:
                pass
        self.peak_main = max(self.peak_main, main)
        self.peak_all = max(self.peak_all, main + extra)
        self.peak_helpers = max(self.peak_helpers, extra)

    def run(self) -> None:
        """Sample until stopped."""
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(0.1)

    def stop(self) -> None:
        """Take a last sample and end the thread."""
        self._halt.set()
        self.join(2)
        self.sample()


def cpu_seconds(procs: list) -> float:
    """CPU seconds the processes used themselves (not their reaped children, i.e. not the app).

    /proc/PID/schedstat counts in nanoseconds; psutil's user+system comes in clock ticks (10 ms),
    too coarse for a supervisor that is idle most of the run. Falls back to psutil elsewhere.
    """
    total = 0.0
    for proc in procs:
        try:
            with open("/proc/%d/schedstat" % proc.pid) as fh:
                total += int(fh.read().split()[0]) / 1e9
            continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def measure_idle(sup: "Dewy", seconds: float) -> dict:
    """CPU and RSS of dewy's master and poller while nothing happens (no load, no restarts) for seconds."""
    print("[dewy idle] starting (interval = %s)" % sup.interval, flush=True)
    sup.start()
    wait_until(lambda: sup.helpers(), SETTLE_TIMEOUT, "the poller", sup.details)
    time.sleep(2)  # past the start-up and the first poll
    procs = [sup.ps] + sup.helpers()
    before = [cpu_seconds([p]) for p in procs]
    time.sleep(seconds)
    used = [cpu_seconds([p]) - b for p, b in zip(procs, before)]
    rss = []
    for proc in procs:
        try:
            rss.append(proc.memory_info().rss / 2 ** 20)
        except psutil.Error:
            rss.append(math.nan)
    result = {"seconds": seconds, "master_ms": used[0] * 1000, "poller_ms": sum(used[1:]) * 1000,
              "master_pct": used[0] / seconds * 100, "poller_pct": sum(used[1:]) / seconds * 100,
              "total_pct": sum(used) / seconds * 100, "rss_master": rss[0], "rss_poller": sum(rss[1:])}
    print("[dewy idle] %.0fs: master %.1f ms, poller %.1f ms CPU" % (seconds, result["master_ms"],
                                                                   result["poller_ms"]), flush=True)
    return result


def interpreter_rss() -> str:
    """RSS of the bare interpreter, with site and with -S: the floor under any Python supervisor."""
    out = []
    for flags in ([], ["-S"]):
        code = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
        try:
            kib = int(subprocess.run([sys.executable] + flags + ["-c", code], capture_output=True, text=True,
                                     timeout=30).stdout)
            out.append("%s %.1f MiB" % (" ".join(flags) or "with site", kib / 1024))
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
    return ", ".join(out) or "unknown"


def restart_once(sup: Supervisor, load: Load, old_pid: int) -> dict:
    """Send one restart signal and wait until it has fully settled; returns its timings (seconds).

    first_answer: signal -> first GET /env answered by a pid other than old_pid (the new generation
    accepts on the shared socket as soon as it runs, before it counts as ready).
    old_exited: signal -> the old generation's process is gone (the switch is complete).
    status_lag: old generation gone -> the supervisor's status file says so (None: still stale
    after STATUS_GRACE — recorded, not waited for, so a stale status cannot stall the benchmark).
    """
    old = sup.seen.get(old_pid) or psutil.Process(old_pid)
    t_signal = time.monotonic()
    sup.signal_restart()
    new_pid = None
    while new_pid is None:
        # The prober's requests are real requests too: count their failures with the others.
        try:
            status, body = http_get(sup.port, "/env", REQUEST_TIMEOUT)
            if status != 200:
                raise RuntimeError("HTTP %d %r" % (status, body[:80]))
            pid = json.loads(body)["pid"]
        except Exception as exc:  # noqa: BLE001
            load.record_failure("probe", exc)
            pid = None
        if pid is not None and pid != old_pid:
            new_pid = pid
            t_first = time.monotonic()
            break
        if time.monotonic() - t_signal > SETTLE_TIMEOUT:
            raise RuntimeError("no new generation answered within %.0fs of the restart signal\n%s"
                               % (SETTLE_TIMEOUT, sup.details()))
        if sup.proc.poll() is not None:
            raise RuntimeError("%s exited (%s) during a restart\n%s" % (sup.name, sup.proc.returncode, sup.details()))
        time.sleep(POLL)
    sup.remember(new_pid)
    wait_until(lambda: not alive(old), SETTLE_TIMEOUT, "the old generation (pid %d) to exit" % old_pid, sup.details)
    t_old = time.monotonic()
    lag = None
    # Watch the status file for the same STATUS_GRACE whatever it does, so both supervisors get
    # the same duty cycle (switching vs. steady serving) and their latency figures stay comparable.
    deadline = t_old + STATUS_GRACE
    while time.monotonic() < deadline:
        if lag is None and sup.status_settled(new_pid):
            lag = time.monotonic() - t_old
        time.sleep(STATUS_POLL)
    if lag is None:
        # The status file may be stale, but it must at least name the new generation as serving.
        wait_until(lambda: (sup.status_serving() or (0, 0))[1] == new_pid, SETTLE_TIMEOUT,
                   "the status file to name pid %d as serving" % new_pid, sup.details)
    return {"signal": t_signal - load.t0, "first_answer": t_first - t_signal, "old_exited": t_old - t_signal,
            "status_lag": lag, "new_pid": new_pid}


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


def machine() -> str:
    """One line about where this ran."""
    load1 = os.getloadavg()[0]
    return "%s, nproc %d, Python %s, %s, loadavg(1m) %.2f at start" % (
        time.strftime("%Y-%m-%d %H:%M:%S %Z"), os.cpu_count() or 0, platform.python_version(),
        platform.platform(), load1)


def code_under_test() -> str:
    """Which dewy was measured: version, git commit, and whether dewy/ had uncommitted changes."""
    import dewy
    root = os.path.dirname(os.path.dirname(os.path.abspath(dewy.__file__)))

    def git(*argv):
        try:
            out = subprocess.run(["git", "-C", root] + list(argv), capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None
    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        return "dewy %s from %s (not a git checkout)" % (dewy.__version__, root)
    dirty = git("status", "--porcelain", "--", "dewy")
    return "dewy %s from %s at git %s%s" % (dewy.__version__, root, head,
                                            " + uncommitted changes in dewy/" if dirty else "")


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
    print("command: %s" % shlex.join([sys.executable] + sys.argv), flush=True)
    print("machine: %s" % machine(), flush=True)
    print("code:    %s" % code_under_test(), flush=True)
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

    # Signals other than Ctrl-C (e.g. a CI timeout's TERM) must also reach the finally below.
    def on_term(signum, frame):
        """Turn TERM/HUP into the same clean-up path as Ctrl-C."""
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

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
        # A second Ctrl-C must not abandon half-stopped supervisors and their apps.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
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
