"""Bad releases are refused or rolled back while the good version keeps serving every request."""

from __future__ import annotations

import os
import time

import pytest

from helpers import Load, audit_entries, sample_app_source, wait_until


def _refused(master, version: str, timeout: float = 30) -> dict:
    """Wait until the master reports the deploy of version failed; returns the status."""
    return master.wait_for(lambda s: (s.get("last_deploy") or {}).get("version") == version
                           and s["last_deploy"].get("ok") is False, timeout, "the deploy of %s to fail" % version)


def _audit_results(master, version: str) -> list:
    return [e.get("result") for e in audit_entries(master.workdir) if e.get("version") == version]


def _assert_refused_and_old_serves(master, bad: str, good: str, current_before: str) -> dict:
    st = _refused(master, bad)
    st = master.wait_version(good)
    assert st["version"] == good
    assert os.readlink(master.workdir / "current") == current_before, "current must point back at %s" % good
    assert master.get() == (200, good + "\n")
    wait_until(lambda: any(r not in (None, "deployed") for r in _audit_results(master, bad)), 10,
               "an audit entry for the failed deploy of %s" % bad,
               lambda: "audit: %s" % audit_entries(master.workdir))
    assert "deployed" not in _audit_results(master, bad), audit_entries(master.workdir)
    return st


def _assert_not_retried(master, bad: str, good: str, seconds: float = 1.5) -> None:
    """While bad stays the newest in the registry, the master keeps serving good and never tries bad again."""
    before = master.status()
    attempts = len(_audit_results(master, bad))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        st = master.status()
        assert st["version"] == good and st["generation"] == before["generation"], st
        assert not st.get("starting_pid"), "a new generation was started: %s" % st
        time.sleep(0.05)
    assert len(_audit_results(master, bad)) == attempts, audit_entries(master.workdir)


@pytest.mark.timeout(120)
def test_release_that_crashes_at_start_is_refused(make_master, registry):
    """A release that exits at once is refused; the old version serves throughout; a newer one deploys."""
    registry.publish("1.0.0")
    master = make_master(ready="delay:0.5s").start(wait_version="1.0.0")
    current = os.readlink(master.workdir / "current")
    with Load(master.port) as load:
        registry.publish("1.1.0", behaviour="crash-at-start")
        st = _assert_refused_and_old_serves(master, "1.1.0", "1.0.0", current)
        assert "1.1.0" in (st["last_deploy"].get("error") or ""), st["last_deploy"]
        _assert_not_retried(master, "1.1.0", "1.0.0")
        master.deploy("1.2.0", load=load)
    assert load.failed == 0
    assert "1.1.0" not in load.versions, load.summary()
    master.assert_no_zombies()


@pytest.mark.timeout(120)
def test_release_that_never_sends_ready_is_refused(make_master, registry):
    """ready = notify: a release that serves but never says READY=1 is refused after the timeout."""
    registry.publish("1.0.0")
    master = make_master(ready="notify:2s").start(wait_version="1.0.0")
    current = os.readlink(master.workdir / "current")
    with Load(master.port) as load:
        registry.publish("1.1.0", behaviour="never-ready")
        st = _assert_refused_and_old_serves(master, "1.1.0", "1.0.0", current)
        assert "READY" in (st["last_deploy"].get("error") or ""), st["last_deploy"]
        _assert_not_retried(master, "1.1.0", "1.0.0")
        master.deploy("1.2.0", load=load)
    # The never-ready generation may have answered a few requests while it was up: that is fine,
    # what matters is that none failed.
    assert load.failed == 0
    master.assert_no_zombies()


@pytest.mark.timeout(120)
def test_release_that_crash_loops_after_ready_is_rolled_back(make_master, registry):
    """A release that dies repeatedly right after its deploy goes back to the previous version."""
    registry.publish("1.0.0")
    master = make_master(ready="delay:0.2s").start(wait_version="1.0.0")
    current = os.readlink(master.workdir / "current")
    with Load(master.port) as load:
        registry.publish("1.1.0", behaviour="crash-after:0.5")
        # It becomes ready (so it is deployed), then dies, is restarted with backoff, dies again...
        master.wait_for(lambda s: (s.get("last_deploy") or {}).get("version") == "1.1.0", 30,
                        "the deploy of 1.1.0")
        st = master.wait_for(lambda s: (s.get("last_deploy") or {}).get("version") == "1.1.0"
                             and s["last_deploy"].get("ok") is False and s.get("version") == "1.0.0",
                             45, "the rollback of 1.1.0 to 1.0.0")
        master.wait_version("1.0.0")
        assert os.readlink(master.workdir / "current") == current
        assert "rolled-back" in _audit_results(master, "1.1.0") or st["last_deploy"].get("rolled_back_to") == "1.0.0"
        _assert_not_retried(master, "1.1.0", "1.0.0", seconds=2.0)
        master.deploy("1.2.0", load=load)
    # The crashing app drains before it exits, and connections queue in the master's socket while
    # no generation runs: even a crash loop drops nothing.
    assert load.failed == 0
    assert "1.1.0" in load.versions, load.summary()  # it did serve between its crashes
    master.assert_no_zombies()


