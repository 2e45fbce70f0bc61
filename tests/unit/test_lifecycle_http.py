"""`ready = http:` and `health` in the lifecycle, in-process with the fake clock (see test_lifecycle.py),
plus the probe's owner check against a real socket and real /proc."""

from __future__ import annotations

import os
import socket
import time

from dewy.protocol import Deploy
from dewy.master import httpprobe
from dewy.master.generation import RETIRING, SERVING
from dewy.master.health import OTHER_RETRY, PROBE_RETRY

from .test_lifecycle import FakeHost, current, fire_next, release, serving_version, world  # noqa: F401 — fixture


class ProbingHost(FakeHost):
    """FakeHost that records the GETs the lifecycle asks for; the test answers them."""

    def __init__(self):
        super().__init__()
        self.probes = []  # (gen, path, timeout)

    def probe(self, gen, path, timeout):
        self.probes.append((gen, path, timeout))


def make(world, **settings):
    lc, _, clock = world(**settings)
    host = ProbingHost()
    lc.host = host
    return lc, host, clock


def test_http_ready_waits_for_a_2xx_then_switches(world, tmp_path):
    lc, host, clock = make(world, ready="http:/healthz:5s", port="8000")
    v1 = release(tmp_path, "1.0.0")
    lc.deploy(Deploy(version="1.0.0", release_dir=v1))
    gen = lc.starting
    fire_next(lc, clock)
    assert host.probes[-1][:2] == (gen, "/healthz") and gen.probing
    assert lc.next_deadline() == gen.ready_deadline, "no second GET while one is out"
    lc.health.probe_done(gen, httpprobe.FAILED, "GET /healthz answered 503 Service Unavailable")
    assert lc.starting is gen and gen.probe_at == clock.t + PROBE_RETRY
    fire_next(lc, clock)
    assert len(host.probes) == 2
    lc.health.probe_done(gen, httpprobe.OTHER, "accepted by another generation")
    assert lc.starting is gen and gen.probe_at == clock.t + OTHER_RETRY, "another generation's answer proves nothing"
    fire_next(lc, clock)
    lc.health.probe_done(gen, httpprobe.OK, "GET /healthz answered 200 OK")
    assert lc.serving is gen and gen.state == SERVING
    assert host.sent("deployed")[-1]["ok"] is True


def test_http_ready_that_never_answers_2xx_is_refused(world, tmp_path):
    lc, host, clock = make(world, ready="http:/healthz:2s", port="8000")
    v1 = release(tmp_path, "1.0.0")
    lc.deploy(Deploy(version="1.0.0", release_dir=v1))
    fire_next(lc, clock)
    lc.health.probe_done(lc.starting, httpprobe.OK, "GET /healthz answered 200 OK")
    old = lc.serving
    v2 = release(tmp_path, "1.1.0")
    lc.deploy(Deploy(version="1.1.0", release_dir=v2))
    bad = lc.starting
    while lc.starting is bad:
        fire_next(lc, clock)
        if bad.probing:
            lc.health.probe_done(bad, httpprobe.FAILED, "GET /healthz answered 503 Service Unavailable")
    answer = host.sent("deployed")[-1]
    assert answer["ok"] is False
    assert "GET /healthz did not answer 2xx within 2s (last: GET /healthz answered 503" in answer["error"]
    assert current(lc) == v1 and lc.serving is old and bad.state == RETIRING


def test_health_failures_in_a_row_restart_gracefully(world, tmp_path):
    lc, host, clock = make(world, health="http:/healthz", port="8000", **{"health-interval": "10s",
                                                                         "health-failures": "3"})
    serving_version(lc, host, clock, tmp_path)
    clock.advance(120)  # well past probation: a restart, not a crash count
    gen = lc.serving
    lc.fire(clock.t)
    assert host.probes[-1][:3] == (gen, "/healthz", 10.0)
    lc.health.probe_done(gen, httpprobe.FAILED, "GET /healthz answered 503")
    fire_next(lc, clock)
    lc.health.probe_done(gen, httpprobe.OK, "GET /healthz answered 200 OK")
    assert gen.health_failures == 0, "a success resets the count"
    for n in range(1, 4):
        fire_next(lc, clock)
        lc.health.probe_done(gen, httpprobe.FAILED, "no answer within 10s")
        assert (lc.starting is None) == (n < 3)
    new = lc.starting
    assert new.reason == "health" and lc.serving is gen, "a new generation first; the old one serves meanwhile"
    assert "failed 3 health checks in a row" in lc.problem
    fire_next(lc, clock)  # the new one is ready (delay)
    assert lc.serving is new and gen.state == RETIRING and lc.problem is None


