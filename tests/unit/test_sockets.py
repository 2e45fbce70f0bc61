"""dewy.master.sockets: binding every listen form, stale unix sockets, and the app's socket environment."""

import os
import socket

import pytest

from dewy.master import sockets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listeners():
    opened = []
    yield opened
    for listener in opened:
        listener.close()


def test_parse_address_forms():
    assert sockets.parse_address("8000") == (socket.AF_INET, ("0.0.0.0", 8000))
    assert sockets.parse_address("127.0.0.1:8001") == (socket.AF_INET, ("127.0.0.1", 8001))
    family, address = sockets.parse_address("[::1]:8002")
    assert family == socket.AF_INET6 and address == ("::1", 8002)
    assert sockets.parse_address("unix:/run/app.sock") == (socket.AF_UNIX, "/run/app.sock")


def test_binds_tcp_and_unix_and_they_accept(tmp_path, listeners):
    port = _free_port()
    path = str(tmp_path / "app.sock")
    listeners += sockets.bind_all(["127.0.0.1:%d" % port, "unix:" + path], backlog=16)
    assert [l.spec for l in listeners] == ["127.0.0.1:%d" % port, "unix:" + path]
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
    # The master's sockets never leak into children by accident: only fork_exec hands them over.
    assert not any(os.get_inheritable(l.fileno()) for l in listeners)


def test_ipv6_loopback(listeners):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        listeners.append(sockets.bind("[::1]:%d" % _free_port(), 16))
    except sockets.ListenError as exc:
        pytest.skip("IPv6 loopback unavailable: %s" % exc)
    assert listeners[0].sock.family == socket.AF_INET6


def test_taken_port_is_a_clear_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(sockets.ListenError, match="cannot listen on 127.0.0.1:%d: address already in use" % port):
            sockets.bind("127.0.0.1:%d" % port, 16)


def test_stale_unix_socket_file_is_replaced(tmp_path, listeners):
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)  # a socket file nobody listens on: what a crashed process leaves
    dead.close()
    listeners.append(sockets.bind("unix:" + path, 16))
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)


def test_live_unix_socket_is_not_stolen(tmp_path):
    path = str(tmp_path / "live.sock")
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(path)
        live.listen(1)
        with pytest.raises(sockets.ListenError, match="another process is listening on it"):
            sockets.bind("unix:" + path, 16)
        assert os.path.exists(path)


def test_regular_file_in_the_way_is_not_deleted(tmp_path):
    path = tmp_path / "data"
    path.write_text("precious")
    with pytest.raises(sockets.ListenError, match="exists and is not a socket"):
        sockets.bind("unix:%s" % path, 16)
    assert path.read_text() == "precious"


def test_bind_all_closes_what_it_opened_when_one_fails(tmp_path):
    first = _free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        with pytest.raises(sockets.ListenError):
            sockets.bind_all(["127.0.0.1:%d" % first, "127.0.0.1:%d" % taken], 16)
    # The first port was released again: it can be bound right away.
    sockets.bind("127.0.0.1:%d" % first, 16).close()


def test_bind_all_reuses_open_listeners(listeners):
    spec = "127.0.0.1:%d" % _free_port()
    listeners += sockets.bind_all([spec], 16)
    again = sockets.bind_all([spec], 16, reuse={spec: listeners[0]})
    assert again[0] is listeners[0]


def test_app_environment_speaks_both_protocols(tmp_path, listeners):
    port = _free_port()
    path = str(tmp_path / "a.sock")
    listeners += sockets.bind_all(["127.0.0.1:%d" % port, "unix:" + path], 16)
    env = sockets.app_environment(listeners)
    assert env["SERVER_STARTER_PORT"] == "127.0.0.1:%d=3;%s=4" % (port, path)
    assert env["LISTEN_FDS"] == "2"
    names = env["LISTEN_FDNAMES"].split(":")
    assert len(names) == 2 and all(":" not in n for n in names)
