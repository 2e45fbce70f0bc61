"""The http probe finds who accepted its connection by one sock_diag lookup, not by reading /proc/net/tcp.

Found by bench/handover.py: under load /proc/net/tcp lists tens of thousands of TIME_WAIT connections, and
reading it on every probe tick (10 ms) kept `ready = http:` handovers 1-3 s above the app's start-up.
"""

import os
import socket

import pytest

from dewy.master import httpprobe


def connected_pair(family, host):
    """(listener, client) with the client's connection still in the listen queue (not accepted)."""
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(8)
    client = socket.socket(family, socket.SOCK_STREAM)
    client.connect(listener.getsockname()[:2])
    return listener, client


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_lookup_names_the_accepted_socket_and_nothing_before_accept(family, host):
    try:
        listener, client = connected_pair(family, host)
    except OSError as exc:
        pytest.skip("no %s loopback here: %s" % (host, exc))
    with listener, client:
        # Queued, not accepted: the kernel's socket has no inode yet (and the listener is not mistaken for it).
        assert httpprobe._diag_inode(family, client.getpeername(), client.getsockname()) is None
        server, _ = listener.accept()
        with server:
            inode = str(os.fstat(server.fileno()).st_ino)
            assert httpprobe._diag_inode(family, client.getpeername(), client.getsockname()) == inode
            # The /proc/net/tcp fallback agrees.
            assert httpprobe._socket_inode(listener.getsockname()[1], client.getsockname()[1]) == inode


def test_lookup_of_a_connection_that_does_not_exist_is_none():
    listener, client = connected_pair(socket.AF_INET, "127.0.0.1")
    with listener, client:
        # Same listener, a client port nobody connected from: the lookup must not answer with the listener.
        assert httpprobe._diag_inode(socket.AF_INET, listener.getsockname(), ("127.0.0.1", 1)) is None


def test_accepted_by_tells_our_group_from_another():
    listener, client = connected_pair(socket.AF_INET, "127.0.0.1")
    with listener, client:
        port, client_port = listener.getsockname()[1], client.getsockname()[1]
        assert httpprobe.accepted_by(port, client_port, os.getpgrp(), client) is None  # still queued
        server, _ = listener.accept()
        with server:
            assert httpprobe.accepted_by(port, client_port, os.getpgrp(), client) is True
            # A group that holds no such fd (no process has this pgid).
            assert httpprobe.accepted_by(port, client_port, 2 ** 22 + 7, client) is False
            # Without the socket (the old call) the /proc scan gives the same answer.
            assert httpprobe.accepted_by(port, client_port, os.getpgrp()) is True
