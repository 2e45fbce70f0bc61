"""Test harness: a file:// registry, a real dewy-master process, HTTP load, process bookkeeping.

Everything here drives real processes and real sockets; nothing is mocked. Helpers fail with
messages that carry the evidence (status file, master log tail) so a red test explains itself.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
from signal import SIGKILL, SIGTERM, Signals
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import psutil

from dewy.demo import demo
from dewy.demo.app import build_release
from dewy.demo.demo import clean_environment, free_port, http_get, poll_until  # noqa: F401 — re-exported

# Defaults for every Master unless a test says otherwise: quick polls, quick readiness, verbose logs.
DEFAULT_SETTINGS = {
    "interval": "0.1s",
    "ready": "delay:0.3s",
    "graceful-timeout": "10s",
    "log-level": "debug",
    "keep-releases": "4",
}
POLL = 0.02  # how often wait_for looks at the status file


def norm(version: str) -> str:
    """A version as dewy reports it: no leading 'v'."""
    return version[1:] if version.startswith("v") else version


def wait_until(predicate, timeout: float, what: str, details=None, interval: float = POLL):
    """Poll predicate() until it returns something truthy (returned); AssertionError naming what on timeout."""
    value = poll_until(predicate, timeout, interval)
    if value is None:
        extra = ("\n" + details()) if details else ""
        raise AssertionError("timed out after %.1fs waiting for %s%s" % (timeout, what, extra))
    return value


# --------------------------------------------------------------------------- load
class FailCount(int):
    """An int that shows why requests failed in its repr, so `assert load.failed == 0` explains itself."""

    def __new__(cls, n: int, reasons: list):
        obj = super().__new__(cls, n)
        obj.reasons = reasons
        return obj

    def __repr__(self):
        if not self:
            return "0"
        return "%d (failures: %s)" % (int(self), "; ".join(self.reasons))


class Load(demo.Load):
    """The demo's HTTP load (threads, a new connection per request), plus what tests assert with.

    `with Load(port) as load:` runs it for the block; `failed` explains itself in an assertion;
    wait_requests() waits for progress, summary() is the one-line evidence for a failure message.
    """

    @property
    def failed(self) -> FailCount:
        """How many requests failed; its repr lists why."""
        with self._lock:
            return FailCount(self._failed, list(self.reasons))

    def __enter__(self) -> "Load":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_requests(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until n more requests than now have finished; False on timeout."""
        goal = self.total + n
        return bool(poll_until(lambda: self.total >= goal, timeout, 0.01))

    def summary(self) -> str:
        """One line: totals and requests per version."""
        with self._lock:
            per = ", ".join("%s: %d" % (v, self.counts[v]) for v in self.versions)
            return "%d requests, %d ok, %d failed (%s)" % (self.ok + self._failed, self.ok, self._failed, per)


# --------------------------------------------------------------------------- registry
class Registry:
    """A `file://` registry in a test's tmp dir: `<root>/v<version>/app.tar.gz`."""

    ARTIFACT = "app.tar.gz"

    def __init__(self, base: Path):
        self.root = Path(base) / "registry"
        self.staging = Path(base) / "staging"
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """The registry URL for the ini (the artifact is named explicitly, so any OS/arch works)."""
        return "file://%s?artifact=%s" % (self.root, self.ARTIFACT)

    def version_dir(self, version: str) -> Path:
        """Where a version lives in the registry."""
        return self.root / ("v" + norm(version))

    def _install(self, version: str, fill) -> Path:
        # Build the version directory aside and rename it in: the poller sees all of it or nothing.
        tmp = Path(tempfile.mkdtemp(prefix="publish-", dir=self.staging))
        fill(tmp / self.ARTIFACT)
        dest = self.version_dir(version)
        os.rename(tmp, dest)
        return dest

    def publish(self, version: str, behaviour: str = "") -> Path:
        """Publish the sample app as version (with misbehaviour switches); returns the version dir."""
        return self._install(version, lambda path: build_release(str(path), norm(version), behaviour))

    def publish_bytes(self, version: str, data: bytes) -> Path:
        """Publish arbitrary bytes as the artifact (e.g. a corrupt tarball)."""
        return self._install(version, lambda path: path.write_bytes(data))

    def publish_files(self, version: str, data: bytes, beside: dict, mtime: float | None = None) -> Path:
        """Publish bytes as the artifact with other files beside it ({name: bytes}, e.g. a checksum file),
        all at once; mtime: the files' modification time (default now; dewy retries a truncated artifact
        written within the last minute as a copy still under way)."""
        def fill(path):
            path.write_bytes(data)
            for name, content in beside.items():
                (path.parent / name).write_bytes(content)
            if mtime is not None:
                for name in [self.ARTIFACT, *beside]:
                    os.utime(path.parent / name, (mtime, mtime))
        return self._install(version, fill)

    def publish_tar(self, version: str, members: list) -> Path:
        """Publish a tar.gz made of (name, bytes) members; names are written as given (`../x` too)."""
        def fill(path):
            with tarfile.open(path, "w:gz") as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(data), 0o755, time.time()
                    tar.addfile(info, io.BytesIO(data))
        return self._install(version, fill)

    def unpublish(self, version: str) -> None:
        """Delete a version from the registry."""
        shutil.rmtree(self.version_dir(version))


