"""Zero-downtime deploys through a real dewy-master: load, socket protocols, fds, leaks, `dewy status`."""

from __future__ import annotations

import os
import tempfile
import threading

import pytest

from helpers import Load, dewy_status_json, fd_count, fd_targets, http_get


def _deploy_series(make_master, registry, ready: str) -> None:
    """Eleven versions deployed one after another under load: every request answered, every version seen."""
    registry.publish("1.0.0")
    master = make_master(ready=ready).start(wait_version="1.0.0")
    generations = [master.status()["generation"]]
    # Fast requests count, slow ones (100 ms) are in flight at every switch and must be drained.
    with Load(master.port, threads=4) as load, Load(master.port, threads=2, path="/slow?ms=100") as slow:
        assert load.wait_seen("1.0.0")
        for minor in range(1, 11):
            version = "1.%d.0" % minor
            st = master.deploy(version, load=load)
            assert st["last_deploy"]["version"] == version and st["last_deploy"]["ok"] is True, st["last_deploy"]
            generations.append(st["generation"])
        # Keep the load on a moment after the last switch: the retiring generation drains meanwhile.
        assert load.wait_requests(50) and slow.wait_requests(4)
    assert load.failed == 0
    assert slow.failed == 0
    assert slow.total > 20, slow.summary()
    expected = ["1.%d.0" % i for i in range(11)]
    assert set(load.versions) == set(expected), load.summary()
    assert load.versions[-1] == "1.10.0" or master.get()[1].strip() == "1.10.0"
    assert master.get() == (200, "1.10.0\n")
    assert generations == sorted(generations) and len(set(generations)) == len(generations), generations
    assert load.total > 200, load.summary()  # the load really ran across the deploys
    master.assert_no_zombies()


@pytest.mark.timeout(180)
def test_ten_deploys_under_load_ready_delay(make_master, registry):
    """ready = delay: alive after the delay counts as ready; no request fails across 10 switches."""
    _deploy_series(make_master, registry, "delay:0.3s")


@pytest.mark.timeout(180)
def test_ten_deploys_under_load_ready_notify(make_master, registry):
    """ready = notify: the switch waits for READY=1; no request fails across 10 switches."""
    _deploy_series(make_master, registry, "notify:10s")


@pytest.mark.timeout(120)
def test_socket_environment_and_no_fd_leak_into_app(make_master, registry, tmp_path):
    """The app gets both socket protocols, its own LISTEN_PID, and no descriptor besides 0-2 + listeners."""
    unix_path = str(tmp_path / "app.sock")
    if len(unix_path) > 100:  # sun_path holds 107 bytes; a long --basetemp would not fit
        unix_path = os.path.join(tempfile.mkdtemp(prefix="dewy-t-"), "app.sock")
    registry.publish("1.0.0")
    master = make_master(ports=[None, None, "unix:" + unix_path], ready="notify:10s")
    master.start(wait_version="1.0.0")
    st = master.status()
    env = master.app_env()
    app_pid = env["pid"]
    assert st["app_pids"] == [app_pid]
    e = env["env"]
    tcp1, tcp2 = master.ports[0], master.ports[1]
    assert e["SERVER_STARTER_PORT"] == "%s=3;%s=4;%s=5" % (tcp1, tcp2, unix_path)
    assert e["LISTEN_FDS"] == "3"
    assert e["LISTEN_PID"] == str(app_pid)
    names = e["LISTEN_FDNAMES"].split(":")
    assert len(names) == 3 and all(names), e["LISTEN_FDNAMES"]
    assert e["SERVER_STARTER_GENERATION"] == str(st["generation"])
    assert e["DEWY_VERSION"] == "1.0.0"
    assert e["DEWY_RELEASE_DIR"] == st["release_dir"]
    assert e.get("NOTIFY_SOCKET"), "ready=notify must hand the app NOTIFY_SOCKET"
    # Exactly stdin/stdout/stderr and the three listeners: nothing of the master leaks in.
    assert env["fds"] == [0, 1, 2, 3, 4, 5], env["fd_targets"]
    for fd in ("3", "4", "5"):
        assert env["fd_targets"][fd].startswith("socket:"), env["fd_targets"]

    # All three listeners serve, before and after a deploy.
    for index in range(3):
        assert master.get("/", index) == (200, "1.0.0\n")
    with Load(master.target(0), threads=2) as load0, Load(master.target(1), threads=1) as load1, \
            Load(master.target(2), threads=1) as load2:
        st2 = master.deploy("1.1.0", load=load0)
        assert load1.wait_seen("1.1.0") and load2.wait_seen("1.1.0")
    for load in (load0, load1, load2):
        assert load.failed == 0
    for index in range(3):
        assert master.get("/", index) == (200, "1.1.0\n")
    env2 = master.app_env(2)
    assert env2["env"]["SERVER_STARTER_GENERATION"] == str(st2["generation"]) != str(st["generation"])
    assert env2["env"]["LISTEN_PID"] == str(env2["pid"]) != str(app_pid)
    assert env2["fds"] == [0, 1, 2, 3, 4, 5], env2["fd_targets"]
    # The poller gets its end of the socketpair and nothing else of the master's either.
    # Past fd 3 only what it opened itself (its wake-up pipe, a file it is writing): no socket, so no listener.
    poller_fds = fd_targets(master.status()["poller_pid"])
    assert poller_fds[3].startswith("3 -> socket:"), poller_fds
    assert not [t for t in poller_fds[4:] if "socket:" in t], poller_fds


