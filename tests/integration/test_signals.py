"""The master's signals (HUP, USR1, USR2, TERM/INT, QUIT) and its children dying under it."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from helpers import Load, alive, http_get, wait_audit, wait_until


def _start(make_master, registry, version: str = "1.0.0", **settings):
    registry.publish(version)
    return make_master(**settings).start(wait_version=version)


@pytest.mark.timeout(120)
def test_usr2_upgrades_in_place_under_load(make_master, registry):
    """USR2 re-execs the master: same PID, the running app survives, no request fails, deploys still work."""
    master = _start(make_master, registry)
    st = master.status()
    app_pids, generation = st["app_pids"], st["generation"]
    with Load(master.port) as load:
        assert load.wait_requests(50)
        for _ in range(2):  # twice: an upgraded master must be able to upgrade again
            old_poller = master.status()["poller_pid"]
            master.signal(signal.SIGUSR2)
            # The new image starts a poller of its own; that is how we see the exec happened.
            st2 = master.wait_for(lambda s: s.get("poller_pid") not in (None, old_poller)
                                  and s.get("state") == "running", 30, "the upgraded master's new poller")
            assert st2["pid"] == master.pid and master.running()
            assert st2["app_pids"] == app_pids and st2["generation"] == generation, st2
            assert all(alive(pid) for pid in app_pids), "the app must survive the master's upgrade"
            wait_until(lambda: not alive(old_poller), 15, "the old poller %d to exit" % old_poller)
            assert load.wait_requests(50)
        master.deploy("1.1.0", load=load)
        master.quiesce()
    assert load.failed == 0
    assert not any(alive(pid) for pid in app_pids), "the upgraded master must retire the app it adopted"
    master.assert_no_zombies()


@pytest.mark.timeout(120)
def test_hup_rereads_the_config_and_restarts_the_app(make_master, registry):
    """HUP: a port added to the ini is served after the reload, by a new generation; no request fails."""
    master = _start(make_master, registry)
    st = master.status()
    with Load(master.port) as load:
        assert load.wait_requests(20)
        spec = master.add_port()
        master.write_ini(graceful_timeout="5s")
        master.signal(signal.SIGHUP)
        st2 = master.wait_for(lambda s: (s.get("generation") or 0) > st["generation"] and s["state"] == "running"
                              and s["app_pids"] != st["app_pids"], 30, "a new generation after HUP")
        assert st2["version"] == "1.0.0" and st2["pid"] == master.pid
        assert master.get("/", index=1) == (200, "1.0.0\n"), "the added port %s must serve" % spec
        env = master.app_env(1)["env"]
        assert env["LISTEN_FDS"] == "2" and env["SERVER_STARTER_PORT"].endswith("%s=4" % spec), env
        assert load.wait_requests(20)
        master.quiesce()
    assert load.failed == 0
    master.assert_no_zombies()


@pytest.mark.timeout(120)
def test_hup_removing_a_port_closes_it(make_master, registry):
    """HUP after a port was removed from the ini: the new generation gets one socket, the port is closed."""
    master = _start(make_master, registry, ports=[None, None])
    st = master.status()
    gone = master.target(1)
    master.port_template, master.ports = master.port_template[:1], master.ports[:1]
    master.write_ini()
    with Load(master.port) as load:
        master.signal(signal.SIGHUP)
        master.wait_for(lambda s: (s.get("generation") or 0) > st["generation"] and s["state"] == "running",
                        30, "a new generation after HUP")
        master.quiesce()
        assert load.wait_requests(20)
    assert load.failed == 0
    env = master.app_env()
    assert env["env"]["LISTEN_FDS"] == "1" and env["fds"] == [0, 1, 2, 3], env
    with pytest.raises(ConnectionRefusedError):
        http_get(gone, timeout=5)


@pytest.mark.timeout(120)
def test_hup_with_a_broken_ini_keeps_the_running_config(make_master, registry):
    """HUP with an invalid ini: the master logs the error and goes on with the old configuration."""
    master = _start(make_master, registry)
    st = master.status()
    good_ini = master.ini.read_text()
    mark = len(master.log_text())
    master.ini.write_text(good_ini.replace("interval = 0.1s", "interval = banana"))
    with Load(master.port) as load:
        master.signal(signal.SIGHUP)
        wait_until(lambda: "banana" in master.log_text()[mark:], 10, "the reload error in the log",
                   master.details)
        time.sleep(0.5)
        assert master.running(), master.details()
        st2 = master.status()
        assert st2["pid"] == master.pid and st2["version"] == "1.0.0"
        assert master.get() == (200, "1.0.0\n")
        # Still polling with the old config (interval 0.1s): a new release is picked up quickly.
        master.deploy("1.1.0", load=load, timeout=20)
    assert load.failed == 0
    assert st2["generation"] >= st["generation"]


@pytest.mark.timeout(120)
def test_usr1_restarts_the_app_gracefully(make_master, registry):
    """USR1: a new generation of the same version; no request fails."""
    master = _start(make_master, registry)
    st = master.status()
    with Load(master.port) as load:
        assert load.wait_requests(20)
        master.signal(signal.SIGUSR1)
        st2 = master.wait_for(lambda s: (s.get("generation") or 0) > st["generation"] and s["state"] == "running",
                              30, "a new generation after USR1")
        assert st2["version"] == "1.0.0" and st2["app_pids"] != st["app_pids"]
        assert load.wait_requests(50)
        master.quiesce()
    assert load.failed == 0
    assert not alive(st["app_pids"][0])
    env = master.app_env()["env"]
    assert env["SERVER_STARTER_GENERATION"] == str(st2["generation"])
    master.assert_no_zombies()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_term_stops_gracefully_and_leaves_nothing(make_master, registry, sig):
    """TERM/INT: in-flight requests finish, the master exits 0 within graceful-timeout, no process remains."""
    master = _start(make_master, registry, graceful_timeout="10s")
    st = master.status()
    pids = master.tree_pids()
    assert {master.pid, st["poller_pid"], *st["app_pids"]} <= pids, (pids, st)
    result = {}

    def slow():
        try:
            result["answer"] = http_get(master.port, "/slow?ms=1000", timeout=20)
        except Exception as exc:  # noqa: BLE001 — reported below
            result["answer"] = exc

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)  # accepted by the app by now
    started = time.monotonic()
    code = master.stop(sig, timeout=20)
    took = time.monotonic() - started
    thread.join(20)
    assert code == 0, master.details()
    assert took < 10, "graceful stop took %.1fs (graceful-timeout is 10s)" % took
    assert result["answer"] == (200, "1.0.0\n"), result
    left = [pid for pid in pids if alive(pid)]
    assert not left, "processes left after %s: %s" % (signal.Signals(sig).name, left)
    assert master.status()["state"] == "stopped"


@pytest.mark.timeout(120)
def test_term_during_a_deploy_stops_both_generations(make_master, registry):
    """TERM while a new generation is still starting: both generations and the poller are stopped."""
    master = _start(make_master, registry, ready="delay:1s")  # long enough to send TERM while 1.1.0 starts
    pids = master.tree_pids()
    registry.publish("1.1.0")
    st = master.wait_for(lambda s: s.get("starting_pid"), 30, "the deploy of 1.1.0 to start")
    pids.add(st["starting_pid"])
    assert master.stop(signal.SIGTERM, timeout=20) == 0
    left = [pid for pid in pids if alive(pid)]
    assert not left, "processes left after TERM during a deploy: %s" % left


@pytest.mark.timeout(120)
def test_restart_after_stop_serves_the_current_release(make_master, registry):
    """A stopped dewy started again runs the release `current` points at, without a new deploy."""
    master = _start(make_master, registry)
    master.deploy("1.1.0")
    assert master.stop() == 0
    master.start()
    st = master.wait_version("1.1.0", timeout=15)
    assert st["pid"] == master.pid
    assert os.path.realpath(master.workdir / "current") == st["release_dir"]


@pytest.mark.timeout(120)
def test_usr2_while_a_deploy_is_starting(make_master, registry):
    """USR2 while a new generation is starting: the upgrade waits for it, the deploy completes, nothing fails."""
    master = _start(make_master, registry, ready="delay:0.6s")
    with Load(master.port) as load:
        registry.publish("1.1.0")
        master.wait_for(lambda s: s.get("starting_pid"), 30, "the deploy of 1.1.0 to start")
        old_poller = master.status()["poller_pid"]
        master.signal(signal.SIGUSR2)
        master.wait_version("1.1.0")
        master.wait_for(lambda s: s.get("poller_pid") not in (None, old_poller), 30,
                        "the upgraded master's new poller")
        assert master.status()["pid"] == master.pid
        master.deploy("1.2.0", load=load)
        master.quiesce()
    assert load.failed == 0
    master.assert_no_zombies()


@pytest.mark.timeout(60)
def test_quit_stops_fast_and_leaves_nothing(make_master, registry):
    """QUIT: the master kills the app and poller and exits promptly; nothing remains."""
    master = _start(make_master, registry, graceful_timeout="30s")
    pids = master.tree_pids()
    started = time.monotonic()
    master.stop(signal.SIGQUIT, timeout=10)
    took = time.monotonic() - started
    assert took < 3, "fast stop took %.1fs" % took
    left = [pid for pid in pids if alive(pid)]
    assert not left, "processes left after QUIT: %s" % left


@pytest.mark.timeout(120)
def test_killed_poller_is_restarted_and_the_app_keeps_serving(make_master, registry):
    """SIGKILL the poller: the master starts a new one; the app serves throughout; deploys still work."""
    master = _start(make_master, registry)
    st = master.status()
    with Load(master.port) as load:
        os.kill(st["poller_pid"], signal.SIGKILL)
        st2 = master.wait_for(lambda s: s.get("poller_pid") not in (None, st["poller_pid"]), 30,
                              "a new poller")
        assert alive(st2["poller_pid"])
        assert st2["app_pids"] == st["app_pids"], "the app must not be touched when the poller dies"
        master.deploy("1.1.0", load=load)
    assert load.failed == 0
    master.assert_no_zombies()


@pytest.mark.timeout(120)
def test_killed_app_is_restarted(make_master, registry):
    """SIGKILL the app: the master starts a new generation of the same version."""
    master = _start(make_master, registry)
    st = master.status()
    os.kill(st["app_pids"][0], signal.SIGKILL)
    st2 = master.wait_for(lambda s: (s.get("generation") or 0) > st["generation"] and s["state"] == "running"
                          and s.get("app_pids") and s["app_pids"] != st["app_pids"], 30,
                          "a new generation after the app was killed")
    assert st2["version"] == "1.0.0"
    master.wait_version("1.0.0")
    assert master.get() == (200, "1.0.0\n")
    master.assert_no_zombies()
    # Connections that arrive while no generation runs wait in the master's socket, then get served.
    with Load(master.port) as load:
        assert load.wait_requests(50)
    assert load.failed == 0


@pytest.mark.timeout(60)
def test_status_file_drops_a_retired_generation_at_once(make_master, registry):
    """Once the old generation has exited, the status file says so without waiting for the next poll."""
    registry.publish("1.0.0")
    # A long interval: no poll rewrites the status file behind the master's back.
    master = make_master(interval="10m").start(wait_version="1.0.0")
    old = master.status()["app_pids"][0]
    master.signal(signal.SIGUSR1)
    wait_until(lambda: not alive(old), 15, "the old generation to exit")
    st = master.wait_for(lambda s: not s["retiring_pids"], timeout=5, what="retiring_pids to empty")
    assert st["generation"] == 2 and st["app_pids"] != [old]


@pytest.mark.timeout(60)
def test_usr2_is_refused_while_the_ini_is_broken(make_master, registry):
    """USR2 with a config that would not load: the master stays (same PID, same app), says why."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    st = master.status()
    master.ini.write_text(master.ini_text() + "intervall = 5s\n")
    master.signal(signal.SIGUSR2)
    wait_until(lambda: "upgrade refused" in master.log_text(), 30, "the refused upgrade in the log",
               master.details)
    assert 'unknown key "intervall"' in master.log_text()
    assert master.running() and master.status()["app_pids"] == st["app_pids"]
    assert master.status()["poller_pid"] == st["poller_pid"]  # nothing was torn down
    assert master.get() == (200, "1.0.0\n")
    master.write_ini()  # fixed: the next USR2 goes through
    master.signal(signal.SIGUSR2)
    master.wait_for(lambda s: s["poller_pid"] not in (None, st["poller_pid"]), what="the upgraded master")
    assert master.pid == st["pid"] and master.status()["app_pids"] == st["app_pids"]


