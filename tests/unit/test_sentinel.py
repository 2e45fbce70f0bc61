"""The sentinel (dewy/master/sentinel.py) with real processes: it stops the groups it was told about when its
pipe ends without `exit`, leaves them alone after `exit`, and KILLs a group that ignores SIGTERM.

The sentinel is forked from its caller, as from the single-threaded master. The pytest process is not that
(gRPC's threads from other tests' servers live in it, and a forked child that closes their descriptors may
abort), so the scenarios that fork run in a fresh interpreter: `python tests/unit/test_sentinel.py NAME`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, when run as a script
from dewy.master.sentinel import Sentinel, stop_groups  # noqa: E402
from helpers import alive, wait_until  # noqa: E402

IGNORE_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
               "time.sleep(60)")


def group_of(code: str = "import time; time.sleep(60)") -> subprocess.Popen:
    """A process in a new process group (its own pid is the group id), up and running."""
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    if "print" in code:
        proc.stdout.readline()  # its handler is installed
    return proc


def finish(sentinel: Sentinel) -> int:
    """Reap the sentinel (a child of this test process); its exit code."""
    _, wstatus = os.waitpid(sentinel.pid, 0)
    return os.waitstatus_to_exitcode(wstatus)


def run_isolated(scenario: str) -> None:
    """Run a scenario of this module in a fresh interpreter; its assertions fail this test."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), scenario], capture_output=True, text=True,
                         timeout=25)
    assert out.returncode == 0, "%s failed (exit %s):\n%s%s" % (scenario, out.returncode, out.stdout, out.stderr)


@pytest.mark.timeout(30)
def test_the_groups_are_stopped_when_the_master_side_goes_away():
    run_isolated("groups_stopped_when_the_master_side_goes_away")


@pytest.mark.timeout(30)
def test_a_clean_stop_leaves_everything_alone():
    run_isolated("clean_stop_leaves_everything_alone")


def groups_stopped_when_the_master_side_goes_away():
    app, other = group_of(), group_of()
    sentinel = Sentinel.start(grace=2.0)
    try:
        sentinel.update([app.pid, other.pid])
        sentinel.update([app.pid])  # the whole set each time: `other` is no longer ours
        sentinel.close()  # what the kernel does to the pipe when the master is killed
        wait_until(lambda: app.poll() is not None, 5, "the sentinel to stop the app's group")
        assert app.returncode == -signal.SIGTERM
        assert finish(sentinel) == 0
        assert other.poll() is None, "a group the master no longer ran was stopped"
    finally:
        for proc in (app, other):
            proc.kill()
            proc.wait()
            proc.stdout.close()


def clean_stop_leaves_everything_alone():
    app = group_of()
    sentinel = Sentinel.start(grace=2.0)
    try:
        sentinel.update([app.pid])
        sentinel.release()
        assert finish(sentinel) == 0
        time.sleep(0.2)  # nothing should happen; give a wrong kill the time it would take
        assert app.poll() is None
    finally:
        app.kill()
        app.wait()
        app.stdout.close()


@pytest.mark.timeout(30)
def test_a_group_that_ignores_sigterm_is_killed_after_the_grace():
    stubborn = group_of(IGNORE_TERM)
    try:
        started = time.monotonic()
        assert stop_groups([stubborn.pid], grace=0.5) == [stubborn.pid]
        assert stubborn.wait(5) == -signal.SIGKILL
        assert 0.4 <= time.monotonic() - started < 3
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait()
        stubborn.stdout.close()
    assert not alive(stubborn.pid)


if __name__ == "__main__":
    {"groups_stopped_when_the_master_side_goes_away": groups_stopped_when_the_master_side_goes_away,
     "clean_stop_leaves_everything_alone": clean_stop_leaves_everything_alone}[sys.argv[1]]()
