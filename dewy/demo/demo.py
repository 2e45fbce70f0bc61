"""`dewy demo`: a live zero-downtime deploy on this machine, in about ten seconds.

It makes a throw-away `file://` registry, publishes v1.0.0 of the sample app, starts a real
`dewy-master` on a free 127.0.0.1 port, drives HTTP load at it (a new connection per request),
publishes v1.1.0, waits until v1.1.0 answers, and reports how many requests failed (0).

The client side (free_port, http_get, Load, poll_until) is what the demo itself runs; the tests and
bench/restart.py reuse it, and tests/helpers.py extends Load with what only assertions need.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from dewy import interpreter
from dewy.demo.app import build_release
from dewy.statefiles import status_path

# Variables a supervisor above us may have set for *us*; the master must not mistake them for its own.
INHERITED_PROTOCOL_VARS = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                           "SERVER_STARTER_PORT", "SERVER_STARTER_GENERATION", "DEWY_CACHEDIR",
                           "DEWY_TESTAPP_BEHAVIOUR")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0, close); the caller must cope with a race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def poll_until(predicate, timeout: float, interval: float = 0.02):
    """Call predicate() every interval seconds until it returns something truthy (returned) or timeout (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value or None
        time.sleep(interval)


def clean_environment(extra: dict | None = None) -> dict:
    """os.environ without socket-activation/notify variables meant for this process, plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_PROTOCOL_VARS}
    env["PYTHONUNBUFFERED"] = "1"  # the master's log lines reach its log file as they happen
    env.update(extra or {})
    return env


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix stream socket."""

    def __init__(self, path: str, timeout: float = 10.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        """Connect to the socket file instead of host:port."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def http_get(target, path: str = "/", timeout: float = 10.0) -> tuple:
    """(status, body text) of one GET on a new connection; target is a port, (host, port) or 'unix:/path'."""
    if isinstance(target, str) and target.startswith("unix:"):
        conn = UnixHTTPConnection(target[len("unix:"):], timeout=timeout)
    else:
        host, port = target if isinstance(target, tuple) else ("127.0.0.1", int(target))
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


class Load:
    """N threads sending GETs, each on a new connection, until stopped; counts every request.

    ok / failed / total count requests; `reasons` has the first failures with their time since
    start; `versions` is every distinct answer in the order first seen, `first_seen[v]` when.
    """

    MAX_REASONS = 50

    def __init__(self, target, threads: int = 4, path: str = "/", timeout: float = 10.0,
                 pause: float = 0.002):
        self.target = target
        self.nthreads = threads
        self.path = path
        self.timeout = timeout
        self.pause = pause  # a breath between requests so the app and master get CPU on small hosts
        self.ok = 0
        self._failed = 0
        self.reasons = []
        self.versions = []
        self.first_seen = {}
        self.counts = {}
        self.started_at = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    @property
    def failed(self) -> int:
        """How many requests failed (`reasons` says why)."""
        with self._lock:
            return self._failed

    @property
    def total(self) -> int:
        """Requests sent and finished."""
        with self._lock:
            return self.ok + self._failed

    def start(self) -> "Load":
        """Start the threads; returns self."""
        self.started_at = time.monotonic()
        for i in range(self.nthreads):
            thread = threading.Thread(target=self._run, name="load-%d" % i, daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> "Load":
        """Stop the threads after their current request (each waits at most `timeout`)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return self

    def seen(self, version: str) -> bool:
        """True once some request was answered with version."""
        with self._lock:
            return version in self.first_seen

    def wait_seen(self, version: str, timeout: float = 10.0) -> bool:
        """Wait until some request was answered with version; False on timeout."""
        return bool(poll_until(lambda: self.seen(version), timeout, 0.01))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = http_get(self.target, self.path, self.timeout)
                if status != 200:
                    raise RuntimeError("HTTP %d: %r" % (status, body[:100]))
            except Exception as exc:  # noqa: BLE001 — every failure is counted, whatever it is
                self._record(None, exc)
            else:
                self._record(body.strip(), None)
            if self.pause:
                self._stop.wait(self.pause)

    def _record(self, version, exc) -> None:
        now = time.monotonic()
        with self._lock:
            if exc is not None:
                self._failed += 1
                if len(self.reasons) < self.MAX_REASONS:
                    self.reasons.append("t=+%.3fs %s: %s" % (now - self.started_at, type(exc).__name__, exc))
                return
            self.ok += 1
            if version not in self.first_seen:
                self.first_seen[version] = now
                self.versions.append(version)
                self.counts[version] = 0
            self.counts[version] += 1


def publish(registry: str, version: str, staging: str) -> str:
    """Put the sample app as `v<version>/app.tar.gz` into a file registry, atomically; return the dir."""
    tmp = tempfile.mkdtemp(prefix="publish-", dir=staging)
    build_release(os.path.join(tmp, "app.tar.gz"), version)
    dest = os.path.join(registry, "v" + version)
    # A poller listing the registry sees the whole version directory or nothing.
    os.rename(tmp, dest)
    return dest


def _say(t0: float, msg: str) -> None:
    print("[%5.1fs] %s" % (time.monotonic() - t0, msg), flush=True)


def _answers(port: int, version: str) -> bool:
    try:
        return http_get(port, "/", timeout=2) == (200, version + "\n")
    except OSError:
        return False


def _wait_version(port: int, version: str, timeout: float, master: subprocess.Popen) -> bool:
    # Stop waiting as soon as the master is gone: it will not start answering then.
    outcome = poll_until(lambda: "exited" if master.poll() is not None else _answers(port, version), timeout, 0.05)
    return outcome is True


def _log_tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return "(no log)"


def _start_master(tmp: str, registry: str, workdir: str, log_path: str, t0: float):
    """Start dewy-master on a free port, retrying when another process grabs the port first."""
    for _ in range(5):
        port = free_port()
        ini = os.path.join(tmp, "dewy.ini")
        with open(ini, "w") as fh:
            fh.write("\n".join([
                "[dewy]",
                "registry = file://%s?artifact=app.tar.gz" % registry,
                "port = 127.0.0.1:%d" % port,
                "interval = 0.2s",
                "ready = notify:10s",
                "app = %s %s" % (sys.executable, os.path.join(workdir, "current", "app.py")),
                "workdir = %s" % workdir,
                "graceful-timeout = 10s",
                "keep-releases = 3",
                "log-level = info",
                "",
            ]))
        log = open(log_path, "ab")
        master = subprocess.Popen(interpreter.module_command("dewy.master", ["-c", ini]), cwd=tmp,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  env=clean_environment())
        log.close()
        _say(t0, "started dewy-master (pid %d) on http://127.0.0.1:%d/" % (master.pid, port))
        # The master binds first and then writes its status file: wait for one or its exit.
        status_file = status_path(workdir)
        poll_until(lambda: master.poll() is not None or os.path.exists(status_file), 10, 0.05)
        if master.poll() is not None and "in use" in _log_tail(log_path):
            _say(t0, "port %d was taken meanwhile, trying another" % port)
            continue
        return master, port
    return master, port


def _stop_master(master: subprocess.Popen, t0: float) -> int | None:
    if master.poll() is None:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(30)
        except subprocess.TimeoutExpired:
            _say(t0, "dewy-master did not stop within 30s: killing it")
            master.kill()
            master.wait()
    return master.returncode


def run(tmp: str) -> int:
    """The demo inside the scratch directory tmp; returns the exit code."""
    t0 = time.monotonic()
    registry, workdir, staging = (os.path.join(tmp, d) for d in ("registry", "workdir", "staging"))
    for d in (registry, workdir, staging):
        os.makedirs(d)
    log_path = os.path.join(tmp, "dewy-master.log")
    print("dewy demo: a zero-downtime deploy of a sample app, in a scratch directory %s" % tmp)
    publish(registry, "1.0.0", staging)
    _say(t0, "published v1.0.0 to registry file://%s" % registry)
    master, port = _start_master(tmp, registry, workdir, log_path, t0)
    load = None
    try:
        if not _wait_version(port, "1.0.0", 30, master):
            _say(t0, "v1.0.0 did not answer; the master's log ends with:\n" + _log_tail(log_path))
            return 1
        _say(t0, "v1.0.0 answers; starting HTTP load (4 clients, a new connection per request)")
        load = Load(port, threads=4).start()
        time.sleep(1.0)
        publish(registry, "1.1.0", staging)
        published = time.monotonic()
        _say(t0, "published v1.1.0; dewy polls the registry, unpacks it, starts it on the same socket,")
        _say(t0, "waits for READY=1 from it, then stops v1.0.0 gracefully")
        if not load.wait_seen("1.1.0", 30):
            _say(t0, "v1.1.0 never answered; the master's log ends with:\n" + _log_tail(log_path))
            return 1
        switch = load.first_seen["1.1.0"] - published
        _say(t0, "v1.1.0 answers")
        time.sleep(1.0)
        load.stop()
        failed = load.failed
        print()
        print("  requests sent : %d" % load.total)
        print("  failed        : %d" % failed)
        print("  versions seen : %s" % " -> ".join(load.versions))
        print("  per version   : %s" % ", ".join("%s: %d" % (v, load.counts[v]) for v in load.versions))
        print("  switch time   : %.2fs from publishing v1.1.0 to its first answer (poll interval 0.2s)" % switch)
        for reason in load.reasons[:10]:
            print("  failure       : %s" % reason)
        print()
        return 0 if failed == 0 else 1
    finally:
        if load is not None:
            load.stop()
        code = _stop_master(master, t0)
        _say(t0, "stopped dewy-master with SIGTERM (exit code %s); removing %s" % (code, tmp))


def main(argv: list | None = None) -> int:
    """Run `dewy demo` (argv is accepted for the CLI's sake and ignored); 0 when no request failed."""
    tmp = tempfile.mkdtemp(prefix="dewy-demo-")
    try:
        return run(tmp)
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
