"""Deploy triggers (`trigger = HOST:PORT`) against a running dewy-master whose own polls are an hour apart."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest

from dewy.poller.trigger import github_signature
from helpers import Master, free_port
from reliability.test_least_privilege import ReadableRegistry, base, needs_root, wrapper  # noqa: F401 - fixtures

TOKEN, SECRET = "t0ken-for-tests", "s3cret-for-tests"


def post(port: int, body: bytes = b"", **headers) -> tuple:
    """(status, headers, JSON body or None) of POST /deploy."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/deploy", body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict(resp.getheaders()), json.loads(data) if data else None
    finally:
        conn.close()


@pytest.mark.timeout(90)
def test_token_and_signed_webhook_make_it_poll_bad_ones_do_not(make_master, registry):
    registry.publish("1.0.0")
    port = free_port()
    master = make_master(interval="1h", trigger="127.0.0.1:%d" % port, trigger_token=TOKEN,
                         trigger_secret=SECRET).start(wait_version="1.0.0")
    master.wait_for(lambda s: "serving deploy triggers" in master.log_text(), 10, "the trigger listener")
    # The first poll reports twice (before its deploy of 1.0.0 and after): let both arrive.
    polls = master.wait_for(lambda s: s["polls"] >= 2, 10, "the first poll's two status messages")["polls"]
    registry.publish("1.1.0")
    body = json.dumps({"action": "published", "release": {"tag_name": "v1.1.0"}}).encode()

    status, _, answer = post(port, body, X_GitHub_Event="release", X_Hub_Signature_256=github_signature("wrong", body))
    assert (status, answer) == (401, {"error": "bad X-Hub-Signature-256"})
    status, _, _ = post(port, Authorization="Bearer nope")
    assert status == 401
    status, _, _ = post(port)
    assert status == 401
    # (a hint is sent before the answer: a 401 means none was)
    assert master.status()["polls"] == polls and master.status()["version"] == "1.0.0"
    log = master.log_text()
    assert "trigger: refused a request from 127.0.0.1: bad X-Hub-Signature-256" in log
    assert TOKEN not in log and SECRET not in log and "nope" not in log

    status, _, answer = post(port, body, X_GitHub_Event="release", X_Hub_Signature_256=github_signature(SECRET, body))
    assert status == 202 and answer["ok"] is True, answer
    master.wait_version("1.1.0", timeout=20)

    polls = master.status()["polls"]
    status, _, _ = post(port, Authorization="Bearer " + TOKEN)
    assert status == 202
    master.wait_for(lambda s: s["polls"] > polls, 10, "a poll after the bearer token")
    status, _, answer = post(port, b"{}", X_GitHub_Event="push", X_Hub_Signature_256=github_signature(SECRET, b"{}"))
    assert status == 204 and answer is None

    codes = [post(port, Authorization="Bearer nope")[0] for _ in range(12)]
    assert codes[-1] == 429, codes
    status, headers, _ = post(port, Authorization="Bearer " + TOKEN)
    assert status == 429 and int(headers["Retry-After"]) >= 1


@pytest.mark.timeout(60)
def test_trigger_listens_on_ipv6_loopback(make_master, registry):
    """`trigger = [::1]:P`: http.server is IPv4-only unless told; the trigger answers on IPv6."""
    import socket
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    registry.publish("1.0.0")
    port = free_port()
    master = make_master(interval="1h", trigger="[::1]:%d" % port, trigger_token=TOKEN).start(wait_version="1.0.0")
    master.wait_for(lambda s: "serving deploy triggers on http://[::1]" in master.log_text(), 10, "the trigger")
    conn = http.client.HTTPConnection("::1", port, timeout=10)
    try:
        conn.request("POST", "/deploy", headers={"Authorization": "Bearer " + TOKEN})
        assert conn.getresponse().status == 202
    finally:
        conn.close()


@pytest.mark.timeout(120)
@needs_root
def test_trigger_pokes_the_poller_directly_also_with_user_set(base, wrapper, request):
    """user = nobody: the trigger runs in the poller as nobody, which cannot reach the master's root-only control
    socket; it makes the poller poll directly (every POST /deploy got 503 before). A pause still answers 409."""
    registry = ReadableRegistry(base)
    port = free_port()
    master = Master(base, registry, user="nobody", interval="1h", trigger="127.0.0.1:%d" % port,
                    trigger_token=TOKEN)
    master.launcher = wrapper
    request.node.dewy_masters = [master]
    try:
        registry.publish("1.0.0")
        master.start(wait_version="1.0.0", timeout=60)
        master.wait_for(lambda s: "serving deploy triggers" in master.log_text(), 20, "the trigger listener")
        master.wait_for(lambda s: (s.get("poller") or {}).get("reason") == "deployed", 20, "the first deploy")
        registry.publish("1.1.0")
        status, _, answer = post(port, Authorization="Bearer " + TOKEN)
        assert status == 202 and answer["ok"] is True, (status, answer)
        master.wait_version("1.1.0", timeout=60)
        assert "trigger: polling now (bearer token from 127.0.0.1)" in master.log_text()
        out = subprocess.run([sys.executable, "-m", "dewy", "pause", "--workdir", str(master.workdir)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        status, _, answer = post(port, Authorization="Bearer " + TOKEN)
        assert status == 409 and "deploys are paused" in answer["error"], (status, answer)
        assert master.stop() == 0
    finally:
        master.close()
        if master.running():
            master.kill_tree()
