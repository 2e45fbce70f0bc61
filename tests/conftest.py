"""Shared fixtures: registry, master factory, master logs on failure, leftover-process and temp-file checks."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `import helpers` from any test dir

from helpers import Master, Registry, describe_process  # noqa: E402
import servers  # noqa: E402
from servers import gcs_server, s3_server  # noqa: E402,F401 — session fixtures (moto, fake-gcs-server)
from valkeyserver import redis_server  # noqa: E402,F401 — session fixture (valkey-server)
from containers import oci_world  # noqa: E402,F401 — session fixture (podman + docker-registry)

LEFTOVER_GRACE = 3.0  # seconds a process that is on its way out gets before it counts as left behind


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the log of every master a failed test started to its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for master in getattr(item, "dewy_masters", []):
            report.sections.append(("dewy-master log %s" % master.log_path, master.log_tail(200)))


@pytest.fixture
def registry(tmp_path) -> Registry:
    """An empty file:// registry in the test's tmp dir."""
    return Registry(tmp_path)


@pytest.fixture
def make_master(request, tmp_path, registry):
    """make_master(ports=None, **ini_settings) -> an unstarted Master; every one is stopped at teardown."""
    masters = []
    request.node.dewy_masters = masters

    def make(ports=None, name: str = "dewy", env=None, **settings) -> Master:
        master = Master(tmp_path, registry, ports=ports, name=name, env=env, **settings)
        masters.append(master)
        return master

    yield make
    for master in masters:
        master.close()


@pytest.fixture
def hosts(request, tmp_path, registry):
    """hosts(n, env=None, **settings) -> n unstarted masters of one fleet, each with its own workdir and port
    (env: a list of n environments, or one for all); every one is stopped at teardown."""
    masters = []
    request.node.dewy_masters = masters

    def make(n, env=None, **settings):
        made = []
        for i in range(n):
            base = tmp_path / ("host%d" % (len(masters) + 1))
            base.mkdir()
            made.append(Master(base, registry, env=env[i] if isinstance(env, list) else env, **settings))
            masters.append(made[-1])
        return made

    yield make
    for master in masters:
        master.close()


def _ancestors() -> set:
    pids, proc = set(), psutil.Process()
    while proc is not None:
        pids.add(proc.pid)
        proc = proc.parent()
    return pids


def _mentions(proc: psutil.Process, needle: str) -> bool:
    try:
        if any(needle in arg for arg in proc.cmdline()):
            return True
        return needle in (proc.cwd() or "")
    except psutil.Error:  # gone, a zombie, or not ours to inspect
        return False


def _leftovers(tmp: str | None, exclude: set) -> list:
    """Live descendants of pytest (zombies included: nobody reaped them) and processes mentioning tmp."""
    found = {p.pid: p for p in psutil.Process().children(recursive=True)
             if p.pid not in servers.SESSION_PIDS}  # session servers live until the session ends
    if tmp:
        for proc in psutil.process_iter():
            if proc.pid not in exclude and proc.pid not in found and _mentions(proc, tmp):
                found[proc.pid] = proc
    return [p for p in found.values() if p.is_running()]


@pytest.fixture(scope="session", autouse=True)
def no_leftover_temp_files(tmp_path_factory):
    """Fail the run if it leaves temporary files behind; only the run's own count, not the machine's.

    The session gets a temp directory of its own and points TMPDIR (inherited by every master, poller,
    app and server the tests start) and this process's tempfile at it; whatever is still in it at the
    end was left by the tests. The directory is removed either way. tmp_path is pytest's job: its base
    directory is fixed before the switch, so it stays in the system temp dir.
    """
    tmp_path_factory.getbasetemp()
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    session_tmp = tempfile.mkdtemp(prefix="dewy-tests-")
    os.environ["TMPDIR"] = tempfile.tempdir = session_tmp
    try:
        yield session_tmp
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        left = sorted(os.listdir(session_tmp))
        shutil.rmtree(session_tmp, ignore_errors=True)
    assert not left, "the test run left these in its temp dir (TMPDIR): %s" % left


@pytest.fixture(autouse=True)
def no_leftover_processes(request):
    """Fail a test that leaves a process behind (a child of pytest, or anything running in its tmp dir).

    Runs after every other fixture's teardown (it is set up first), so masters are stopped by then.
    Leftovers are killed so they cannot disturb the next test, then reported.
    """
    tmp = str(request.getfixturevalue("tmp_path")) if "tmp_path" in request.fixturenames else None
    yield
    exclude = _ancestors()
    deadline = time.monotonic() + LEFTOVER_GRACE
    left = _leftovers(tmp, exclude)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _leftovers(tmp, exclude)
    if not left:
        return
    names = [describe_process(p) for p in left]
    for proc in left:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    for proc in psutil.Process().children():
        try:
            os.waitpid(proc.pid, os.WNOHANG)  # reap our own zombies so the next test starts clean
        except ChildProcessError:
            pass
    pytest.fail("test left %d process(es) behind (killed now):\n  %s" % (len(left), "\n  ".join(names)),
                pytrace=False)


def pytest_configure(config):
    """Document the marker the integration tests use for their wall-clock bound."""
    config.addinivalue_line("markers", "integration: drives a real dewy-master (slow-ish)")


def pytest_collection_modifyitems(config, items):
    """Mark everything under tests/integration as `integration` (select with -m)."""
    root = Path(__file__).parent / "integration"
    for item in items:
        if root in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
