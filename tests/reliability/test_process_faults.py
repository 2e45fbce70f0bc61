"""The fault matrix, processes (issue 10): kill -9 the poller, the app or the master; an app that ignores
its stop signal or hangs; a burst of HUPs; USR2 during a deploy. Each drives real dewy-master processes
and ends with the version that should serve serving, dewy's state intact and no process left over.

Rows covered elsewhere (RELIABILITY.md names them): USR2 while a new generation starts
(tests/integration/test_signals.py::test_usr2_while_a_deploy_is_starting), a killed idle poller
(test_signals.py::test_killed_poller_is_restarted_and_the_app_keeps_serving).
"""

from __future__ import annotations

import io
import os
import signal
import socket
import tarfile
import time
from pathlib import Path

import psutil
import pytest

from helpers import (Load, alive, audit_entries, free_port, norm, sample_app_source, wait_audit, wait_until)

BIG = 320 * 1024 * 1024  # an artifact big enough that its copy into the cache takes a while


# --------------------------------------------------------------------------- releases made here
def publish_big(registry, version: str, size: int = BIG) -> Path:
    """The sample app plus `size` bytes of padding, gzip level 0 (not compressed): a slow download."""
    def fill(path):
        with tarfile.open(path, "w:gz", compresslevel=0) as tar:
            for name, data in (("app.py", sample_app_source()), ("VERSION", (norm(version) + "\n").encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o755, time.time()
                tar.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo("padding.bin")
            info.size, info.mode, info.mtime = size, 0o644, time.time()
            tar.addfile(info, _Zeros(size))
    return registry._install(version, fill)


class _Zeros(io.RawIOBase):
    """size zero bytes, read in chunks (never all in memory)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def publish_many_files(registry, version: str, files: int = 15000) -> Path:
    """The sample app plus `files` small files: a small download that takes a while to unpack."""
    members = [("app.py", sample_app_source()), ("VERSION", (norm(version) + "\n").encode())]
    members += [("data/%03d/f%05d.txt" % (i // 500, i), b"x\n") for i in range(files)]
    return registry.publish_tar(version, members)


# A pre-fork style app: a worker process in the app's process group inherits the listening sockets.
PREFORK_APP = b'''#!/usr/bin/env python3
import os, runpy, subprocess, sys
here = os.path.dirname(os.path.realpath(__file__))
# The worker keeps the listeners (fds 3..) open, as the workers of a pre-fork server do.
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], close_fds=False)
sys.argv[0] = os.path.join(here, "server.py")
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def publish_prefork(registry, version: str) -> Path:
    """An app whose process group holds a second process with the listeners (a pre-fork server's worker)."""
    return registry.publish_tar(version, [("app.py", PREFORK_APP), ("server.py", sample_app_source()),
                                          ("VERSION", (norm(version) + "\n").encode())])


# --------------------------------------------------------------------------- inspection
def group_members(pgid: int) -> list:
    """Live (non-zombie) pids in process group pgid."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (OSError, psutil.Error):
            pass
    return found


def half_releases(workdir: Path) -> list:
    """`releases/<ts>.tmp` directories (an unpack in progress, or left by a killed poller)."""
    releases = workdir / "releases"
    return sorted(p.name for p in releases.iterdir() if p.name.endswith(".tmp")) if releases.is_dir() else []


def cache_temps(workdir: Path) -> list:
    """Half-written downloads in the workdir's file cache."""
    cache = workdir / ".dewy" / "cache"
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(".tmp.")) if cache.is_dir() else []


def wait_path(predicate, timeout: float, what: str):
    """Poll the file system every 5 ms (a download or an unpack is caught while it runs)."""
    return wait_until(predicate, timeout, what, interval=0.005)


def can_bind(port: int) -> bool:
    """Whether 127.0.0.1:port can be listened on again (SO_REUSEADDR, as servers do: connections in TIME_WAIT
    do not count, a socket that still listens does)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def master_children(master) -> list:
    """The master's live children (poller, app generations, orphans being reaped)."""
    try:
        return [c for c in psutil.Process(master.pid).children() if c.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


# --------------------------------------------------------------------------- poller killed mid-deploy
def _kill_poller_when(master, spot: str, caught) -> int:
    """SIGSTOP the poller the moment caught() sees it at spot, check it really is there, then SIGKILL it."""
    poller = master.status()["poller_pid"]
    wait_path(caught, 60, "the poller %s" % spot)
    os.kill(poller, signal.SIGSTOP)  # frozen where it was seen: the kill lands mid-%s for sure
    assert caught(), "the poller finished %s before it could be stopped" % spot
    os.kill(poller, signal.SIGKILL)
    return poller


def _after_killed_poller(master, load, old_poller: int, version: str, before: dict) -> None:
    """The master restarts the poller; the half release is never used and goes; version deploys after."""
    master.wait_for(lambda s: s.get("poller_pid") not in (None, old_poller), 30, "a new poller")
    st = master.wait_version(version, timeout=90)
    assert ".tmp" not in st["release_dir"] and ".tmp" not in os.readlink(master.workdir / "current")
    assert load.wait_seen(norm(version), 10), load.summary()
    master.quiesce()
    assert half_releases(master.workdir) == [], "a half release was left in releases/"
    assert cache_temps(master.workdir) == [], "a half download was left in the cache"
    assert "killed by SIGKILL; the app keeps serving" in master.log_text()
    assert st["app_pids"] != before["app_pids"] and st["generation"] == before["generation"] + 1, st
    wait_audit(master.workdir, lambda es: [(e["version"], e["result"]) for e in es][-1:] == [(norm(version), "deployed")],
               "the audit line of %s" % version, details=master.details)


@pytest.mark.timeout(180)
def test_poller_killed_mid_download(make_master, registry):
    """kill -9 the poller while it copies a big artifact into the cache: restarted, the half download is
    never used and removed, the version deploys afterwards; the app serves throughout."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    before = master.status()
    with Load(master.port) as load:
        publish_big(registry, "1.1.0")
        poller = _kill_poller_when(master, "downloading", lambda: cache_temps(master.workdir)
                                   and not half_releases(master.workdir))
        assert master.get() == (200, "1.0.0\n")
        _after_killed_poller(master, load, poller, "1.1.0", before)
    assert load.failed == 0
    master.assert_no_zombies()


@pytest.mark.timeout(180)
def test_poller_killed_mid_unpack(make_master, registry):
    """kill -9 the poller while it unpacks an archive of many files: the `<ts>.tmp` directory is never
    switched to and is removed; a new poller unpacks it afresh and the version deploys."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    before = master.status()
    with Load(master.port) as load:
        publish_many_files(registry, "1.1.0")
        poller = _kill_poller_when(master, "unpacking", lambda: half_releases(master.workdir))
        assert master.get() == (200, "1.0.0\n")
        assert master.status()["version"] == "1.0.0"
        _after_killed_poller(master, load, poller, "1.1.0", before)
    assert load.failed == 0
    assert len(list((Path(master.status()["release_dir"]) / "data").rglob("*.txt"))) == 15000
    master.assert_no_zombies()


# --------------------------------------------------------------------------- the app killed or stuck
@pytest.mark.timeout(120)
def test_killed_app_is_restarted_with_backoff_under_load(make_master, registry):
    """kill -9 the app twice: each time a new generation starts after a backoff the status shows (0.5 s,
    then 1 s); connections made meanwhile wait in the master's socket and are served."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    with Load(master.port) as load:
        assert load.wait_requests(50)
        for streak, delay in ((1, 0.5), (2, 1.0)):
            st = master.status()
            killed_at = time.monotonic()
            os.kill(st["app_pids"][0], signal.SIGKILL)
            waiting = master.wait_for(lambda s: s.get("respawn") is not None, 10, "the backoff in the status")
            assert waiting["respawn"]["attempt"] == streak and waiting["respawn"]["delay"] == delay, waiting
            assert waiting["app_pids"] == [] and waiting["state"] == "waiting", waiting
            st2 = master.wait_for(lambda s: s.get("app_pids") and s["app_pids"] != st["app_pids"]
                                  and s["state"] == "running", 20, "a new generation")
            assert time.monotonic() - killed_at >= delay, "restarted before its backoff"
            assert st2["respawn"] is None and st2["generation"] == st["generation"] + 1, st2
            assert load.wait_requests(50), load.summary()
        assert "restarting 1.0.0 in 0.5s" in master.log_text() and "restarting 1.0.0 in 1.0s" in master.log_text()
    # Only the requests the killed app had accepted can fail: at most one per load thread and kill.
    assert load.failed <= 2 * load.nthreads, load.failed
    # ...cut off mid-request (reset, closed, a short answer); none refused, none timed out, no error status.
    assert not any(w in r for r in load.failed.reasons for w in ("refused", "timed out", "HTTP ")), load.failed
    master.assert_no_zombies()


@pytest.mark.timeout(120)
def test_app_ignoring_its_stop_signal_is_killed_after_graceful_timeout(make_master, registry):
    """stop-signal = WINCH, which the sample app ignores: the old generation outlives the signal and is
    KILLed graceful-timeout after it, in a deploy, in a USR1 restart and when dewy stops; the new one serves."""
    registry.publish("1.0.0")
    master = make_master(stop_signal="WINCH", graceful_timeout="2s").start(wait_version="1.0.0")
    for step in ("deploy", "restart"):
        old = master.status()
        if step == "deploy":
            registry.publish("1.1.0")
        else:
            master.signal(signal.SIGUSR1)
        st = master.wait_for(lambda s: s["retiring_pids"] == old["app_pids"] and s["app_pids"], 30,
                             "the old generation to retire (%s)" % step)
        retired_at = time.monotonic()
        time.sleep(1.0)
        assert alive(old["app_pids"][0]), "the app ignores its stop signal: it must still run before the KILL"
        wait_until(lambda: not alive(old["app_pids"][0]), 10, "the old generation to be killed")
        took = time.monotonic() - retired_at
        assert 1.5 <= took <= 4.0, "killed %.1fs after it retired (graceful-timeout 2s)" % took
        master.quiesce(10)
        assert master.get() == (200, "1.1.0\n") and st["generation"] == old["generation"] + 1
    assert master.log_text().count("still running 2s after the stop signal: killed") == 2, master.log_tail()
    master.assert_no_zombies()
    # And when dewy itself stops: the app is KILLed at graceful-timeout, the master exits 0.
    app = master.status()["app_pids"][0]
    started = time.monotonic()
    assert master.stop(signal.SIGTERM, timeout=20) == 0
    assert 1.5 <= time.monotonic() - started <= 5.0 and not alive(app)
    assert "(graceful-timeout expired)" in master.log_text()


@pytest.mark.timeout(120)
def test_hung_new_generation_times_out_and_the_old_one_keeps_serving(make_master, registry):
    """SIGSTOP the new generation of a deploy: readiness (notify) times out, it is killed, the old
    generation serves throughout, the version is refused; no request fails."""
    registry.publish("1.0.0")
    master = make_master(ready="notify:2s", graceful_timeout="1s").start(wait_version="1.0.0")
    before = master.status()
    with Load(master.port) as load:
        registry.publish("1.1.0", behaviour="slow-start:1")  # it would send READY=1 after 1s
        st = master.wait_for(lambda s: s.get("starting_pid"), 30, "the deploy of 1.1.0 to start")
        hung = st["starting_pid"]
        os.kill(hung, signal.SIGSTOP)
        # The master could not start it: audited `failed` and refused for good (.dewy/refused.json).
        wait_until(lambda: any(e["version"] == "1.1.0" and e["result"] == "failed"
                               for e in audit_entries(master.workdir)), 20, "1.1.0 refused", master.details)
        wait_until(lambda: not alive(hung), 10, "the hung generation to be killed")
        assert load.wait_requests(50)
    assert load.failed == 0
    assert load.versions == ["1.0.0"], load.summary()
    st = master.quiesce()
    assert st["app_pids"] == before["app_pids"] and st["version"] == "1.0.0", st
    assert "did not send READY=1 within 2s" in st["last_deploy"]["error"], st
    assert os.path.realpath(master.workdir / "current") == before["release_dir"]
    assert "1.1.0" in (master.workdir / ".dewy" / "refused.json").read_text()
    master.assert_no_zombies()


# --------------------------------------------------------------------------- the master killed
@pytest.mark.timeout(120)
def test_killed_master_frees_its_ports_and_a_new_one_adopts_the_state(make_master, registry):
    """kill -9 the master of an app whose process group has a second process holding the listeners:
    the whole group goes, nothing keeps the ports, and a new dewy-master started on them at once serves
    the same release with the state on disk (current, status, audit log) and deploys on from there."""
    registry.publish("1.0.0")
    publish_prefork(registry, "1.1.0")
    port = free_port()
    master = make_master(ports=["127.0.0.1:%d" % port]).start(wait_version="1.1.0")
    st = master.wait_for(lambda s: s["last_deploy"] and s["last_deploy"]["version"] == "1.1.0"
                         and not s["retiring_pids"], what="1.1.0 deployed")
    wait_until(lambda: len(group_members(st["app_pids"][0])) == 2, 10, "the app's worker process")
    group = group_members(st["app_pids"][0])
    # After an in-place upgrade the new image still has the sentinel that stops the group (sentinel.py).
    guard, app = st["sentinel_pid"], st["app_pids"][0]
    master.signal(signal.SIGUSR2)
    st = master.wait_for(lambda s: s.get("poller_pid") not in (None, st["poller_pid"]), 30, "the upgraded master")
    assert st["sentinel_pid"] == guard and alive(guard) and st["app_pids"] == [app] and app in group, (st, group)
    audit_before = audit_entries(master.workdir)
    current_before = os.readlink(master.workdir / "current")
    os.kill(master.pid, signal.SIGKILL)
    master.proc.wait(10)
    wait_until(lambda: not any(alive(p) for p in group + [st["poller_pid"]]), 10,
               "the app's whole process group and the poller to exit",
               lambda: "left: %s" % [p for p in group + [st["poller_pid"]] if alive(p)])
    assert can_bind(port), "something still holds port %d" % port
    master.start(wait_version="1.1.0", timeout=20)  # the same port, at once
    st2 = master.status()
    assert st2["pid"] != st["pid"] and st2["release_dir"] == st["release_dir"], st2
    assert os.readlink(master.workdir / "current") == current_before
    assert st2["last_deploy"]["version"] == "1.1.0" and st2["last_deploy"]["ok"], st2
    assert audit_entries(master.workdir) == audit_before
    master.deploy("1.2.0")
    # The poller writes the audit line last, after the master already serves 1.2.0: wait for it.
    wait_until(lambda: len(audit_entries(master.workdir)) > len(audit_before), 10, "the audit line of 1.2.0")
    assert [e["version"] for e in audit_entries(master.workdir)] == [e["version"] for e in audit_before] + ["1.2.0"]
    assert audit_entries(master.workdir)[-1]["previous_version"] == "1.1.0"


# --------------------------------------------------------------------------- signal storms
@pytest.mark.timeout(120)
def test_ten_hups_within_a_second(make_master, registry):
    """Ten HUPs within a second under load, the last after a port was added to the ini: the end is one
    serving generation with the last config (both ports), nothing starting or retiring, no generation leaked
    (the master's children: that generation, the poller, the sentinel), the status consistent."""
    registry.publish("1.0.0")
    master = make_master(graceful_timeout="5s").start(wait_version="1.0.0")
    before = master.status()
    with Load(master.port) as load:
        assert load.wait_requests(20)
        started = time.monotonic()
        for n in range(10):
            if n == 9:
                master.add_port()
            master.signal(signal.SIGHUP)
            time.sleep(0.08)
        assert time.monotonic() - started < 1.0
        st = master.wait_for(lambda s: s["generation"] > before["generation"] and s["state"] == "running"
                             and not s["starting_pid"] and not s["retiring_pids"], 60, "the HUPs to settle")
        assert load.wait_requests(50)
    assert load.failed == 0
    kids = master_children(master)
    assert sorted(p.pid for p in kids) == sorted(st["app_pids"] + [st["poller_pid"], st["sentinel_pid"]]), \
        ([" ".join(p.cmdline()) for p in kids], st)
    assert st["generation"] <= before["generation"] + 10, st
    env = master.app_env()["env"]
    assert env["DEWY_GENERATION"] == str(st["generation"]) and env["LISTEN_FDS"] == "2", env
    assert master.get("/", index=1) == (200, "1.0.0\n")
    assert st["errors"] == 0 and st["version"] == "1.0.0" and st["last_error"] is None, st
    # Each HUP the loop takes re-reads the ini (a burst beyond the signal queue is coalesced); restarts coalesce.
    assert 1 <= master.log_text().count("configuration reloaded") <= 10
    master.assert_no_zombies()


@pytest.mark.timeout(180)
def test_usr2_while_the_poller_downloads_a_release(make_master, registry):
    """USR2 while the poller is busy with a deploy of its own (copying a big artifact): the upgraded master
    starts a new poller, the old one goes, the release deploys once, nothing half-made is left; no
    request fails. (USR2 while a new generation starts: test_signals.py::test_usr2_while_a_deploy_is_starting.)"""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    with Load(master.port) as load:
        publish_big(registry, "1.1.0")
        old_poller = master.status()["poller_pid"]
        wait_path(lambda: cache_temps(master.workdir), 60, "the download of 1.1.0")
        master.signal(signal.SIGUSR2)
        master.wait_for(lambda s: s.get("poller_pid") not in (None, old_poller), 30, "the upgraded master's poller")
        wait_until(lambda: not alive(old_poller), 15, "the old poller to exit")
        master.wait_version("1.1.0", timeout=90)
        master.deploy("1.2.0", load=load)
        master.quiesce()
    assert load.failed == 0
    assert master.status()["pid"] == master.pid
    wait_audit(master.workdir, lambda es: [e["version"] for e in es if e["result"] == "deployed"] ==
               ["1.0.0", "1.1.0", "1.2.0"], "1.0.0, 1.1.0 and 1.2.0 deployed, once each, in the audit log")
    assert half_releases(master.workdir) == [] and cache_temps(master.workdir) == []
    master.assert_no_zombies()


@pytest.mark.timeout(120)
def test_a_master_restart_during_probation_keeps_the_rollback(make_master, registry):
    """1.1.0 crashes 3 s after it starts; the master is stopped (TERM) 2 s after the switch and started again
    (issue 16 item 4): the new master carries the probation on and rolls 1.1.0 back after the third crash, as
    without the restart (it crash-looped forever, backing off up to 30 s)."""
    registry.publish("1.0.0")
    master = make_master(graceful_timeout="5s").start(wait_version="1.0.0")
    registry.publish("1.1.0", "crash-after:3")
    st = master.wait_version("1.1.0")
    assert master.stop() == 0
    probation = (master.status() or {}).get("probation") or {}
    assert probation.get("version") == "1.1.0" and probation.get("previous_version") == "1.0.0", master.status()
    master.start()
    st = master.wait_for(lambda s: (s.get("last_deploy") or {}).get("rolled_back_to") == "1.0.0", 60,
                         "the crash-looping 1.1.0 to be rolled back by the restarted master")
    assert "version 1.1.0 crashed 3 times" in st["last_deploy"]["error"], st["last_deploy"]
    assert "version 1.1.0 is still on probation" in master.log_text()
    master.wait_version("1.0.0")
    path = master.workdir / ".dewy" / "refused.json"
    wait_until(lambda: path.exists() and "1.1.0" in path.read_text(), 20, "1.1.0 refused", master.details)


DAEMONIZE = b"""import os, sys
# A daemonizing app: the process dewy started exits 0 at once while a setsid child serves fd 3 (like `nginx`
# without `daemon off`).
if os.fork():
    os._exit(0)
os.setsid()
here = os.path.dirname(os.path.abspath(__file__))
os.execv(sys.executable, [sys.executable, os.path.join(here, "serve.py")])
"""


SUPERVISE = b"""import os, signal, sys
# The process dewy started stays (until its stop signal) while a setsid child of it serves fd 3.
if not os.fork():
    os.setsid()
    here = os.path.dirname(os.path.abspath(__file__))
    os.execv(sys.executable, [sys.executable, os.path.join(here, "serve.py")])
signal.pause()
"""


def daemon_pids(workdir: Path) -> list:
    """Live processes running a release's serve.py under workdir (the daemonizing app's servers)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(a.endswith("serve.py") and a.startswith(str(workdir)) for a in cmdline) and alive(proc.pid):
            found.append(proc.pid)
    return found


@pytest.mark.timeout(120)
def test_a_daemonizing_app_leaves_nothing_behind(make_master, registry):
    """1.1.0 daemonizes (its process exits 0, a setsid child serves fd 3) under `ready = delay:1s` (issue 16
    item 1): refused ("exited with code 0 before it was ready") and its daemon, adopted by the master as
    subreaper, stopped with one log line, so only 1.0.0 answers; a 1.0.0 daemon too is stopped at SIGTERM, nothing
    keeps serving, and the next master binds the port."""
    registry.publish("1.0.0")
    port = free_port()
    master = make_master(ports=["127.0.0.1:%d" % port], ready="delay:1s",
                         graceful_timeout="5s").start(wait_version="1.0.0")
    registry.publish_tar("1.1.0", [("app.py", DAEMONIZE), ("serve.py", sample_app_source()), ("VERSION", b"1.1.0\n")])
    st = master.wait_for(lambda s: (s.get("last_deploy") or {}).get("version") == "1.1.0", 30, "1.1.0's deploy")
    assert not st["last_deploy"]["ok"] and "exited with code 0 before it was ready" in st["last_deploy"]["error"]
    wait_until(lambda: "left behind by generation" in master.log_text(), 10, "the line about the daemon",
               master.details)
    wait_until(lambda: not daemon_pids(master.workdir), 10, "the 1.1.0 daemon to be stopped",
               lambda: "daemons: %s\n%s" % (daemon_pids(master.workdir), master.details()))
    line = next(l for l in master.log_text().splitlines() if "left behind by generation" in l)
    assert "serve.py" in line and "SIGTERM, KILL after 5s" in line, line
    answers = {master.get()[1] for _ in range(50)}
    assert answers == {"1.0.0\n"}, answers
    # Now 1.0.0 starts a setsid child that serves while its first process waits (a supervisor): it serves as
    # generation 3 (after a USR1); at SIGTERM the first process exits and its child must not outlive it.
    release = master.status()["release_dir"]
    os.rename(os.path.join(release, "app.py"), os.path.join(release, "serve.py"))
    with open(os.path.join(release, "app.py"), "wb") as fh:
        fh.write(SUPERVISE)
    master.signal(signal.SIGUSR1)
    master.wait_for(lambda s: s["generation"] == 3 and not s["retiring_pids"], 30, "generation 3 serving")
    wait_until(lambda: daemon_pids(master.workdir), 10, "the 1.0.0 setsid child", master.details)
    assert master.get() == (200, "1.0.0\n")
    assert master.stop() == 0
    assert not daemon_pids(master.workdir), "a daemon outlived the master"
    lines = [l for l in master.log_text().splitlines() if "left behind by generation 3 outside its" in l]
    assert len(lines) == 1 and "serve.py" in lines[0], master.log_tail()
    assert can_bind(port), "something still holds port %d" % port
    registry.unpublish("1.1.0")
    os.remove(os.path.join(release, "app.py"))
    os.rename(os.path.join(release, "serve.py"), os.path.join(release, "app.py"))
    master.start(wait_version="1.0.0", timeout=20)
