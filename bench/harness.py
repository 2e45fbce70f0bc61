"""What every benchmark in bench/ shares: the HTTP load, the supervisors under test, process sampling.

The supervisors (each runs the same sample app, `dewy/demo/app.py`, from one release tarball):

  Dewy          dewy-master with a file:// registry (restart: USR1; deploy: publish a version)
  ServerStarter Server::Starter's start_server (restart: HUP; deploy: move the `current` symlink, HUP)
  Gunicorn      gunicorn running bench/wsgi_app.py, the same app as WSGI (restart: HUP; deploy: likewise)

Figure scripts import this module (`python3 bench/<figure>.py` puts bench/ on sys.path) and write
their results with `write_json()` in the shape bench/run turns into RESULTS.md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time

import psutil

# Run from a checkout without installing too: bench/ sits next to the dewy package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dewy.demo.app import build_release  # noqa: E402
from dewy.demo.demo import clean_environment, free_port, http_get, poll_until  # noqa: E402
from dewy.statefiles import status_path  # noqa: E402

VERSION = "1.0.0"
PEER = "start_server"
PEER_INSTALL = ("install it with `apt-get install -y libserver-starter-perl` (Debian/Ubuntu) "
                "or `cpanm Server::Starter`")
GUNICORN_INSTALL = "install it with `python3 -m pip install gunicorn` (or `pip install -e '.[bench]'`)"
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

    def __init__(self, port: int, threads: int, slow_ms: int, pause: float = 0.002, versions=(VERSION,)):
        self.port = port
        # The answers that count as right; None: any version (a deploy changes it mid-run).
        self.versions = None if versions is None else set(versions)
        self.nthreads = threads
        self.slow_ms = slow_ms
        self.pause = pause  # a breath between requests: on a 2-core box the client must leave CPU
        self.t0 = None
        self.stopped_at = None
        self._stop = threading.Event()
        self._threads = []
        # Per-thread lists, appended without a lock (list.append is atomic under the GIL);
        # each entry is (start relative to t0, latency seconds, ok, version answered or None).
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
                version = body.strip()
                if status != 200 or not version or (self.versions is not None and version not in self.versions):
                    raise RuntimeError("HTTP %d %r" % (status, body[:80]))
            except Exception as exc:  # noqa: BLE001 — every failure counts, whatever it is
                records.append((start - self.t0, time.monotonic() - start, False, None))
                self.record_failure(kind, exc)
            else:
                records.append((start - self.t0, time.monotonic() - start, True, version))
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
        env = dict(env or clean_environment())
        # Measure this checkout's dewy, whatever (if anything) is installed in site-packages.
        env.setdefault("PYTHONPATH", ROOT)
        with open(self.log_path, "ab") as log:
            # A session of its own: a Ctrl-C in the terminal reaches only the benchmark, which then
            # stops the supervisors in order instead of racing them against the signal.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, **kw)

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


class SymlinkDeploys(Supervisor):
    """A peer deployed the way its users do: unpack into releases/<version>/, move `current`, signal.

    The app runs as `current/app.py` (the sample app finds its VERSION next to its real path), so the
    restart signal that follows the symlink move starts the new release.
    """

    def unpack(self, tarball: str, version: str) -> str:
        """Unpack tarball into base/releases/<version> (once); its path."""
        dest = os.path.join(self.base, "releases", version)
        if not os.path.isdir(dest):
            os.makedirs(dest + ".tmp")
            with tarfile.open(tarball) as tar:
                tar.extractall(dest + ".tmp", filter="data")
            os.rename(dest + ".tmp", dest)
        return dest

    def point_current(self, release: str) -> None:
        """Switch base/current to release atomically (a new symlink renamed over the old one)."""
        link = os.path.join(self.base, "current")
        tmp = link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.relpath(release, self.base), tmp)
        os.replace(tmp, link)

    def app_dir(self) -> str:
        """base/current, created on first use from the supervisor's tarball (VERSION)."""
        link = os.path.join(self.base, "current")
        if not os.path.lexists(link):
            self.point_current(self.unpack(self.tarball, VERSION))
        return link

    def deploy(self, version: str, behaviour: str = "") -> None:
        """Build `version` of the sample app (with BEHAVIOUR), move `current` to it, send the restart signal."""
        tarball = os.path.join(self.base, "app-%s.tar.gz" % version)
        build_release(tarball, version, behaviour)
        self.point_current(self.unpack(tarball, version))
        self.signal_restart()


