"""dewy-master beyond deploys: systemd's notify protocol, ports taken, assets mode, a killed master, hooks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from helpers import alive, audit_entries, clean_environment, wait_audit, wait_until


class SystemdSocket:
    """The NOTIFY_SOCKET systemd would give dewy-master: collects every datagram it sends."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[dict] = []

    def collect(self) -> list:
        try:
            while True:
                data = self.sock.recv(4096).decode()
                self.messages.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))
        except (socket.timeout, BlockingIOError):
            pass
        return self.messages

    def wait(self, key: str, value: str | None = None, timeout: float = 20) -> dict:
        """The first message (from the start) with key (= value); AssertionError on timeout."""
        def found():
            for msg in self.collect():
                if key in msg and (value is None or msg[key] == value):
                    return msg
            return None
        return wait_until(found, timeout, "sd_notify %s=%s" % (key, value), lambda: "got %r" % self.messages)

    def close(self):
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    sd = SystemdSocket(str(tmp_path / "systemd-notify.sock"))
    yield sd
    sd.close()


@pytest.mark.timeout(60)
def test_tells_systemd_ready_reloading_and_stopping(make_master, registry, systemd):
    """READY=1 at once with no release; with one, only once it serves; RELOADING=1 on HUP; STOPPING=1."""
    registry.publish("1.0.0", behaviour="slow-start:0.5")
    master = make_master(env={"NOTIFY_SOCKET": systemd.path}, ready="notify:10s").start()
    # Nothing deployed yet: systemd must not wait for the registry.
    assert systemd.wait("READY", "1")["STATUS"] == "waiting for a release"
    master.wait_version("1.0.0")
    systemd.wait("STATUS", "app v1.0.0 gen 1")
    # The app gets dewy's own notify socket, never systemd's.
    assert master.app_env()["env"].get("NOTIFY_SOCKET") != systemd.path
    before = len(systemd.collect())
    master.signal(signal.SIGHUP)
    master.wait_for(lambda s: s["generation"] == 2 and not s["retiring_pids"], what="the HUP restart")
    kinds = [k for msg in systemd.collect()[before:] for k in msg]
    assert "RELOADING" in kinds and "MONOTONIC_USEC" in kinds, kinds
    assert kinds.index("RELOADING") < len(kinds) - 1 - kinds[::-1].index("READY"), kinds
    # After an in-place upgrade the new image still talks to systemd.
    old_poller = master.status()["poller_pid"]
    master.signal(signal.SIGUSR2)
    master.wait_for(lambda s: s["poller_pid"] not in (None, old_poller), what="the upgraded master's poller")
    assert master.stop() == 0
    systemd.wait("STOPPING", "1", timeout=5)

    # A restart with a release in `current`: READY=1 only once the (slow-starting) app serves.
    systemd.messages.clear()
    master.start()
    ready = systemd.wait("READY", "1")
    assert master.status()["app_pids"], "READY=1 before the app was ready"
    assert ready["STATUS"].startswith("app v1.0.0 gen"), ready
    assert master.get() == (200, "1.0.0\n")


@pytest.mark.timeout(30)
def test_pings_the_systemd_watchdog(make_master, registry, systemd):
    """With WatchdogSec= (WATCHDOG_USEC) set, the master sends WATCHDOG=1 at half that interval."""
    master = make_master(env={"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "400000"}).start()
    systemd.wait("READY", "1")
    first = len([m for m in systemd.collect() if "WATCHDOG" in m])
    wait_until(lambda: len([m for m in systemd.collect() if "WATCHDOG" in m]) >= first + 4, 5,
               "four more WATCHDOG=1 pings")
    master.stop()


@pytest.mark.timeout(30)
def test_port_in_use_fails_fast_with_a_clear_error(tmp_path, registry):
    """A taken port: dewy-master exits non-zero before starting anything and says which address."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = %s\nport = 127.0.0.1:%d\napp = %s current/app.py\nworkdir = %s\n"
                   % (registry.url, port, sys.executable, tmp_path / "w"))
    try:
        done = subprocess.run([sys.executable, "-m", "dewy.master", "-c", str(ini)], capture_output=True,
                              text=True, timeout=20, env=clean_environment())
    finally:
        holder.close()
    assert done.returncode == 3, done
    assert "cannot listen on 127.0.0.1:%d: address already in use" % port in done.stderr
    assert not (tmp_path / "w" / "releases").exists()  # the poller never ran


@pytest.mark.timeout(60)
def test_assets_mode_keeps_current_and_dir_on_the_newest(make_master, registry, tmp_path):
    """mode = assets: no app; `current` and `dir` follow the newest release."""
    www = tmp_path / "www"
    registry.publish("1.0.0")
    master = make_master(ports=[], mode="assets", app=None, dir=str(www)).start()
    st = master.wait_for(lambda s: s.get("version") == "1.0.0", what="assets 1.0.0")
    assert st["app_pids"] == [] and st["state"] == "running"
    assert (www / "VERSION").read_text().strip() == "1.0.0"
    assert (master.workdir / "current" / "VERSION").read_text().strip() == "1.0.0"
    registry.publish("1.1.0")
    master.wait_for(lambda s: s.get("version") == "1.1.0", what="assets 1.1.0")
    assert (www / "VERSION").read_text().strip() == "1.1.0"
    assert os.path.realpath(www) == os.path.realpath(master.workdir / "current")
    entries = wait_audit(master.workdir, lambda es: len(es) >= 2, "the audit line of 1.1.0")
    assert [e["result"] for e in entries] == ["deployed", "deployed"]
    assert all(e["mode"] == "assets" for e in entries)


@pytest.mark.timeout(60)
def test_app_does_not_outlive_a_killed_master(make_master, registry):
    """SIGKILL on the master: the app and poller stop too, so a new master can bind the port again."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    st = master.status()
    children = st["app_pids"] + [st["poller_pid"]]
    os.kill(master.pid, signal.SIGKILL)
    master.proc.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in children), 15, "the app and poller to exit")
    master.start(wait_version="1.0.0")  # same port: the old app released it
    assert master.status()["app_pids"] != st["app_pids"]


