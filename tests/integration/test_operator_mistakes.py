"""An operator's mistakes and hand edits end right (issue 16 items 7, 8, 9, 11, 16, 18, 20, 21): bad durations,
damaged state files, slow publishing, a clock stepped back, paths with ` #`, small report details."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import audit_entries, clean_environment, wait_audit, wait_until


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


def polls_pass(master, n: int = 3) -> dict:
    """Wait until the poller polled n more times; the status then."""
    start = master.status()["polls"]
    return master.wait_for(lambda s: s["polls"] >= start + n, 30, "%d more polls" % n)


@pytest.mark.timeout(120)
def test_a_malformed_refused_file_deploys_nothing_new_and_stays_untouched(make_master, registry):
    """Issue 16 item 7: a trailing comma in refused.json (which the README invites operators to edit) made the
    poller take it for empty: the refused release was deployed again, and the file rewritten, losing entries.
    Fail closed: nothing new deploys, the file stays as it is, one error names the file and the JSON error, and
    the status shows it; once fixed, deploys go on (the refused version still refused)."""
    registry.publish("1.0.0")
    master = make_master(ready="delay:0.5s").start(wait_version="1.0.0")
    registry.publish("1.1.0", behaviour="crash-at-start")
    refused = master.workdir / ".dewy" / "refused.json"
    # the poller writes refused.json once the master's answer reached it: wait for the file, not the status
    wait_until(lambda: refused.exists() and '"1.1.0"' in refused.read_text(), 30, "1.1.0 to be refused")
    text = refused.read_text()
    broken = text.rstrip().rstrip("}").rstrip().rstrip("}") + "},\n  }\n}\n"  # a trailing comma after the entry
    refused.write_text(broken)
    deploys = len(audit_entries(master.workdir))
    st = polls_pass(master, 5)
    assert st["version"] == "1.0.0" and master.get() == (200, "1.0.0\n")
    assert len(audit_entries(master.workdir)) == deploys, audit_entries(master.workdir)[deploys:]
    assert refused.read_text() == broken, "the malformed file was rewritten"
    assert "refused-versions file %s: invalid JSON" % refused in (st.get("last_error") or ""), st
    lines = [l for l in master.log_text().splitlines() if "cannot read the refused-versions file" in l]
    assert len(lines) == 1 and "deploying nothing new until it is fixed or deleted" in lines[0], lines
    assert "Expecting property name enclosed in double quotes" in lines[0], lines

    refused.write_text(text)  # fixed by hand: deploys go on, and what it refuses stays refused
    master.deploy("1.2.0")
    assert "reads again: deploying again" in master.log_text()
    assert [e["version"] for e in audit_entries(master.workdir)[deploys:]] == ["1.2.0"]
    assert '"1.1.0"' in refused.read_text()
    assert master.stop() == 0


@pytest.mark.timeout(120)
def test_an_unreadable_pause_file_holds_deploys_and_says_so_once(make_master, registry):
    """Issue 16 item 20: an unreadable paused.json held deploys (right) but logged "ignoring unreadable pause
    file" at every poll (wrong twice: it does not ignore it, and once is enough). One error says the deploys are
    held and how to end it; removing the file (`dewy resume`) lets the next version deploy."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    paused = master.workdir / ".dewy" / "paused.json"
    paused.write_text('{"reason": "maintenance",}\n')
    registry.publish("1.1.0")
    st = polls_pass(master, 8)
    assert st["version"] == "1.0.0" and master.get() == (200, "1.0.0\n")
    log_text = master.log_text()
    assert "ignoring unreadable pause file" not in log_text, "it does not ignore the file: it holds"
    lines = [l for l in log_text.splitlines() if "cannot read the pause file %s" % paused in l]
    assert len(lines) == 1, lines
    assert "invalid JSON" in lines[0] and "holding every deploy until it is fixed or removed" in lines[0], lines
    paused.unlink()
    master.wait_version("1.1.0")
    assert master.stop() == 0