@pytest.mark.timeout(60)
def test_hup_recreates_a_deleted_control_socket(make_master, registry):
    """A deleted .dewy/control.sock (issue 16 item 22): commands say no master runs; a HUP binds it again."""
    import subprocess
    import sys

    from helpers import clean_environment
    master = _start(make_master, registry)
    sock = master.workdir / ".dewy" / "control.sock"

    def resume():
        return subprocess.run([sys.executable, "-m", "dewy", "resume", "--workdir", str(master.workdir)],
                              capture_output=True, text=True, timeout=30, env=clean_environment())
    sock.unlink()
    out = resume()
    assert out.returncode == 3 and "no dewy master runs there" in out.stderr, out.stdout + out.stderr
    master.signal(signal.SIGHUP)
    wait_until(sock.exists, 20, "control.sock bound again", master.details)
    out = resume()
    assert out.returncode == 0 and "not paused" in out.stdout, out.stdout + out.stderr
    assert "the control socket %s was gone: bound it again" % sock in master.log_text()


@pytest.mark.timeout(60)
def test_hup_changing_the_address_of_a_port_says_dewy_holds_it(make_master, registry):
    """HUP from `port = 127.0.0.1:P` to `port = P` (issue 16 item 19): not "address already in use" but that dewy
    itself holds the port with the other address, and what to do; the running config keeps serving."""
    master = _start(make_master, registry)
    port = master.port[1]
    master.write_ini(port=str(port))
    master.signal(signal.SIGHUP)
    st = master.wait_for(lambda s: "reload failed" in (s.get("last_error") or ""), 20, "the reload failure")
    assert ("cannot listen on %d: dewy itself listens on that port as 127.0.0.1:%d" % (port, port)
            in st["last_error"]), st["last_error"]
    assert "restart dewy to change it" in st["last_error"], st["last_error"]
    assert st["listen"] == ["127.0.0.1:%d" % port] and master.get() == (200, "1.0.0\n")