def sample_app_source() -> bytes:
    """The sample app's code, for hand-made tarballs."""
    import dewy.demo.app as app
    return Path(app.__file__).read_bytes()


# --------------------------------------------------------------------------- processes
def fd_targets(pid: int) -> list:
    """What each open descriptor of pid refers to, as 'fd -> target' strings."""
    out = []
    for name in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
        try:
            out.append("%s -> %s" % (name, os.readlink("/proc/%d/fd/%s" % (pid, name))))
        except OSError:
            pass
    return out


def fd_count(pid: int) -> int:
    """How many descriptors pid has open."""
    return len(os.listdir("/proc/%d/fd" % pid))


def alive(pid) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe_process(proc: psutil.Process) -> str:
    """pid, status and command line of a process, for failure messages."""
    try:
        return "pid %d [%s] %s" % (proc.pid, proc.status(), " ".join(proc.cmdline()))
    except psutil.Error:
        return "pid %d (gone)" % proc.pid


def audit_entries(workdir: Path) -> list:
    """The JSON lines of workdir/.dewy/audit.log ([] before the first deploy)."""
    try:
        text = (Path(workdir) / ".dewy" / "audit.log").read_text()
    except FileNotFoundError:
        return []
    # A line being appended right now has no newline yet: it is read next time.
    complete = text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def wait_audit(workdir: Path, predicate, what: str, timeout: float = 15, details=None) -> list:
    """Wait until predicate(audit entries) is truthy; returns the entries.

    The poller writes its audit line after the master switched, so a status that already shows the new
    version can come before the line: tests wait for the line itself."""
    return wait_until(lambda: (lambda entries: entries if predicate(entries) else None)(audit_entries(workdir)),
                      timeout, what, details or (lambda: "audit log: %s" % audit_entries(workdir)))