def dewy(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -m dewy ARGS` and return what it did."""
    return subprocess.run([sys.executable, "-m", "dewy", *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_environment())


@pytest.mark.timeout(120)
def test_rollback_after_the_wall_clock_stepped_back_goes_to_the_release_deployed_before(make_master, registry):
    """Issue 16 item 16: release directories are named by the wall clock at unpack time; after the clock
    stepped back, the release deployed later has the older name and `dewy rollback` said "no earlier release is
    unpacked". The release deployed before is found by the deploy history (the manifest), not by names; prune
    keeps by it too. (1.0.0 was unpacked while the clock was years ahead: its directory is renamed so.)"""
    import json

    registry.publish("1.0.0")
    master = make_master(keep_releases="2").start(wait_version="1.0.0")
    assert master.stop() == 0
    releases = master.workdir / "releases"
    (old,) = os.listdir(releases)
    ahead = "20991231T235959Z"
    os.rename(releases / old, releases / ahead)
    os.unlink(master.workdir / "current")
    os.symlink(os.path.join("releases", ahead), master.workdir / "current")
    manifest = master.workdir / ".dewy" / "releases.json"
    entries = json.loads(manifest.read_text())
    entries[ahead] = entries.pop(old)
    manifest.write_text(json.dumps(entries))
    master.start(wait_version="1.0.0")
    master.deploy("1.1.0")
    assert sorted(os.listdir(releases))[-1] == ahead  # 1.0.0's name sorts after 1.1.0's
    out = dewy("rollback", "--workdir", str(master.workdir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rolling back from 1.1.0 to 1.0.0" in out.stdout, out.stdout
    master.wait_version("1.0.0")
    master.deploy("1.2.0")
    master.deploy("1.3.0")  # keep-releases = 2: by history 1.0.0's and 1.1.0's directories are the oldest
    kept = sorted(os.listdir(releases))
    assert ahead not in kept and len(kept) == 2, kept
    assert master.stop() == 0


@pytest.mark.timeout(120)
def test_every_retried_deploy_ends_with_an_outcome_line(make_master, registry):
    """Issue 16 item 21: after a transient failure (here a failing before-deploy-hook) each retry logged
    `deploying 1.1.0 ...` and `using cached ...` and then nothing: the outcome of every attempt is logged."""
    registry.publish("1.0.0")
    master = make_master(before_deploy_hook='test "$DEWY_VERSION" != 1.1.0',
                         poll_backoff_max="0.2s", log_level="info").start(wait_version="1.0.0")
    registry.publish("1.1.0")

    def attempts():
        lines = [l for l in master.log_text().splitlines() if "dewy.poller[" in l and "1.1.0" in l]
        return [l for l in lines if "deploying 1.1.0 (" in l], [l for l in lines if "deploy of 1.1.0 failed" in l]
    wait_until(lambda: len(attempts()[0]) >= 4, 30, "4 attempts at 1.1.0", master.details)
    master.stop()
    started, ended = attempts()
    assert len(ended) >= len(started) - 1 >= 3, (started, ended)  # the last attempt may have been cut by stop
    assert "failed again (2 times in a row; will retry): before-deploy-hook failed" in ended[1], ended


@pytest.mark.timeout(120)
def test_keep_releases_1_keeps_the_current_and_the_previous_release_as_the_reference_says(make_master, registry):
    """Issue 16 item 21: `keep-releases = 1` kept 2 directories while the reference said "how many unpacked
    releases are kept". The release before the current one is kept for a rollback; the reference says so."""
    from dewy.config import BY_NAME

    assert "so 1 keeps 2" in BY_NAME["keep-releases"].doc
    registry.publish("1.0.0")
    master = make_master(keep_releases="1").start(wait_version="1.0.0")
    master.deploy("1.1.0")
    master.deploy("1.2.0")
    kept = sorted(os.listdir(master.workdir / "releases"))
    assert len(kept) == 2 and os.readlink(master.workdir / "current") == os.path.join("releases", kept[-1]), kept
    out = dewy("rollback", "--workdir", str(master.workdir))
    assert out.returncode == 0 and "rolling back from 1.2.0 to 1.1.0" in out.stdout, out.stdout + out.stderr
    assert master.stop() == 0


@pytest.mark.timeout(120)
def test_a_release_copied_slowly_into_the_registry_is_retried_not_refused(make_master, registry, tmp_path):
    """Issue 16 item 9: publishing without the atomic rename (copying slowly into `v1.1.0/`) refused a good
    release for good as a corrupt archive. A truncated artifact written within the last minute is "not complete
    yet": retried, and deployed once the copy is done; an old truncated one is still refused."""
    from dewy.demo.app import build_release

    registry.publish("1.0.0")
    master = make_master(poll_backoff_max="0.5s").start(wait_version="1.0.0")
    whole = tmp_path / "whole.tar.gz"
    build_release(str(whole), "1.1.0", "")
    data = whole.read_bytes()
    target = registry.version_dir("1.1.0")
    target.mkdir()
    with open(target / registry.ARTIFACT, "wb") as out:  # the copy stalls half way
        out.write(data[: len(data) // 2])
    st = master.wait_for(lambda s: "not complete yet" in (s.get("last_error") or ""), 30, "the poller to wait")
    assert "it may still be being copied" in st["last_error"], st["last_error"]
    assert "corrupt" not in st["last_error"], "a copy under way is no corrupt archive: " + st["last_error"]
    polls_pass(master, 3)  # more tries, still not refused
    refused = master.workdir / ".dewy" / "refused.json"
    assert not refused.exists() or "1.1.0" not in refused.read_text()
    with open(target / registry.ARTIFACT, "ab") as out:  # the copy goes on and ends
        out.write(data[len(data) // 2:])
    master.wait_version("1.1.0")
    wait_audit(master.workdir, lambda es: any(e["version"] == "1.1.0" for e in es), "1.1.0's audit line")
    # waiting for a copy is no failure: nothing audited (or notified) for 1.1.0 but its deploy
    assert [e["result"] for e in audit_entries(master.workdir) if e["version"] == "1.1.0"] == ["deployed"]

    # The same cut-off copy, written two minutes ago (a copy that died): refused as corrupt.
    target = registry.version_dir("1.2.0")
    target.mkdir()
    (target / registry.ARTIFACT).write_bytes(data[: len(data) // 2])
    old = time.time() - 120
    os.utime(target / registry.ARTIFACT, (old, old))
    master.wait_for(lambda s: refused.exists() and '"1.2.0"' in refused.read_text(), 30, "1.2.0 refused")
    assert "corrupt archive app.tar.gz" in refused.read_text()
    assert master.status()["version"] == "1.1.0"
    assert master.stop() == 0


@pytest.mark.timeout(120)
def test_ready_http_takes_an_app_that_answers_after_its_first_read(make_master, registry):
    """Issue 16 item 8: `ready = http:` refused healthy releases at random (2 of 5) when the app answered right
    after its first read, before the blank line ending the request, because dewy held that line back until it
    had found the accepting process. Five such releases in a row all deploy."""
    registry.publish("1.0.0")
    master = make_master(ready="http:/healthz:3s").start(wait_version="1.0.0")
    for minor in range(1, 6):
        master.deploy("1.%d.0" % minor, behaviour="answer-on-first-read")
    refused = master.workdir / ".dewy" / "refused.json"
    assert not refused.exists() or '"1.' not in refused.read_text(), refused.read_text()
    assert master.stop() == 0
