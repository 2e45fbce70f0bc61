"""dewy.master.activation: adopting systemd's sockets (LISTEN_FDS) and refusing a mismatch."""

import os
import socket

import pytest

from dewy.master import activation


@pytest.fixture
def passed():
    """passed(*addresses) -> fds of listening sockets, as systemd would hand them (closed at teardown)."""
    socks = []

    def make(*addresses):
        fds = []
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind(address)
            sock.listen(8)
            socks.append(sock)
            fds.append(os.dup(sock.fileno()))
        return fds
    yield make
    for sock in socks:
        sock.close()


def _port(fd):
    return socket.socket(fileno=os.dup(fd)).getsockname()[1]


def test_environment_is_ours_only_when_listen_pid_is_our_pid():
    env = {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "web:admin"}
    assert activation.take_environment(env) == ((3, 4), ("web", "admin"))
    assert env == {}  # taken out: the poller, the app and an in-place upgrade must not see them
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "1"}
    assert activation.take_environment(env) == ((), ())
    assert env == {}
    assert activation.take_environment({}) == ((), ())


def test_adopts_in_config_order_matching_by_address(passed, tmp_path):
    path = str(tmp_path / "app.sock")
    tcp, unix = passed((socket.AF_INET, ("127.0.0.1", 0)), (socket.AF_UNIX, path))
    specs = ["unix:" + path, "127.0.0.1:%d" % _port(tcp)]
    listeners = activation.adopt(specs, [tcp, unix], ("dewy", "dewy"))
    assert [l.spec for l in listeners] == specs
    assert [l.fileno() for l in listeners] == [unix, tcp]
    for listener in listeners:
        listener.close()
    assert os.path.exists(path)  # systemd's socket file is not ours to remove


def test_a_bare_port_matches_a_dual_stack_socket(passed):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    [fd] = passed((socket.AF_INET6, ("::", 0)))
    port = _port(fd)
    [listener] = activation.adopt([str(port)], [fd])
    assert listener.spec == str(port)
    listener.close()


def test_a_passed_socket_no_port_names_is_an_error(passed):
    a, b = passed((socket.AF_INET, ("127.0.0.1", 0)), (socket.AF_INET, ("127.0.0.1", 0)))
    with pytest.raises(activation.ActivationError) as exc:
        activation.adopt(["127.0.0.1:%d" % _port(a)], [a, b])
    assert "127.0.0.1:%d (fd %d) that no `port` entry names" % (_port(b), b) in str(exc.value)


def test_a_port_systemd_did_not_pass_is_an_error(passed):
    [a] = passed((socket.AF_INET, ("127.0.0.1", 0)))
    with pytest.raises(activation.ActivationError, match="port 127.0.0.1:1 is not among the sockets systemd passed"):
        activation.adopt(["127.0.0.1:%d" % _port(a), "127.0.0.1:1"], [a])


def test_a_name_that_contradicts_the_address_is_an_error(passed):
    a, b = passed((socket.AF_INET, ("127.0.0.1", 0)), (socket.AF_INET, ("127.0.0.1", 0)))
    spec_a, spec_b = "127.0.0.1:%d" % _port(a), "127.0.0.1:%d" % _port(b)
    names = (spec_b.replace(":", "_"), "x")
    with pytest.raises(activation.ActivationError, match="is named %s but listens on %s" % (names[0], spec_a)):
        activation.adopt([spec_a, spec_b], [a, b], names)


def test_a_socket_that_does_not_listen_is_an_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    fd = os.dup(sock.fileno())
    sock.close()
    with pytest.raises(activation.ActivationError, match="not a listening stream socket"):
        activation.adopt(["127.0.0.1:1"], [fd])