class ServerStarter(SymlinkDeploys):
    """Server::Starter's start_server running the sample app from base/current (the release tarball)."""

    name = "start_server"
    restart_signal = signal.SIGHUP

    def _launch(self) -> None:
        app_dir = self.app_dir()
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
    ready = None  # the `ready` setting; None: delay:<ready_delay>s
    log_level = "info"
    extra_ini = ()  # more `key = value` lines

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
                "ready = %s" % (self.ready or "delay:%gs" % self.ready_delay),
                "stop-signal = TERM",
                "graceful-timeout = 10s",
                "backlog = 1024",
                "log-level = %s" % self.log_level,
                "app = %s" % shlex.join([sys.executable, os.path.join(self.workdir, "current", "app.py")]),
                "workdir = %s" % self.workdir,
            ] + list(self.extra_ini) + [""]))
        if self.no_site:
            # What a host without this interpreter's site-packages .pth hooks runs: site-packages on the
            # path, but no .pth file executed (here, one of them imports certifi and importlib.resources).
            import site
            env = clean_environment({"PYTHONPATH": os.pathsep.join([ROOT] + site.getsitepackages())})
            self._popen([sys.executable, "-S", "-m", "dewy.master", "-c", self.ini], cwd=self.base, env=env)
        else:
            self._popen([sys.executable, "-m", "dewy.master", "-c", self.ini], cwd=self.base)

    def publish(self, version: str, behaviour: str = "") -> None:
        """Publish `version` of the sample app (with BEHAVIOUR) in the file:// registry, atomically."""
        registry = os.path.join(self.base, "registry")
        tmp = os.path.join(self.base, "publish-%s.tmp" % version)
        os.makedirs(tmp)
        build_release(os.path.join(tmp, "app.tar.gz"), version, behaviour)
        # A poller listing the registry sees the whole version directory or nothing.
        os.rename(tmp, os.path.join(registry, "v" + version))

    def deploy(self, version: str, behaviour: str = "") -> None:
        """A real deploy: publish the version; the poller finds it at its next poll."""
        self.publish(version, behaviour)

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
        """Every process of dewy's own besides the master (not the app): the poller worker and the sentinel.
        Empty until both are up (the sentinel is forked at start, the poller right after)."""
        st = self.status()
        procs = []
        for key in ("poller_pid", "sentinel_pid"):
            try:
                procs.append(psutil.Process(st[key]))
            except (KeyError, TypeError, ValueError, psutil.NoSuchProcess):
                return []
        return procs


def gunicorn_command():
    """How to run gunicorn here (its script, or `python -m gunicorn`), or None when it is not installed."""
    exe = shutil.which("gunicorn")
    if exe:
        return [exe]
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "gunicorn"]


class Gunicorn(SymlinkDeploys):
    """gunicorn running bench/wsgi_app.py (the sample app as WSGI) from base/current, one gthread worker.

    HUP makes gunicorn's master start new workers (which import the app afresh, no --preload) and
    gracefully stop the old ones at once: it has no readiness rule. There is no status file; the
    status is the master's children (exactly one worker = settled).
    """

    name = "gunicorn"
    restart_signal = signal.SIGHUP
    threads = 16  # the sample app runs a thread per connection; gthread gives the WSGI app the same

    def _launch(self) -> None:
        app_dir = self.app_dir()
        cmd = gunicorn_command()
        if cmd is None:
            raise RuntimeError("gunicorn is not installed: " + GUNICORN_INSTALL)
        self._popen(cmd + [
            "--bind", "127.0.0.1:%d" % self.port, "--workers", "1", "--worker-class", "gthread",
            "--threads", str(self.threads), "--backlog", "1024", "--graceful-timeout", "10",
            "--pythonpath", BENCH, "--log-level", "info", "wsgi_app:app",
        ], env=clean_environment({"BENCH_APP_DIR": app_dir}), cwd=self.base)

    def workers(self) -> list:
        """The master's live children (its workers)."""
        try:
            return [p for p in self.ps.children() if alive(p)]
        except psutil.Error:
            return []

    def status_serving(self):
        """(0, pid) of the newest worker."""
        procs = self.workers()
        if not procs:
            return None
        newest = max(procs, key=lambda p: p.create_time())
        return (0, newest.pid)

    def status_settled(self, pid: int) -> bool:
        """Exactly one worker, pid."""
        return [p.pid for p in self.workers()] == [pid]


