"""What the systemd unit relies on from dewy-master: a refused reload is no reload, stopping extends the timeout."""

from __future__ import annotations

import signal
import socket

import pytest

from helpers import wait_until


class NotifySocket:
    """The NOTIFY_SOCKET systemd gives dewy-master: every datagram, as {KEY: value}."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages: list[dict] = []

    def collect(self) -> list:
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except BlockingIOError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))

    def wait(self, key: str, value: str | None = None, start: int = 0, timeout: float = 20) -> dict:
        """The first message from index start on with key (= value)."""
        def found():
            return next((m for m in self.collect()[start:] if key in m and value in (None, m[key])), None)
        return wait_until(found, timeout, "sd_notify %s=%s" % (key, value), lambda: "got %r" % self.messages)


@pytest.fixture
def systemd(tmp_path):
    sd = NotifySocket(str(tmp_path / "systemd-notify.sock"))
    yield sd
    sd.sock.close()


@pytest.mark.timeout(60)
def test_a_refused_reload_sends_no_ready_and_says_why(make_master, registry, systemd):
    """HUP with an ini gone bad: no RELOADING=1/READY=1 (systemd would call it reloaded), a STATUS= saying why."""
    registry.publish("1.0.0")
    master = make_master(env={"NOTIFY_SOCKET": systemd.path}).start(wait_version="1.0.0")
    systemd.wait("STATUS", "app v1.0.0 gen 1")
    mark = len(systemd.collect())
    master.write_ini(interval="often")
    master.signal(signal.SIGHUP)
    refused = systemd.wait("STATUS", start=mark)
    assert refused["STATUS"].startswith("reload failed, keeping the running configuration"), refused
    assert "interval" in refused["STATUS"]
    master.wait_for(lambda s: "reload failed" in (s.get("last_error") or ""), what="the refused reload in status")
    later = systemd.collect()[mark:]
    assert not [m for m in later if "READY" in m or "RELOADING" in m], later
    # A good file again: a real reload, RELOADING=1 then READY=1.
    master.write_ini(interval="1s")
    mark = len(systemd.collect())
    master.signal(signal.SIGHUP)
    systemd.wait("RELOADING", "1", start=mark)
    systemd.wait("READY", "1", start=mark)
    assert master.stop() == 0


@pytest.mark.timeout(60)
def test_stopping_extends_systemds_stop_timeout_past_graceful_timeout(make_master, registry, systemd):
    """STOPPING=1 comes with EXTEND_TIMEOUT_USEC beyond graceful-timeout, so TimeoutStopSec cannot cut it short."""
    master = make_master(env={"NOTIFY_SOCKET": systemd.path}, graceful_timeout="90s").start()
    systemd.wait("READY", "1")
    assert master.stop(signal.SIGTERM) == 0
    stopping = systemd.wait("STOPPING", "1", timeout=5)
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) >= 90_000_000, stopping