def test_health_failures_during_probation_count_as_crashes(world, tmp_path):
    lc, host, clock = make(world, health="http:/healthz", port="8000", **{"health-interval": "1s",
                                                                         "health-failures": "1"})
    v1 = serving_version(lc, host, clock, tmp_path)
    serving_version(lc, host, clock, tmp_path, "1.1.0")
    for death in range(1, 4):
        fire_next(lc, clock)
        while lc.serving is None or not lc.serving.probing:
            fire_next(lc, clock)
        lc.health.probe_done(lc.serving, httpprobe.FAILED, "GET /healthz answered 500")
        if death < 3:
            assert lc.probation.deaths == death and lc.starting.reason == "health"
    assert host.sent("rollback")[0]["version"] == "1.1.0"
    assert current(lc) == v1 and lc.starting.reason == "rollback"


# ----------------------------------------------------------------------- the probe, for real
def run_probe(probe, timeout=5.0):
    """Drive a Probe the way the arbiter does, with a plain selector loop."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(probe, selectors.EVENT_WRITE)
    until = time.monotonic() + timeout
    while not probe.finished and time.monotonic() < until:
        wanted = selectors.EVENT_WRITE if probe.events() == "write" else selectors.EVENT_READ
        sel.modify(probe, wanted)
        now = time.monotonic()
        for _ in sel.select(max(0.0, probe.deadline() - now)):
            probe.on_event(time.monotonic())
        probe.tick(time.monotonic())
    sel.close()
    probe.close()
    return probe.outcome, probe.detail


def test_probe_counts_only_an_answer_from_the_generations_group():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    pid = os.fork()
    if pid == 0:  # the "generation": its own group, answers 503 once the request is complete
        try:
            os.setpgid(0, 0)
            conn, _ = listener.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(1024)
            conn.sendall(b"HTTP/1.0 503 Service Unavailable\r\n\r\n")
            conn.close()
        finally:
            os._exit(0)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child did it first
    try:
        ours = httpprobe.Probe(socket.AF_INET, listener.getsockname(), "/healthz", pid, 5.0, time.monotonic())
        assert run_probe(ours) == (httpprobe.FAILED, "GET /healthz answered 503 Service Unavailable")
        # The same GET, accepted by a process outside the group (this test) answering 200, is not an answer.
        other = httpprobe.Probe(socket.AF_INET, listener.getsockname(), "/healthz", pid, 5.0, time.monotonic())
        listener.settimeout(5)
        conn, _ = listener.accept()
        conn.settimeout(5)
        for _ in range(500):
            if other.events() == "write":
                other.on_event(time.monotonic())
            other.tick(time.monotonic())
            if other.state == "reading":
                break
            time.sleep(0.01)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(1024)
        assert data.startswith(b"GET /healthz HTTP/1.0\r\n")
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        conn.close()
        assert run_probe(other) == (httpprobe.OTHER, "GET /healthz answered 200 by another generation")
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        nobody = httpprobe.Probe(socket.AF_INET, closed.getsockname(), "/", pid, 1.0, time.monotonic())
        outcome, detail = run_probe(nobody)
        assert outcome == httpprobe.FAILED and "cannot connect" in detail
        closed.close()
    finally:
        os.waitpid(pid, 0)
        listener.close()


# ----------------------------------------------------------------------- settings
def test_http_ready_and_health_settings():
    from dewy.config import ConfigError, Ready, from_options, parse_ready

    assert parse_ready("http:/healthz:30s") == Ready("http", 30.0, "/healthz")
    assert parse_ready("http:/healthz") == Ready("http", 60.0, "/healthz")
    assert parse_ready("HTTP:/Up:1m") == Ready("http", 60.0, "/Up"), "the path keeps its case"
    base = {"registry": "file:///r", "app": ["app"], "port": ["127.0.0.1:8000"]}
    cfg = from_options(dict(base, health="http:/live", **{"health-interval": "2s", "health-failures": "5"}))
    assert (cfg.health, cfg.health_interval, cfg.health_failures) == ("/live", 2.0, 5)
    assert from_options(base).health == "" and from_options(base).health_failures == 3
    for key, value, message in [
            ("ready", "http:healthz", 'expected http:/PATH, e.g. http:/healthz'),
            ("ready", "http:/x:0s", "the http readiness timeout must be at least 100ms"),
            ("health", "/healthz", "expected http:/PATH"),
            ("health-failures", "0", "")]:
        try:
            from_options(dict(base, **{key: value}))
        except ConfigError as exc:
            assert message in str(exc) and "--%s" % key in str(exc), exc
        else:
            raise AssertionError("%s = %s was accepted" % (key, value))
    for key in ("ready", "health"):
        try:
            from_options(dict(base, port=["unix:/tmp/x.sock"], **{key: "http:/healthz"}))
        except ConfigError as exc:
            assert "needs server mode and a TCP port" in str(exc)
        else:
            raise AssertionError("%s = http: without a TCP port was accepted" % key)


# ----------------------------------------------------------------------- dewy rollback
def test_operator_rollback_switches_like_a_deploy_and_tells_the_poller(world, tmp_path):
    lc, host, clock = world()
    v1 = serving_version(lc, host, clock, tmp_path)
    v2 = serving_version(lc, host, clock, tmp_path, "1.1.0")
    old = lc.serving
    assert lc.rollbacks.switch_back("1.1.0", v2) == "version 1.1.0 already serves (%s)" % v2
    assert lc.rollbacks.switch_back("1.0.0", v1) is None
    gen = lc.starting
    assert gen.reason == "rollback" and current(lc) == v1 and lc.deploying["previous_dir"] == v2
    assert lc.rollbacks.switch_back("1.0.0", v1).startswith("generation %d is starting [rollback]" % gen.number)
    assert host.sent("rollback") == [], "nothing told before the old release serves again"
    fire_next(lc, clock)  # ready
    assert lc.serving is gen and old.state == RETIRING and lc.deploying is None
    # On probation like a deploy: should 1.0.0 now crash-loop, it goes back to 1.1.0.
    assert (lc.probation.version, lc.probation.previous_version, lc.probation.previous_dir) == ("1.0.0", "1.1.0", v2)
    assert host.sent("rollback") == [{"version": "1.1.0", "to_version": "1.0.0", "error": (
        "rolled back from 1.1.0 to 1.0.0 by the operator (dewy rollback)"), "operator": True}]
    assert lc.last_deploy["rolled_back_from"] == "1.1.0" and lc.last_deploy["ok"] is True


def test_operator_rollback_that_does_not_start_keeps_what_serves(world, tmp_path):
    from .test_lifecycle import die
    lc, host, clock = world()
    v1 = serving_version(lc, host, clock, tmp_path)
    v2 = serving_version(lc, host, clock, tmp_path, "1.1.0")
    assert lc.rollbacks.switch_back("1.0.0", v1) is None
    die(lc, host, lc.starting, 3)
    assert current(lc) == v2 and lc.serving.version == "1.1.0" and host.sent("rollback") == []
    assert lc.last_deploy["ok"] is False and "rollback to 1.0.0 failed" in lc.last_deploy["error"]


def test_trigger_settings_and_signature_checks():
    from dewy.config import ConfigError, from_options
    from dewy.poller.trigger import Bucket, check, github_signature

    base = {"registry": "file:///r", "app": ["app"]}
    cfg = from_options(dict(base, trigger="127.0.0.1:9465", **{"trigger-token": "tok"}))
    assert (cfg.trigger, cfg.trigger_token, cfg.trigger_secret) == ("127.0.0.1:9465", "tok", "")
    try:
        from_options(dict(base, trigger="127.0.0.1:9465"))
    except ConfigError as exc:
        assert "needs trigger-token or trigger-secret" in str(exc)
    else:
        raise AssertionError("an open trigger was accepted")
    body = b'{"action":"published"}'
    # The value GitHub documents for this secret and body (HMAC-SHA256, hex, "sha256=" prefix).
    assert github_signature("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
    signed = {"X-Hub-Signature-256": github_signature("s", body), "X-GitHub-Event": "release"}
    assert check(signed, body, "", "s") == (202, "GitHub release event")
    assert check(signed, body + b" ", "", "s")[0] == 401, "the signature covers the body"
    assert check(signed, body, "tok", "")[0] == 401, "no secret configured: no webhook"
    assert check({"Authorization": "Bearer tok"}, b"", "tok", "") == (202, "bearer token")
    assert check({"Authorization": "Bearer tok"}, b"", "", "s")[0] == 401, "no token configured: no bearer"
    t = [0.0]
    bucket = Bucket(burst=2, every=5.0, clock=lambda: t[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False] and bucket.retry_after() == 5
    t[0] += 5.0
    assert bucket.take() and not bucket.take()


def test_probe_attributes_an_app_that_answers_after_its_first_read():
    """Issue 16 item 8: an app that answers right after its first recv, before the blank line ending the request,
    was refused at random ("did not answer 2xx within 5s (last: no answer)"): the probe held the blank line back
    until it had found the accepting process, and the early answer was thrown away as "closed before the
    accepting process was found". Now nothing is sent before the accepting process is known: 20 of 20 are OK."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    rounds = 20
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            for _ in range(rounds):
                conn, _ = listener.accept()
                conn.recv(1024)  # one read, whatever it holds: then the answer
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
                conn.close()
        finally:
            os._exit(0)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    try:
        results = [run_probe(httpprobe.Probe(socket.AF_INET, listener.getsockname(), "/healthz", pid, 5.0,
                                             time.monotonic())) for _ in range(rounds)]
        assert results == [(httpprobe.OK, "GET /healthz answered 200 OK")] * rounds, results
    finally:
        os.waitpid(pid, 0)
        listener.close()