@pytest.mark.timeout(90)
def test_usr2_after_editing_port_keeps_the_running_sockets_and_hup_applies_it(make_master, registry):
    """USR2 after a port was added to the ini (issue 16 item 5): the upgraded master keeps the running sockets
    (it bound the new port with nobody accepting, and the status listed it), says a port change needs HUP; the
    HUP then serves it."""
    master = _start(make_master, registry)
    first = master.ports[0]
    old_poller = master.status()["poller_pid"]
    spec = master.add_port()
    master.signal(signal.SIGUSR2)
    st = master.wait_for(lambda s: s.get("poller_pid") not in (None, old_poller) and s.get("state") == "running",
                         30, "the upgraded master's new poller")
    assert st["listen"] == [first], st["listen"]
    assert "USR2 keeps the running sockets, send HUP to apply a port change" in master.log_text()
    host, _, port = spec.rpartition(":")
    with pytest.raises(OSError):  # nobody listens there: refused at once, not a connection left to time out
        http_get((host, int(port)), "/", 2)
    assert master.get() == (200, "1.0.0\n")
    master.signal(signal.SIGHUP)
    st = master.wait_for(lambda s: s["listen"] == [first, spec] and s["state"] == "running"
                         and s["generation"] > 1, 30, "the HUP to serve the added port")
    assert master.get("/", index=1) == (200, "1.0.0\n")


