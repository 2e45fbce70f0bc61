"""The deploy trigger listener (dewy/poller/trigger.py) against hostile clients, over real sockets on
127.0.0.0/8: half-sent requests are cut at the deadline and cannot hold more than MAX_CONNECTIONS; failed
requests from one address neither lock out another nor share the good requests' bucket; a replayed GitHub
delivery is ignored; a client that goes away mid-request is one log line, not a traceback."""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import time
from types import SimpleNamespace

import pytest

from dewy.demo.demo import free_port
from dewy.poller import trigger as trigger_mod
from helpers import wait_until

TOKEN, SECRET = "trigger-token-0123", "webhook-secret-0123"


@pytest.fixture
def listener(tmp_path, monkeypatch):
    monkeypatch.setattr(trigger_mod, "REQUEST_DEADLINE", 1.0, raising=False)
    monkeypatch.setattr(trigger_mod, "MAX_CONNECTIONS", 8, raising=False)
    port = free_port()
    config = SimpleNamespace(trigger="127.0.0.1:%d" % port, trigger_token=TOKEN, trigger_secret=SECRET,
                             workdir=str(tmp_path))
    t = trigger_mod.Trigger()
    t.start(config)
    assert t.server is not None
    yield port
    t.stop()


def _post(port, headers: dict, body: bytes = b"", source: str = "127.0.0.1") -> int:
    return int(_exchange(port, headers, body, source).split(b" ", 2)[1])


def _exchange(port, headers: dict, body: bytes = b"", source: str = "127.0.0.1") -> bytes:
    """The whole answer (status line, headers, body) to one POST /deploy."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        head = "POST /deploy HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n" % len(body)
        head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
        sock.sendall(head.encode() + body)
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def _signed(body: bytes, delivery: str) -> dict:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
            "X-GitHub-Event": "ping", "X-GitHub-Delivery": delivery}


def test_half_sent_requests_are_cut_at_the_deadline_and_capped(listener):
    held = []
    try:
        for _ in range(40):  # far more than MAX_CONNECTIONS (8 here)
            sock = socket.create_connection(("127.0.0.1", listener), timeout=10)
            sock.sendall(b"POST /deploy HTTP/1.1\r\nContent-Le")  # and nothing more
            held.append(sock)
        started = time.monotonic()
        for sock in held:  # every one ends: closed at accept (over the cap) or cut at the deadline
            try:
                data = sock.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b""
        assert time.monotonic() - started < 8
    finally:
        for sock in held:
            sock.close()
    # The listener still answers.
    wait_until(lambda: _post(listener, {"Authorization": "Bearer wrong"}, source="127.0.0.9") == 401, 10,
               "the listener to answer again")


def test_failures_from_one_address_do_not_lock_out_another(listener):
    for _ in range(12):
        assert _post(listener, {"Authorization": "Bearer guess"}, source="127.0.0.2") in (401, 429)
    assert _post(listener, {"Authorization": "Bearer guess"}, source="127.0.0.2") == 429  # that address is slowed
    # The real webhook, from another address, is served (202: the poller is told to poll now).
    assert _post(listener, _signed(b"{}", "d-1"), b"{}", source="127.0.0.3") == 200
    assert _post(listener, {"Authorization": "Bearer " + TOKEN}, source="127.0.0.3") == 202


def test_a_replayed_github_delivery_is_ignored(listener, caplog):
    assert _post(listener, _signed(b"{}", "delivery-42"), b"{}") == 200
    answer = _exchange(listener, _signed(b"{}", "delivery-42"), b"{}")
    assert b"seen before" in answer, answer


def test_a_client_gone_mid_request_is_one_line_not_a_traceback(listener, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="dewy.poller"):
        with socket.create_connection(("127.0.0.1", listener), timeout=10) as sock:
            sock.sendall(b"POST /deploy HTTP/1.1\r\nContent-Length: 1000\r\nAuthorization: Bearer x\r\n\r\nabc")
        wait_until(lambda: any("went away mid-request" in r.getMessage() for r in caplog.records), 10,
                   "the one line")
    assert "Traceback" not in capsys.readouterr().err


def test_the_metrics_listener_cuts_half_sent_requests_too(monkeypatch):
    """The metrics listener (prometheus_client's server) gets the same bounds: held connections end, and it
    still answers a scrape."""
    from dewy.poller.metrics import Metrics

    monkeypatch.setattr(trigger_mod, "REQUEST_DEADLINE", 1.0, raising=False)
    monkeypatch.setattr(trigger_mod, "MAX_CONNECTIONS", 8, raising=False)
    port = free_port()
    metrics = Metrics()
    metrics.start("127.0.0.1:%d" % port)
    held = []
    try:
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHo")
            held.append(sock)
        started = time.monotonic()
        for sock in held:
            try:
                data = sock.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b""
        assert time.monotonic() - started < 8

        def scraped():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            return b"dewy_" in answer
        wait_until(scraped, 10, "a scrape to be answered")
    finally:
        for sock in held:
            sock.close()
        metrics.stop()