# --------------------------------------------------------------------------- master
class Master:
    """A dewy-master started from an ini in the test's tmp dir, driven and inspected from outside.

    ports: listen specs in config order; None in the list means "a free 127.0.0.1 port" (re-picked
    if another process grabs it before the master binds). settings: ini keys (`graceful_timeout` and
    `graceful-timeout` both work) on top of DEFAULT_SETTINGS.
    """

    def __init__(self, base: Path, registry: Registry, ports=None, name: str = "dewy", env=None, **settings):
        self.base = Path(base)
        self.extra_env = dict(env or {})  # e.g. NOTIFY_SOCKET, as systemd would set it
        self.registry = registry
        self.workdir = self.base / "workdir"
        self.ini = self.base / ("%s.ini" % name)
        self.log_path = self.base / ("%s-master.log" % name)
        self.port_template = list(ports) if ports is not None else [None]
        self.ports = []
        self.settings = dict(DEFAULT_SETTINGS)
        self.settings.update({k.replace("_", "-"): v for k, v in settings.items()})
        self.proc = None
        self.pid = None
        # How to start it: launcher argv goes before the master's (e.g. tests/sd_listen.py, starting it the
        # way systemd's socket activation does); pass_fds stay open in it.
        self.launcher: list = []
        self.pass_fds: tuple = ()

    # ---------------------------------------------------------------- config
    def _pick_ports(self) -> None:
        self.ports = [spec if spec is not None else "127.0.0.1:%d" % free_port() for spec in self.port_template]

    def ini_text(self) -> str:
        """The ini this master runs with."""
        settings = {
            "registry": self.registry.url,
            "port": ", ".join(self.ports),
            # Absolute path through `current`: independent of the app's cwd and of PATH's python3.
            "app": " ".join(shlex.quote(p) for p in (sys.executable, str(self.workdir / "current" / "app.py"))),
            "workdir": str(self.workdir),
        }
        settings.update(self.settings)
        return "[dewy]\n" + "".join("%s = %s\n" % (k, v) for k, v in settings.items() if v is not None)

    def write_ini(self, **changes) -> None:
        """Change settings (None removes one) and rewrite the ini, e.g. before a SIGHUP."""
        for key, value in changes.items():
            self.settings[key.replace("_", "-")] = value
        self.ini.write_text(self.ini_text())

    def add_port(self, spec: str | None = None) -> str:
        """Add a listen spec (a free 127.0.0.1 port by default) to the ini; returns it."""
        spec = spec or "127.0.0.1:%d" % free_port()
        self.port_template.append(spec)
        self.ports.append(spec)
        self.write_ini()
        return spec

    # ---------------------------------------------------------------- lifecycle
    def start(self, wait_version: str | None = None, timeout: float = 30) -> "Master":
        """Start dewy-master; wait until it wrote its status (and serves wait_version, if given)."""
        for attempt in range(5):
            self._pick_ports()
            self.write_ini()
            mark = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                log.write(("---- %s: starting dewy-master -c %s (ports %s)\n" % (
                    time.strftime("%H:%M:%S"), self.ini, ", ".join(self.ports))).encode())
                log.flush()
                self.proc = subprocess.Popen(
                    self.launcher + [sys.executable, "-m", "dewy.master", "-c", str(self.ini)], cwd=str(self.base),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=clean_environment(self.extra_env),
                    pass_fds=self.pass_fds)
            self.pid = self.proc.pid
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                st = self.status()
                if st and st.get("pid") == self.pid:
                    break
                time.sleep(POLL)
            if self.proc.poll() is not None:
                text = self.log_text()[mark:]
                if "in use" in text and None in self.port_template and attempt < 4:
                    continue  # someone took our free port between the probe and the master's bind
                raise AssertionError("dewy-master exited with %s during start-up; log:\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            if not (self.status() or {}).get("pid") == self.pid:
                raise AssertionError("dewy-master wrote no status within %ss\n%s" % (timeout, self.details()))
            break
        if wait_version:
            self.wait_version(wait_version, timeout=timeout)
        return self

    def running(self) -> bool:
        """True while the master process has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send sig to the master process."""
        os.kill(self.pid, sig)

    def stop(self, sig: int = SIGTERM, timeout: float = 30) -> int:
        """Signal the master and wait for it to exit; returns its exit code (AssertionError on timeout)."""
        if not self.running():
            return self.proc.returncode if self.proc else 0
        self.signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree()
            raise AssertionError("dewy-master did not exit within %ss of %s\n%s" % (
                timeout, Signals(sig).name, self.details())) from None

    def tree_pids(self) -> set:
        """Pids of the master, every descendant, and the pids its status names."""
        pids = set()
        if self.pid and alive(self.pid):
            pids.add(self.pid)
            try:
                pids.update(p.pid for p in psutil.Process(self.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        st = self.status() or {}
        for key in ("app_pids", "retiring_pids"):
            pids.update(st.get(key) or [])
        for key in ("poller_pid", "starting_pid"):
            if st.get(key):
                pids.add(st[key])
        return {p for p in pids if alive(p)}

    def kill_tree(self) -> None:
        """SIGKILL the master and everything it started (cleanup after a failure)."""
        for pid in self.tree_pids():
            try:
                os.kill(pid, SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        """Teardown: stop the master gracefully if it still runs, kill what is left otherwise."""
        if self.running():
            try:
                self.stop(SIGTERM, timeout=30)
            except AssertionError:
                pass
        elif self.proc is not None:
            self.proc.wait()

    # ---------------------------------------------------------------- inspection
    def status(self) -> dict | None:
        """The parsed status file, or None when there is none yet."""
        try:
            with open(self.workdir / ".dewy" / "status.json") as fh:
                return json.load(fh)
        except (FileNotFoundError, ValueError):
            return None

    def log_text(self) -> str:
        """Everything the master (and its children) wrote to stdout/stderr."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        """The last lines of the master log."""
        return "".join(self.log_text().splitlines(True)[-lines:])

    def details(self) -> str:
        """Status file and master log tail, for failure messages."""
        return "status: %s\nmaster log tail (%s):\n%s" % (
            json.dumps(self.status(), indent=1, sort_keys=True), self.log_path, self.log_tail())

    def wait_for(self, predicate, timeout: float = 30, what: str = "a condition"):
        """Poll the status file every 20 ms until predicate(status) is truthy; returns that status."""
        def check():
            if not self.running():
                raise AssertionError("dewy-master exited (%s) while waiting for %s\n%s" % (
                    self.proc.returncode, what, self.details()))
            st = self.status()
            return st if st is not None and predicate(st) else None
        return wait_until(check, timeout, what, self.details)

    def target(self, index: int = 0):
        """What http_get/Load take for the index-th listen spec: a port or 'unix:/path'."""
        spec = self.ports[index]
        if spec.startswith("unix:"):
            return spec
        host, _, port = spec.rpartition(":")
        return (host.strip("[]") or "127.0.0.1", int(port))

    @property
    def port(self):
        """The first listen target (see target())."""
        return self.target(0)

    def get(self, path: str = "/", index: int = 0, timeout: float = 10.0) -> tuple:
        """(status, body) of one GET to the index-th listener."""
        return http_get(self.target(index), path, timeout)

    def app_env(self, index: int = 0) -> dict:
        """The serving app's GET /env answer."""
        status, body = self.get("/env", index)
        assert status == 200, body
        return json.loads(body)

    def wait_version(self, version: str, timeout: float = 30, index: int = 0) -> dict:
        """Wait until the status says version is running AND a GET answers it; returns the status."""
        version = norm(version)
        st = self.wait_for(lambda s: s.get("version") == version and s.get("state") == "running"
                           and s.get("app_pids"), timeout, "version %s running" % version)
        last = []

        def answers():
            try:
                code, body = self.get("/", index, timeout=5)
                last[:] = [code, body]
                return code == 200 and body.strip() == version
            except OSError as exc:
                last[:] = [exc]
                return False
        wait_until(answers, timeout, "GET / to answer %s (last answer: %r)" % (version, last), self.details)
        return st

    def deploy(self, version: str, load: Load | None = None, behaviour: str = "", timeout: float = 30) -> dict:
        """Publish version and wait until it serves (and, with load, until the load saw it)."""
        self.registry.publish(version, behaviour)
        st = self.wait_version(version, timeout)
        if load is not None:
            assert load.wait_seen(norm(version), 10), "load never saw %s: %s" % (version, load.summary())
        return st

    def assert_no_zombies(self, timeout: float = 3) -> None:
        """No child of the master stays a zombie (brief ones, not yet reaped, get timeout seconds)."""
        def zombies():
            try:
                return [describe_process(c) for c in psutil.Process(self.pid).children()
                        if c.status() == psutil.STATUS_ZOMBIE]
            except psutil.NoSuchProcess:
                return []
        wait_until(lambda: not zombies(), timeout, "the master to reap its children",
                   lambda: "zombies: %s\n%s" % (zombies(), self.details()))

    def quiesce(self, timeout: float = 30) -> dict:
        """Wait until the master is running with nothing starting or retiring; returns the status."""
        return self.wait_for(lambda s: s.get("state") == "running" and not s.get("retiring_pids")
                             and not s.get("starting_pid"), timeout, "a quiet master (nothing retiring)")


def dewy_status_json(workdir: Path) -> dict:
    """Run `python -m dewy status --workdir W --json` and parse what it prints."""
    out = subprocess.run([sys.executable, "-m", "dewy", "status", "--workdir", str(workdir), "--json"],
                         capture_output=True, text=True, timeout=30, env=clean_environment())
    assert out.returncode == 0, "dewy status exited %d: %s%s" % (out.returncode, out.stdout, out.stderr)
    return json.loads(out.stdout)
