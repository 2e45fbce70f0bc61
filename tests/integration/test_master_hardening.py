"""The master against ordinary surprises (issue 6): a stop mid-deploy, a deleted release, a typo in `app`,
a bug in a handler, a wedged poller. Each drives a real dewy-master."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from helpers import audit_entries, alive, wait_until


def _release_of(master, version: str) -> str:
    st = master.wait_version(version)
    return st["release_dir"]


@pytest.mark.timeout(120)
def test_stop_during_a_deploy_leaves_current_on_what_served(make_master, registry):
    """TERM while 1.1.0 waits for readiness: current stays on 1.0.0, and the next start runs 1.0.0.

    Killed (not stopped) in the same spot, the next master finds the interrupted deploy in its status
    file and goes back to 1.0.0 rather than trusting a release that never became ready.
    """
    registry.publish("1.0.0")
    master = make_master(ready="notify:30s").start()
    good = _release_of(master, "1.0.0")
    registry.publish("1.1.0", behaviour="never-ready")
    master.wait_for(lambda s: s.get("deploying"), what="the deploy of 1.1.0 to start")
    assert master.stop(signal.SIGTERM) == 0
    assert os.path.realpath(master.workdir / "current") == good, master.details()

    master.start()
    st = master.wait_for(lambda s: s.get("deploying") and s.get("starting_pid"),
                         what="the deploy of 1.1.0 to start again")
    assert st["version"] == "1.0.0" and st["app_pids"], "the restarted master must run 1.0.0 first: %s" % st
    # The status names the deploy before `current` moves (so a kill in between is undone too).
    wait_until(lambda: os.path.realpath(master.workdir / "current") == st["deploying"]["release_dir"], 10,
               "current to point at the release being deployed", master.details)
    master.proc.kill()  # no chance to put current back
    master.proc.wait(10)
    wait_until(lambda: not any(alive(p) for p in [st["starting_pid"], *st["app_pids"], st["poller_pid"]]),
               10, "the killed master's children to exit")

    master.start()
    wait_until(lambda: "whose deploy was interrupted" in master.log_text(), 10,
               "the interrupted deploy to be noticed", master.details)
    st = master.wait_for(lambda s: s.get("app_pids"), what="an app generation")
    assert st["version"] == "1.0.0" and st["release_dir"] == good, st


@pytest.mark.timeout(60)
def test_deleted_release_dir_is_reported_and_redeployed(make_master, registry):
    """The running release's directory is deleted and the app dies: the master says so, the poller redeploys."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    st = master.status()
    registry.unpublish("1.0.0")  # first with nothing to deploy: the error stays visible
    shutil.rmtree(st["release_dir"])
    os.kill(st["app_pids"][0], signal.SIGKILL)
    # Noticed either at a poll while the app still runs (check_current) or when its restart finds no
    # directory; either way the master ends up waiting for the poller, saying why.
    st2 = master.wait_for(lambda s: "is gone" in (s.get("last_error") or "") and s.get("state") == "waiting", 15,
                          "the lost release in the status, the master waiting")
    assert st["release_dir"] in st2["last_error"], st2
    assert "is gone" in master.log_text()
    registry.publish("1.0.0")
    st3 = master.wait_version("1.0.0", timeout=20)
    # Unpacked afresh (within the same second it may get the same timestamped name back).
    assert os.path.isdir(st3["release_dir"]) and os.listdir(st3["release_dir"])
    # The poller writes the audit line after the master's switch: wait for it, not for the status.
    deployed = wait_until(lambda: [e for e in audit_entries(master.workdir) if e["result"] == "deployed"][1:],
                          10, "the redeploy's audit line", master.details)
    assert deployed[-1]["previous_version"] == "1.0.0", deployed  # what it replaced, not "nothing"
    assert st3["last_error"] is None


@pytest.mark.timeout(60)
def test_app_command_that_cannot_run_is_a_config_error(make_master, registry):
    """app = nosuchcmd by HUP: refused like any bad config (the release is not), shown in the status;
    fixed + HUP, the error clears. (At start the same typo exits 2: tests/unit/test_startup_checks.py.)"""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    good_app = master.settings.get("app")
    master.settings["app"] = "nosuchcmd --port 1"
    master.write_ini()
    master.signal(signal.SIGHUP)
    st = master.wait_for(lambda s: "nosuchcmd" in (s.get("last_error") or ""), 15, "the command error")
    assert "reload failed" in st["last_error"] and "cannot execute nosuchcmd" in st["last_error"], st
    assert st["version"] == "1.0.0" and master.get()[0] == 200  # still serving
    refused = master.workdir / ".dewy" / "refused.json"
    assert not refused.exists() or "1.0.0" not in json.loads(refused.read_text()), refused.read_text()
    if good_app is None:
        del master.settings["app"]
    else:
        master.settings["app"] = good_app
    master.write_ini()
    master.signal(signal.SIGHUP)
    master.wait_for(lambda s: s["last_error"] is None, 10, "the error to clear")
    master.wait_version("1.0.0", timeout=20)


@pytest.mark.timeout(60)
def test_an_exception_in_a_handler_is_survived_and_counted(make_master, registry):
    """A handler that raises (test-only injection into `restart`): logged, counted in `errors`, the app
    keeps serving; only a tight loop of them ends the master, with exit code 1."""
    registry.publish("1.0.0")
    master = make_master(env={"DEWY_TEST_FAIL_COMMAND": "restart"}).start(wait_version="1.0.0")
    st = master.status()
    assert st["errors"] == 0
    master.signal(signal.SIGUSR1)
    st2 = master.wait_for(lambda s: s.get("errors") == 1, 10, "the error to be counted")
    assert "injected failure in the restart command" in master.log_text()
    assert "Traceback" in master.log_text()
    assert st2["app_pids"] == st["app_pids"] and master.get() == (200, "1.0.0\n")
    for n in range(2, 11):  # ten within seconds: a loop, not a one-off
        master.signal(signal.SIGUSR1)
        if n < 10:
            master.wait_for(lambda s: s.get("errors") == n, 10, "error %d to be counted" % n)
    assert master.proc.wait(10) == 1, master.details()
    wait_until(lambda: not any(alive(p) for p in st["app_pids"] + [st["poller_pid"]]), 10,
               "the app and poller of the master that gave up to exit")


@pytest.mark.timeout(60)
def test_wedged_poller_is_restarted(make_master, registry):
    """A poller that stops (SIGSTOP: alive, but it neither polls nor answers pings) is restarted within
    the bound. (That an idle poller answers pings is tested in-process, tests/unit/test_lifecycle.py.)"""
    registry.publish("1.0.0")
    # Test-only: a poll may take 0.5s, so the bound is 0.5s (the ping cadence, as interval is shorter) + 0.5s.
    master = make_master(env={"DEWY_TEST_POLLER_CALL_TIMEOUT": "0.5"}).start(wait_version="1.0.0")
    poller = master.status()["poller_pid"]
    os.kill(poller, signal.SIGSTOP)
    stopped = time.monotonic()
    registry.publish("1.1.0")  # only a live poller can deploy it
    st = master.wait_for(lambda s: s.get("poller_pid") not in (None, poller), 10, "a new poller")
    took = time.monotonic() - stopped
    assert took < 1.0 + 0.5 + 2.0, "restarted after %.1fs; bound 1.0s + 0.5s respawn delay" % took
    assert "is stuck" in master.log_text() and alive(st["poller_pid"]) and not alive(poller)
    master.wait_version("1.1.0", timeout=20)