# --------------------------------------------------------------------------- measuring
class ResourceMonitor(threading.Thread):
    """Samples the supervisor's RSS (main process, and with its helpers) every 100 ms; keeps the peak.

    With pss=True also the PSS (/proc/PID/smaps_rollup: each shared page divided among the processes that
    map it), which counts once what a forked helper shares with its parent (dewy's sentinel and master)."""

    def __init__(self, main: psutil.Process, helpers: list, pss: bool = False):
        super().__init__(name="rss-monitor", daemon=True)
        self.main, self.helpers, self.pss = main, helpers, pss
        self.peak_main = self.peak_all = self.peak_helpers = 0
        self.peak_pss_main = self.peak_pss_all = self.peak_pss_helpers = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        """One RSS (and PSS) sample."""
        try:
            main = self.main.memory_info().rss
            main_pss = self.main.memory_full_info().pss if self.pss else 0
        except psutil.Error:
            return
        extra = extra_pss = 0
        for proc in self.helpers:
            try:
                extra += proc.memory_info().rss
                extra_pss += proc.memory_full_info().pss if self.pss else 0
            except psutil.Error:
                pass
        self.peak_main = max(self.peak_main, main)
        self.peak_all = max(self.peak_all, main + extra)
        self.peak_helpers = max(self.peak_helpers, extra)
        self.peak_pss_main = max(self.peak_pss_main, main_pss)
        self.peak_pss_all = max(self.peak_pss_all, main_pss + extra_pss)
        self.peak_pss_helpers = max(self.peak_pss_helpers, extra_pss)

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


def restart_once(sup: Supervisor, load: Load, old_pid: int, trigger=None, status_grace: float = STATUS_GRACE) -> dict:
    """Send one restart signal (or call trigger(): a deploy) and wait until it has fully settled; its timings.

    first_answer: signal -> first GET /env answered by a pid other than old_pid (the new generation
    accepts on the shared socket as soon as it runs, before it counts as ready).
    old_exited: signal -> the old generation's process is gone (the switch is complete).
    status_lag: old generation gone -> the supervisor's status file says so (None: still stale
    after STATUS_GRACE — recorded, not waited for, so a stale status cannot stall the benchmark).
    """
    old = sup.seen.get(old_pid) or psutil.Process(old_pid)
    t_signal = time.monotonic()
    (trigger or sup.signal_restart)()
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
    deadline = t_old + status_grace
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



def machine() -> str:
    """One line about where this ran."""
    load1 = os.getloadavg()[0]
    return "%s, nproc %d, Python %s, %s, loadavg(1m) %.2f at start" % (
        time.strftime("%Y-%m-%d %H:%M:%S %Z"), os.cpu_count() or 0, platform.python_version(),
        platform.platform(), load1)


def print_header() -> None:
    """Print the command, the machine and the code under test: the first lines of every figure script's output."""
    print("command: %s" % shlex.join([sys.executable] + sys.argv), flush=True)
    print("machine: %s" % machine(), flush=True)
    print("code:    %s" % code_under_test(), flush=True)


def interrupt_on_term() -> None:
    """Turn TERM/HUP (a CI timeout, a closed terminal) into KeyboardInterrupt, the clean-up path of Ctrl-C."""
    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)


def ignore_interrupts() -> None:
    """Ignore Ctrl-C, TERM and HUP from now on: a second one must not abandon a clean-up half done."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


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




# --------------------------------------------------------------------------- figure scripts
def peers_missing(wanted=("start_server", "gunicorn"), announce: bool = True) -> list:
    """'name: how to install it' for each wanted peer that cannot run here, each announced loudly."""
    missing = []
    if "start_server" in wanted and not shutil.which(PEER):
        missing.append("start_server: not on PATH; " + PEER_INSTALL)
    if "gunicorn" in wanted and gunicorn_command() is None:
        missing.append("gunicorn: not installed; " + GUNICORN_INSTALL)
    for m in missing if announce else ():
        print("*** PEER MISSING: %s ***" % m, flush=True)
    return missing


def peer_classes(missing: list) -> list:
    """The peer supervisor classes that can run (those not named in missing)."""
    names = {m.split(":")[0] for m in missing}
    return [cls for cls in (ServerStarter, Gunicorn) if cls.name not in names]


def ratio(a, b) -> str:
    """a / b as text ('=' for 0 / 0, '-' when either is missing)."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or math.isnan(a) or math.isnan(b):
        return "-"
    if a == 0 and b == 0:
        return "="
    if b == 0:
        return "-"
    return "%.2f" % (a / b)