@pytest.mark.timeout(60)
def test_deploy_hooks_get_the_release_environment(make_master, registry, tmp_path):
    """before- and after-deploy hooks run in workdir with DEWY_VERSION, DEWY_PREVIOUS_VERSION, ..."""
    hook = "env | grep ^DEWY_ | sort > %s/$0-$DEWY_VERSION.env" % tmp_path
    registry.publish("1.0.0")
    master = make_master(**{"before-deploy-hook": "sh -c '%s' before" % hook,
                            "after-deploy-hook": "sh -c '%s' after" % hook}).start(wait_version="1.0.0")
    master.deploy("1.1.0")
    # The audit line is written once the after hook has finished (its file may exist before it is full).
    wait_until(lambda: any(e["version"] == "1.1.0" and e["result"] == "deployed"
                           for e in audit_entries(master.workdir)), 10, "the audit line of 1.1.0")
    before = dict(line.split("=", 1) for line in (tmp_path / "before-1.1.0.env").read_text().splitlines())
    after = dict(line.split("=", 1) for line in (tmp_path / "after-1.1.0.env").read_text().splitlines())
    for env in (before, after):
        assert env["DEWY_VERSION"] == "1.1.0" and env["DEWY_PREVIOUS_VERSION"] == "1.0.0", env
        assert env["DEWY_MODE"] == "server"
        assert env["DEWY_RELEASE_DIR"].startswith(str(master.workdir / "releases")), env
    assert os.path.isdir(after["DEWY_RELEASE_DIR"])


@pytest.mark.timeout(60)
def test_failing_before_hook_keeps_the_old_version(make_master, registry, tmp_path):
    """A before-deploy-hook that fails aborts the deploy: the old version keeps serving."""
    registry.publish("1.0.0")
    gate = tmp_path / "allow"
    gate.write_text("")
    master = make_master(**{"before-deploy-hook": "test -e %s" % gate}).start(wait_version="1.0.0")
    gate.unlink()
    registry.publish("1.1.0")
    wait_until(lambda: any(e["version"] == "1.1.0" and e["result"] == "failed"
                           for e in audit_entries(master.workdir)), 15, "the aborted deploy in the audit log")
    assert master.get() == (200, "1.0.0\n")
    assert master.status()["version"] == "1.0.0"
    gate.write_text("")  # the hook passes again: the deploy is retried, not refused
    master.wait_version("1.1.0")


@pytest.mark.timeout(60)
def test_process_titles_say_what_runs(make_master, registry):
    """`ps` shows `dewy-master [app v1.0.0 gen 1]` and `dewy-poller`."""
    import psutil
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    st = master.status()
    title = lambda pid: " ".join(psutil.Process(pid).cmdline()).strip()  # noqa: E731
    wait_until(lambda: title(master.pid) == "dewy-master [app v1.0.0 gen 1]", 5,
               "the master's title (is %r)" % title(master.pid))
    assert title(st["poller_pid"]).startswith("dewy-poller")


@pytest.mark.timeout(60)
def test_dewy_server_command_line_deploys(tmp_path, registry):
    """`dewy server --registry URL -p PORT ... -- CMD` (Dewy's form) deploys and stops like dewy-master."""
    from helpers import free_port, http_get
    registry.publish("1.0.0")
    port = free_port()
    workdir = tmp_path / "w"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dewy", "server", "--registry", registry.url, "-p", "127.0.0.1:%d" % port,
         "-i", "100ms", "--ready", "delay:200ms", "--workdir", str(workdir), "-l", "debug",
         "--", sys.executable, "current/app.py"],
        cwd=str(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=clean_environment())
    try:
        def answers(version):
            try:
                return http_get(("127.0.0.1", port), "/", 2) == (200, version + "\n")
            except OSError:
                return False
        wait_until(lambda: answers("1.0.0"), 20, "dewy server to serve 1.0.0")
        registry.publish("1.1.0")
        wait_until(lambda: answers("1.1.0"), 20, "dewy server to deploy 1.1.0")
        proc.send_signal(signal.SIGHUP)  # re-reads the same command line: a new generation
        wait_until(lambda: (read_status(workdir) or {}).get("generation") == 3, 20, "the HUP restart")
        assert answers("1.1.0")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def read_status(workdir):
    from dewy import statefiles as status
    return status.read(str(workdir))


