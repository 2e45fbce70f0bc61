"""dewy.master.sdnotify: the notify socket apps report READY=1 to, and messages to systemd."""

import os
import socket
import subprocess
import sys

import pytest

from dewy.master.sdnotify import NotifyListener, SystemdNotifier, notify_socket_path

SEND = ("import os, socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); p = os.environ['NOTIFY_SOCKET'];"
        " s.sendto(b'READY=1\\nSTATUS=up', '\\0' + p[1:] if p.startswith('@') else p)")


def _receive(listener, want=1, tries=50):
    import select
    got = []
    while len(got) < want and tries:
        select.select([listener], [], [], 0.1)
        got += listener.receive()
        tries -= 1
    return got


@pytest.mark.parametrize("abstract", [False, True])
def test_listener_reports_the_sender_pid(tmp_path, abstract):
    path = "@dewy-test-%d" % os.getpid() if abstract else str(tmp_path / "notify.sock")
    listener = NotifyListener(path)
    try:
        child = subprocess.run([sys.executable, "-c", SEND], env=dict(os.environ, NOTIFY_SOCKET=path),
                               timeout=30, capture_output=True)
        assert child.returncode == 0, child.stderr
        # The kernel's credentials name the sender: an app cannot speak for another generation.
        [(pid, fields)] = _receive(listener)
        assert fields == {"READY": "1", "STATUS": "up"}
        assert pid and pid != os.getpid()
        if not abstract:
            assert oct(os.stat(path).st_mode & 0o777) == "0o600"  # umask 177 at bind: only our user
    finally:
        listener.close()
    assert abstract or not os.path.exists(path)


def test_long_state_dir_falls_back_to_an_abstract_socket(tmp_path):
    assert notify_socket_path(str(tmp_path)).endswith("notify.sock")
    assert notify_socket_path("/x" * 60).startswith("@dewy-notify-")


def test_systemd_notifier_sends_key_value_lines(tmp_path, monkeypatch):
    path = str(tmp_path / "systemd.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        notifier = SystemdNotifier.from_environment()
        # Taken out of the environment: the app must never inherit systemd's socket.
        assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
        assert notifier.watchdog_interval == 1.0
        assert notifier.send(READY=1, STATUS="app v1.2.3 gen 4")
        assert server.recv(4096) == b"READY=1\nSTATUS=app v1.2.3 gen 4"
    finally:
        server.close()


def test_watchdog_meant_for_another_pid_is_ignored(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent")
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert SystemdNotifier.from_environment().watchdog_interval is None


def test_without_systemd_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert SystemdNotifier.from_environment().send(READY=1) is False
