"""`ready = http:` and `health` against a real dewy-master and the sample app's /healthz switches."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from helpers import Load, audit_entries, clean_environment, wait_until


@pytest.mark.timeout(120)
def test_http_ready_waits_for_2xx_and_refuses_a_release_that_never_answers_it(make_master, registry):
    """503 then 200: the switch waits (the old version answers meanwhile, its 200s do not count);
    never 200: refused after the timeout, the old version keeps serving, no failed request."""
    registry.publish("1.0.0")
    master = make_master(ready="http:/healthz:4s").start(wait_version="1.0.0")
    with Load(master.port, threads=3) as load:
        assert load.wait_seen("1.0.0")
        registry.publish("1.1.0", behaviour="unhealthy-for:1.5")
        st = master.wait_for(lambda s: s.get("starting_pid"), 20, "generation of 1.1.0 starting")
        seen_starting = time.monotonic()
        assert master.get()[1].strip() == "1.0.0", "the old version serves while the new one is not ready"
        master.wait_version("1.1.0", timeout=20)
        waited = time.monotonic() - seen_starting
        assert waited >= 1.0, "switched after %.2fs, before /healthz answered 200 (1.5s)" % waited
        st = master.quiesce()
        assert st["last_deploy"]["ok"] is True and st["version"] == "1.1.0"

        registry.publish("1.2.0", behaviour="unhealthy-for:3600")
        refused = wait_until(lambda: [e for e in audit_entries(master.workdir) if e["version"] == "1.2.0"], 30,
                             "1.2.0 refused", master.details)
        assert refused[0]["result"] == "failed", refused  # the master could not start it: refused for good
        assert "1.2.0" in json.loads((master.workdir / ".dewy" / "refused.json").read_text())["versions"]
        assert "GET /healthz did not answer 2xx within 4s (last: GET /healthz answered 503" in refused[0]["error"]
        assert load.wait_requests(30)
    assert load.failed == 0  # (the starting 1.2.0 answered requests too, as any starting generation does)
    st = master.quiesce()
    assert st["version"] == "1.1.0" and master.get() == (200, "1.1.0\n")
    # `dewy history` after a deploy and a refusal: newest first.
    out = subprocess.run([sys.executable, "-m", "dewy", "history", "--workdir", str(master.workdir)],
                         capture_output=True, text=True, timeout=30, env=clean_environment())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["TIME", "VERSION", "RESULT", "SWITCH", "REASON"]
    assert "1.1.0 → 1.2.0" in lines[1] and " failed " in lines[1] and "GET /healthz did not answer 2xx" in lines[1]
    assert "1.0.0 → 1.1.0" in lines[2] and " deployed " in lines[2]
    assert re.search(r" deployed +\d+\.\d+s ", lines[2]), lines[2]  # how long the switch took
    assert "nothing → 1.0.0" in lines[3] and len(lines) == 4


@pytest.mark.timeout(120)
def test_health_restarts_a_wedged_app_gracefully(make_master, registry):
    """/healthz turns 503 after a second: health-failures checks in a row start a new generation first."""
    registry.publish("1.0.0", behaviour="unhealthy-after:1")
    master = make_master(health="http:/healthz", health_interval="0.2s", health_failures="2").start(
        wait_version="1.0.0")
    first = master.status()
    with Load(master.port, threads=3) as load:
        st = master.wait_for(lambda s: s.get("generation") and s["generation"] > first["generation"], 20,
                             "a new generation after the health checks failed")
        assert st["app_pids"] != first["app_pids"] and st["version"] == "1.0.0"
        assert load.wait_requests(30)
    assert load.failed == 0
    log = master.log_text()
    assert "health check 2/2 of generation %d" % first["generation"] in log
    assert "failed 2 health checks in a row" in log and "[health]" in log