@pytest.mark.timeout(90)
def test_assets_dir_is_restored_at_start_moved_on_reload_and_never_replaces_a_real_one(make_master, registry,
                                                                                          tmp_path):
    """`dir` is a symlink kept pointing at the newest release: a removed one comes back at the next start, a
    new `dir` (parents created) on SIGHUP; a real directory there is refused, as with `current`."""
    www = tmp_path / "www"
    registry.publish("1.0.0")
    master = make_master(ports=[], mode="assets", app=None, dir=str(www)).start()
    master.wait_for(lambda s: s.get("version") == "1.0.0", what="assets 1.0.0")
    line = wait_until(lambda: [l for l in master.log_text().splitlines() if "dewy.poller[" in l and "deployed 1.0.0 on" in l],
                      10, "the poller's deployed line", master.details)
    assert "generation" not in line[0] and "(previously nothing)" in line[0], line
    assert master.stop() == 0
    os.unlink(www)
    master.start()  # nothing new to deploy: only the start can bring `dir` back
    assert os.path.islink(www) and (www / "VERSION").read_text().strip() == "1.0.0"
    # No app, no generations: the master's log line says none (not "generation None").
    master_lines = [l for l in master.log_text().splitlines() if " dewy.master[" in l]
    assert any(l.split(": ", 1)[1].startswith("deployed version 1.0.0 version=") for l in master_lines), master_lines
    assert not [l for l in master_lines if "generation None" in l]

    deeper = tmp_path / "sub" / "deeper" / "html"
    master.write_ini(dir=str(deeper))
    master.signal(signal.SIGHUP)
    # The new link first, then the old one goes: wait for both (the old link left would point at an old release).
    wait_until(lambda: os.path.islink(deeper) and not os.path.lexists(www), 15,
               "dir moved to %s (and the old link %s gone)" % (deeper, www), master.details)
    assert (deeper / "VERSION").read_text().strip() == "1.0.0"

    real = tmp_path / "real"
    (real / "keep").mkdir(parents=True)
    master.write_ini(dir=str(real))
    master.signal(signal.SIGHUP)
    st = master.wait_for(lambda s: "reload failed" in (s.get("last_error") or ""), 15, "the reload to be refused")
    assert "%s is a directory, not a symlink" % real in st["last_error"], st["last_error"]
    assert (real / "keep").is_dir() and not os.path.islink(real)
    assert master.stop() == 0
    with pytest.raises(AssertionError, match="exited with 2"):
        master.start()
    assert "is a directory, not a symlink: dewy keeps `dir` as a symlink" in master.log_tail()
    assert (real / "keep").is_dir()


@pytest.mark.timeout(90)
def test_assets_mode_names_no_generation_in_logs_or_notifications_and_removing_dir_removes_its_link(
        make_master, registry, tmp_path):
    """Assets mode runs no app: the master's JSON log line and the deployed notification say nothing about a
    generation (no generation=null, no "generation -"). Removing `dir` from the ini (SIGHUP) removes the symlink
    dewy made there: it must not keep pointing at an old release."""
    import json

    from notifystubs import WebhookServer

    www = tmp_path / "www"
    with WebhookServer() as hook:
        registry.publish("1.0.0")
        master = make_master(ports=[], mode="assets", app=None, dir=str(www), notifier=hook.url(),
                             log_format="json").start()
        master.wait_for(lambda s: s.get("version") == "1.0.0", what="assets 1.0.0")
        hook.wait_for(lambda: "deployed" in hook.names())
        deployed = [e for e in hook.events if e["event"] == "deployed"][0]
        assert "generation" not in deployed["text"] and "(the switch took " in deployed["text"], deployed["text"]
        lines = wait_until(lambda: [json.loads(l) for l in master.log_text().splitlines()
                                    if l.startswith("{") and '"deployed version 1.0.0' in l], 10,
                           "the master's deployed line", master.details)
        assert "generation" not in lines[0], lines[0]

        assert os.path.islink(www) and (www / "VERSION").read_text().strip() == "1.0.0"
        master.write_ini(dir=None)
        master.signal(signal.SIGHUP)
        wait_until(lambda: not os.path.lexists(www), 15, "the link of the removed dir %s to go" % www, master.details)
        assert master.status()["version"] == "1.0.0" and not master.status()["last_error"]
        assert master.stop() == 0