@pytest.mark.timeout(120)
def test_deleting_the_newest_version_rolls_back_to_the_previous(make_master, registry):
    """The newest release disappears from the registry: the new newest is deployed."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    with Load(master.port) as load:
        master.deploy("1.1.0", load=load)
        registry.unpublish("1.1.0")
        master.wait_version("1.0.0")
        assert load.wait_seen("1.0.0")
        time.sleep(0.3)
        assert master.status()["version"] == "1.0.0"
    assert load.failed == 0


def _walk_names(root) -> list:
    return [os.path.join(d, f) for d, dirs, files in os.walk(root) for f in files + dirs]


@pytest.mark.timeout(120)
def test_corrupt_tarball_is_refused(make_master, registry):
    """Garbage instead of a tar.gz: nothing is deployed, current is untouched, nothing is left half-unpacked."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    current = os.readlink(master.workdir / "current")
    releases_before = sorted(os.listdir(master.workdir / "releases"))
    generation = master.status()["generation"]
    with Load(master.port) as load:
        registry.publish_bytes("1.1.0", b"\x1f\x8b this is not a gzip stream at all" * 100)
        master.wait_for(lambda s: s.get("last_error") or (s.get("last_deploy") or {}).get("version") == "1.1.0",
                        30, "the poller to report the corrupt release")
        time.sleep(0.5)  # a few more polls: it must not get further on a retry either
        st = master.status()
        assert st["version"] == "1.0.0" and st["generation"] == generation, st
        assert master.get() == (200, "1.0.0\n")
    assert load.failed == 0
    assert os.readlink(master.workdir / "current") == current
    assert sorted(os.listdir(master.workdir / "releases")) == releases_before
    master.deploy("1.2.0")


@pytest.mark.timeout(120)
def test_tarball_escaping_the_release_dir_is_refused(make_master, registry, tmp_path):
    """A member named ../escape (and deeper) is refused: nothing is written outside releases/<ts>/."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    current = os.readlink(master.workdir / "current")
    releases_before = sorted(os.listdir(master.workdir / "releases"))
    members = [("app.py", sample_app_source()), ("VERSION", b"1.1.0\n")]
    members += [("../" * depth + "escape%d" % depth, b"gotcha\n") for depth in range(1, 6)]
    members += [("sub/../../escape-sub", b"gotcha\n")]
    with Load(master.port) as load:
        registry.publish_tar("1.1.0", members)
        master.wait_for(lambda s: s.get("last_error") or (s.get("last_deploy") or {}).get("version") == "1.1.0",
                        30, "the poller to report the unsafe release")
        time.sleep(0.5)
        st = master.status()
        assert st["version"] == "1.0.0", st
        assert master.get() == (200, "1.0.0\n")
    assert load.failed == 0
    assert os.readlink(master.workdir / "current") == current
    assert sorted(os.listdir(master.workdir / "releases")) == releases_before
    # Where each member would land if unpacked naively into workdir/releases/<ts>.tmp/.
    releases_dir = master.workdir / "releases"
    targets = [releases_dir / "escape-sub"] + [
        (releases_dir / "x" / ("../" * depth + "escape%d" % depth)).resolve() for depth in range(1, 6)]
    escaped = [str(p) for p in targets if os.path.lexists(p)]
    escaped += [p for p in _walk_names(tmp_path) if os.path.basename(p).startswith("escape")]
    assert not escaped, "files written outside the release dir: %s" % escaped
    master.deploy("1.2.0")


@pytest.mark.timeout(60)
def test_a_crashing_app_is_restarted_with_backoff_not_in_a_tight_loop(make_master, registry):
    """An app that keeps dying (nothing to roll back to) is restarted ever more slowly: 0.5 s, 1 s, 2 s..."""
    registry.publish("1.0.0", behaviour="crash-after:0.4")
    master = make_master(ready="delay:0.2s").start()
    started = time.monotonic()
    wait_until(lambda: "restarting 1.0.0 in 2.0s" in master.log_text(), 15, "the third restart's delay",
               master.log_tail)
    took = time.monotonic() - started
    starts = master.log_text().count("waiting for it to be ready")
    # Each generation lives ~0.4 s, then waits 0.5 s, 1 s: the 2 s delay comes after exactly three starts
    # and at least 0.5 + 1 s of backoff; a tight loop would have started many more by then.
    assert starts == 3 and took >= 1.5, (starts, took, master.log_tail())
    assert master.running()
