"""An operator's mistakes and hand edits end right (issue 16 items 7, 8, 9, 11, 16, 18, 20, 21): bad durations,
damaged state files, slow publishing, a clock stepped back, paths with ` #`, small report details."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from helpers import clean_environment


def dewy_master_check(ini) -> subprocess.CompletedProcess:
    """`dewy-master -c INI --check`."""
    return subprocess.run([sys.executable, "-m", "dewy.master", "-c", str(ini), "--check"], capture_output=True,
                          text=True, timeout=60, env=clean_environment())


@pytest.mark.timeout(90)
def test_a_duration_under_its_floor_is_a_config_error_at_check_and_at_hup(make_master, registry):
    """Issue 16 item 11: `health-interval = 1ms` passed --check and restarted a healthy app 156 times in 8 s. A
    duration that drives work under its floor is refused naming the file, the key and the floor: by --check and
    by a SIGHUP (the app keeps serving with the old config)."""
    registry.publish("1.0.0")
    master = make_master(health="http:/healthz").start(wait_version="1.0.0")
    master.write_ini(health_interval="1ms")
    out = dewy_master_check(master.ini)
    assert out.returncode == 2, out
    assert out.stderr == ('dewy-master: %s: [dewy] health-interval = "1ms": expected a duration of at least 100ms '
                          '(each check may take as long: a shorter one fails healthy apps), such as 500ms, 10s or 1m\n'
                          % master.ini), out.stderr
    generation = master.status()["generation"]
    master.signal(signal.SIGHUP)
    st = master.wait_for(lambda s: "reload failed" in (s.get("last_error") or ""), 15, "the reload to be refused")
    assert 'health-interval = "1ms": expected a duration of at least 100ms' in st["last_error"], st["last_error"]
    assert str(master.ini) in st["last_error"]
    assert st["generation"] == generation and master.get() == (200, "1.0.0\n")
    assert master.stop() == 0