@pytest.mark.timeout(120)
def test_hup_with_a_mistyped_app_path_is_a_reload_failure_and_blames_no_release(make_master, registry):
    """HUP with `app = python3 current/nosuch.py` (issue 16 item 6): the restart fails, shown as a reload failure
    (last error); 1.0.0 serves on; 1.1.0 published meanwhile fails as well but is not refused (the app command
    failed on 1.0.0 too); the fixed ini and a HUP deploy it."""
    import json
    import sys

    master = _start(make_master, registry)
    good_app = master.ini_text().split("app = ", 1)[1].split("\n", 1)[0]
    master.write_ini(app="%s %s" % (sys.executable, master.workdir / "current" / "nosuch.py"))
    master.signal(signal.SIGHUP)
    st = master.wait_for(lambda s: (s.get("last_error") or "").startswith("reload failed"), 30,
                         "the reload failure in last error")
    assert "did not start with the configuration re-read from" in st["last_error"], st["last_error"]
    assert "exited with code 2" in st["last_error"] and "keeps serving" in st["last_error"], st["last_error"]
    assert master.get() == (200, "1.0.0\n")
    registry.publish("1.1.0")
    st = master.wait_for(lambda s: (s.get("last_deploy") or {}).get("version") == "1.1.0", 30, "a deploy of 1.1.0")
    assert not st["last_deploy"]["ok"] and "not refused" in st["last_deploy"]["error"], st["last_deploy"]
    refused = master.workdir / ".dewy" / "refused.json"
    wait_audit(master.workdir, lambda es: any(e.get("version") == "1.1.0" for e in es), "the failed 1.1.0 audited")
    assert not refused.exists() or "1.1.0" not in json.loads(refused.read_text())["versions"], refused.read_text()
    assert master.get() == (200, "1.0.0\n")
    master.write_ini(app=good_app)
    master.signal(signal.SIGHUP)
    master.wait_version("1.1.0", timeout=60)
    assert not refused.exists() or "1.1.0" not in json.loads(refused.read_text())["versions"]