def fmt(value, pattern: str = "%.1f", scale: float = 1) -> str:
    """value * scale formatted, or '-' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return value
    return pattern % (value * scale)


def comparison_rows(metrics: list, results: dict, tools: list) -> tuple:
    """(columns, rows): one row per (label, key, pattern, scale) metric, tools side by side, then dewy / peer."""
    peers = [t for t in tools if t != "dewy"]
    columns = ["metric"] + tools + ["dewy / %s" % p for p in peers]
    rows = []
    for label, key, pattern, scale in metrics:
        values = [(results.get(t) or {}).get(key) for t in tools]
        row = [label] + [fmt(v, pattern, scale) for v in values]
        d = (results.get("dewy") or {}).get(key)
        row += [ratio(d, (results.get(p) or {}).get(key)) for p in peers]
        rows.append(row)
    return columns, rows


def markdown_table(columns: list, rows: list) -> str:
    """A GitHub markdown table (readable as plain text)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(args, figure: int, title: str, columns: list, rows: list, notes=(), missing=(), extra=None) -> None:
    """Print the figure's table (and notes); with --json PATH also write it in bench/run's JSON contract."""
    print()
    print("Figure %d: %s" % (figure, title))
    print(markdown_table(columns, rows))
    for note in notes:
        print("- " + note)
    for m in missing:
        print("*** PEER MISSING: %s ***" % m)
    if getattr(args, "json", None):
        doc = {"figure": figure, "title": title, "command": shlex.join([sys.executable] + sys.argv),
               "columns": columns, "rows": rows, "notes": list(notes), "peers_missing": list(missing),
               "extra": extra or {}}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1, default=str)


def common_args(parser) -> None:
    """--json PATH, --quick and --keep, the options bench/run passes to every figure script."""
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON (bench/run's contract)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer switches, shorter waits)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs) and print its path")


class Scratch:
    """A scratch directory and the supervisors started in it: all stopped and removed at the end, also on TERM."""

    def __init__(self, prefix: str, keep: bool = False):
        import tempfile
        self.path = tempfile.mkdtemp(prefix=prefix)
        self.keep = keep
        self.sups = []

    def __enter__(self) -> "Scratch":
        interrupt_on_term()
        return self

    def supervisor(self, cls, name: str = None, ready_delay=1, tarball: str = None, **attrs) -> Supervisor:
        """A new supervisor of cls in its own subdirectory (name), with attributes set; stopped at the end."""
        base = os.path.join(self.path, name or cls.name)
        os.makedirs(base)
        if tarball is None:
            tarball = os.path.join(self.path, "app.tar.gz")
            if not os.path.exists(tarball):
                build_release(tarball, VERSION)
        sup = cls(base, tarball, ready_delay)
        for key, value in attrs.items():
            setattr(sup, key, value)
        self.sups.append(sup)
        return sup

    def unpacked_app(self, name: str = "floor") -> str:
        """The sample app's release unpacked into a directory of its own (to run it without a supervisor)."""
        tarball = os.path.join(self.path, "app.tar.gz")
        if not os.path.exists(tarball):
            build_release(tarball, VERSION)
        dest = os.path.join(self.path, name)
        with tarfile.open(tarball) as tar:
            tar.extractall(dest, filter="data")
        return dest

    def __exit__(self, *exc) -> None:
        ignore_interrupts()  # not abandoning half-stopped supervisors and their apps
        for sup in self.sups:
            sup.stop()
        if self.keep:
            print("scratch directory kept: %s" % self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def latency_summary(records: list, windows: list) -> dict:
    """p50/p99/max (seconds) of ok requests started inside windows [(a, b)] and outside them (idle)."""
    inside, outside = [], []
    for start, latency, ok, _ in records:
        if ok:
            (inside if any(a <= start <= b for a, b in windows) else outside).append(latency)
    return {"p50_switch": percentile(inside, 50), "p99_switch": percentile(inside, 99),
            "max_switch": max(inside, default=math.nan), "n_switch": len(inside),
            "p50_idle": percentile(outside, 50), "p99_idle": percentile(outside, 99),
            "max_idle": max(outside, default=math.nan), "n_idle": len(outside)}


BIN = 0.1  # seconds per timeline bin


def serving_version(port: int):
    """The version GET / answers now, or None when nothing answers."""
    try:
        status, body = http_get(port, "/", 2.0)
        return body.strip() if status == 200 else None
    except OSError:
        return None


def timeline(load: Load) -> dict:
    """Answers per BIN seconds by version and failures per bin (every request), and the p50 / max latency
    per bin of the fast GET / requests (ms; None for a bin without one)."""
    records = [(kind, r) for kind, rs in load.records.items() for r in rs]
    if not records:
        return {}
    n = int(max(r[0] for _, r in records) / BIN) + 1
    by_version, failed, lat = {}, [0] * n, [[] for _ in range(n)]
    for kind, (start, latency, ok, version) in records:
        i = int(start / BIN)
        if ok:
            by_version.setdefault(version, [0] * n)[i] += 1
            if kind == "fast":
                lat[i].append(latency * 1000)
        else:
            failed[i] += 1
    p50 = [sorted(x)[len(x) // 2] if x else None for x in lat]
    top = [max(x) if x else None for x in lat]
    return {"bin": BIN, "versions": by_version, "failed": failed, "p50_ms": p50, "max_ms": top}