def test_an_early_answer_whose_socket_is_gone_is_not_counted_and_says_it_could_not_be_attributed():
    """A listener that accepts only once data arrives (TCP_DEFER_ACCEPT) gets the request head after HEAD_AFTER;
    an app that answers that and closes before the probe looks cannot be attributed: `other`, saying so."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
    listener.listen(8)
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            conn, _ = listener.accept()
            conn.recv(1024)
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
            conn.close()
        finally:
            os._exit(0)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    try:
        start = time.monotonic()
        probe = httpprobe.Probe(socket.AF_INET, listener.getsockname(), "/healthz", pid, 5.0, start)
        while probe.state == "connecting":
            probe.on_event(time.monotonic())
        probe.tick(start + httpprobe.HEAD_AFTER)  # nobody accepted: the head goes out, the app answers, closes
        os.waitpid(pid, 0)
        pid = None
        assert probe.state == "accepting" and not probe.finished
        probe.on_event(time.monotonic())  # readable: the answer
        assert probe.outcome == httpprobe.OTHER and httpprobe.UNATTRIBUTED in probe.detail, probe.detail
        probe.close()
    finally:
        if pid:
            os.waitpid(pid, 0)
        listener.close()


def test_a_refusal_for_answers_that_could_not_be_attributed_says_so(world, tmp_path):
    lc, host, clock = make(world, ready="http:/healthz:2s", port="8000")
    lc.deploy(Deploy(version="1.0.0", release_dir=release(tmp_path, "1.0.0")))
    gen = lc.starting
    while lc.starting is gen:
        fire_next(lc, clock)
        if gen.probing:
            lc.health.probe_done(gen, httpprobe.OTHER, "GET /healthz was answered before dewy could tell which process "
                                                "accepted it (the answer could not be attributed: ...)")
    error = host.sent("deployed")[-1]["error"]
    assert "did not answer 2xx within 2s (last: GET /healthz was answered before dewy could tell" in error, error
    assert "could not be attributed" in error


def test_a_refusal_names_the_releases_own_last_answer_over_another_generations(world, tmp_path):
    """Both generations accept on the same sockets during the ready wait: a probe the old one took says nothing
    about the new release, so the refusal quotes what the new release itself last answered."""
    lc, host, clock = make(world, ready="http:/healthz:2s", port="8000")
    lc.deploy(Deploy(version="1.0.0", release_dir=release(tmp_path, "1.0.0")))
    gen, own = lc.starting, True
    while lc.starting is gen:
        fire_next(lc, clock)
        if gen.probing:  # the release answers once, then every probe lands on the old generation
            if own:
                lc.health.probe_done(gen, httpprobe.FAILED, "GET /healthz answered 503")
            else:
                lc.health.probe_done(gen, httpprobe.OTHER, "GET /healthz answered 200 by another generation")
            own = False
    error = host.sent("deployed")[-1]["error"]
    assert "(last: GET /healthz answered 503)" in error, error