@pytest.mark.timeout(120)
def test_slow_request_in_flight_survives_the_switch(make_master, registry):
    """A request the old generation accepted before the deploy is answered by it, after the switch."""
    registry.publish("1.0.0")
    master = make_master(ready="delay:0.2s").start(wait_version="1.0.0")
    result = {}

    def slow():
        try:
            result["answer"] = http_get(master.port, "/slow?ms=1500", timeout=20)
        except Exception as exc:  # noqa: BLE001 — reported below
            result["answer"] = exc

    thread = threading.Thread(target=slow)
    with Load(master.port, threads=2) as load:
        thread.start()
        load.wait_requests(20)  # the slow request is accepted by now
        master.deploy("1.1.0", load=load)
        assert thread.is_alive(), "the slow request should still be in flight after the switch"
        thread.join(20)
    assert load.failed == 0
    assert result["answer"] == (200, "1.0.0\n"), result
    assert "NOTIFY_SOCKET" not in master.app_env()["env"], "ready=delay hands the app no NOTIFY_SOCKET"


@pytest.mark.timeout(120)
def test_releases_published_back_to_back(make_master, registry):
    """A release published while the previous one is still starting is deployed after it; nothing fails."""
    registry.publish("1.0.0")
    master = make_master(ready="delay:0.5s").start(wait_version="1.0.0")
    with Load(master.port) as load:
        registry.publish("1.1.0")
        master.wait_for(lambda s: s.get("starting_pid"), 10, "the deploy of 1.1.0 to start")
        registry.publish("1.2.0")
        master.wait_version("1.2.0")
        master.quiesce()
        assert load.wait_requests(20)
    assert load.failed == 0
    assert master.get() == (200, "1.2.0\n")
    master.assert_no_zombies()


@pytest.mark.timeout(120)
def test_master_fd_count_stable_over_50_deploys(make_master, registry):
    """No descriptor leaks in the master: its fd count after 50 deploys equals the one after 1."""
    registry.publish("1.0.0")
    master = make_master(ready="delay:0.05s", graceful_timeout="5s", keep_releases="2").start(wait_version="1.0.0")
    master.deploy("1.0.1")
    master.quiesce()
    after_one, targets_one = fd_count(master.pid), fd_targets(master.pid)
    for patch in range(2, 51):
        master.deploy("1.0.%d" % patch)
    master.quiesce()
    after_fifty, targets_fifty = fd_count(master.pid), fd_targets(master.pid)
    assert after_fifty == after_one, "master fds after 1 deploy:\n  %s\nafter 50:\n  %s" % (
        "\n  ".join(targets_one), "\n  ".join(targets_fifty))
    st = master.status()
    assert st["version"] == "1.0.50" and st["last_deploy"]["ok"] is True
    # keep-releases = 2: old release directories are pruned as deploys go on.
    releases = [d for d in os.listdir(master.workdir / "releases") if not d.endswith(".tmp")]
    assert len(releases) <= 3, releases
    master.assert_no_zombies()


@pytest.mark.timeout(60)
def test_dewy_status_prints_the_running_version(make_master, registry):
    """`dewy status --workdir W --json` reports what the status file says is running."""
    registry.publish("2.0.0")
    master = make_master().start(wait_version="2.0.0")
    out = dewy_status_json(master.workdir)
    assert out["version"] == "2.0.0", out
    assert out["pid"] == master.pid, out
