"""systemd socket activation: dewy-master adopts the sockets it is started with (LISTEN_FDS/LISTEN_PID).

The test starts the master the way systemd does: it binds the socket itself, and tests/sd_listen.py
moves it to fd 3, sets LISTEN_FDS and LISTEN_PID (its own pid, which the exec keeps) and execs the master.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from helpers import Load, clean_environment, free_port

SD_LISTEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sd_listen.py")


@pytest.fixture
def systemd_socket():
    """A listening socket on a free 127.0.0.1 port, owned by the test as systemd would own it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    yield sock
    sock.close()


def activated(master, sock, names: str = ""):
    """Make master start through sd_listen.py with sock as its only passed socket."""
    master.launcher = [sys.executable, SD_LISTEN, str(sock.fileno())] + ([names] if names else []) + ["--"]
    master.pass_fds = (sock.fileno(),)
    return master


@pytest.mark.timeout(120)
def test_a_master_restart_on_inherited_sockets_loses_no_request(make_master, registry, systemd_socket):
    """Stop master A, start master B on the same inherited socket, under load: 0 failed requests."""
    spec = "127.0.0.1:%d" % systemd_socket.getsockname()[1]
    registry.publish("1.0.0")
    master = activated(make_master(ports=[spec]), systemd_socket, "dewy").start(wait_version="1.0.0")
    assert "listening on 1 socket(s) passed by systemd (socket activation): %s" % spec in master.log_text()
    with Load(master.port, threads=4) as load, Load(master.port, threads=1, path="/slow?ms=100") as slow:
        # Generous waits: only failed requests count here, and a loaded test box may be slow to serve.
        assert load.wait_requests(50, timeout=30), load.summary()
        for _ in range(2):
            first_pid = master.pid
            assert master.stop() == 0
            master.start(wait_version="1.0.0")  # a new master process: what `systemctl restart dewy` does
            assert master.pid != first_pid
            assert load.wait_requests(50, timeout=30), load.summary()
    assert load.failed == 0 and slow.failed == 0
    assert load.ok > 100 and slow.ok > 0, (load.summary(), slow.summary())


@pytest.mark.timeout(60)
def test_a_passed_socket_that_port_does_not_name_is_a_clear_start_error(make_master, registry, systemd_socket,
                                                                         tmp_path):
    """systemd passes 127.0.0.1:P but the ini says another port: exit 2 naming both, nothing bound."""
    other = free_port()
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = %s\nport = 127.0.0.1:%d\napp = %s current/app.py\nworkdir = %s\n"
                   % (registry.url, other, sys.executable, tmp_path / "w"))
    fd = systemd_socket.fileno()
    done = subprocess.run([sys.executable, SD_LISTEN, str(fd), "--", sys.executable, "-m", "dewy.master", "-c",
                           str(ini)], pass_fds=(fd,), capture_output=True, text=True, timeout=30,
                          env=clean_environment())
    assert done.returncode == 2, done
    assert "systemd passed a socket on 127.0.0.1:%d" % systemd_socket.getsockname()[1] in done.stderr, done.stderr
    assert "port = 127.0.0.1:%d" % other in done.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.timeout(120)
def test_a_unix_socket_from_systemd_outlives_the_master_and_its_upgrade(make_master, registry, tmp_path):
    """A passed unix socket is systemd's: neither a USR2 nor a stop of the master removes its file,
    so the next master (and the clients) still find it."""
    path = str(tmp_path / "app.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(128)
    try:
        registry.publish("1.0.0")
        master = activated(make_master(ports=["unix:" + path]), sock).start(wait_version="1.0.0")
        old_poller = master.status()["poller_pid"]
        master.signal(signal.SIGUSR2)
        master.wait_for(lambda s: s.get("poller_pid") not in (None, old_poller) and s.get("state") == "running",
                        30, "the upgraded master's new poller")
        assert master.stop() == 0
        assert os.path.exists(path), "the master removed systemd's socket file"
        master.start(wait_version="1.0.0")
        assert master.get() == (200, "1.0.0\n")
        assert master.stop() == 0
        assert os.path.exists(path)
    finally:
        sock.close()
