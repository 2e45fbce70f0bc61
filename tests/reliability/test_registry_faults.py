"""The "Registry" rows of the fault matrix (issue 10), against each real backend where the row applies.

Backends: file:// (a directory), ghr:// (tests/ghstub.py, GitHub's endpoints and headers), s3:// (moto's
server), gs:// (fake-gcs-server), grpc:// (tests/grpc_registry_server.py, a grpcio server). The session
servers are shared; a fault is a thread in this process: a canned HTTP answer, a TCP link that can be
switched to accept and never answer, a port nobody listens on, a name under `.invalid`.

Most rows drive the poller's real objects in-process: a `dewy.poller.worker.Poller` built from a real
Config, with the test holding the master's end of the pipe. That is the code that backs off and logs an
outage, so "one log line per incident, not one per poll" and the backoff are asserted on it. The rows
marked e2e run a real dewy-master (5xx, timeout, hostile names) and check the app keeps serving.
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from dewy import config as config_mod
from dewy import github, versions
from dewy import registry as registry_pkg
from dewy.demo.demo import free_port
from dewy.protocol import Channel
from dewy.registry import RegistryError
from dewy.registry.base import NotYetPublished, Registry as BaseRegistry, plain_name
from ghstub import GitHubStub, forget_github_clients
from grpc_registry_server import _grpc_plain_server, grpc_plain  # noqa: F401 — fixtures
from helpers import Master, norm, wait_audit, wait_until
from integration.test_ghr_e2e import github_master  # noqa: F401 — fixture: (stand-in, adapter, master factory)
from servers import AWS_TEST_ENV, CuttingProxy, GCSStore, S3Store

TOKEN = "ghp_faults_stub_token_0042"
OWNER, REPO = "acme", "web"
ARTIFACT = "app.tar.gz"
INVALID_HOST = "dewy-fault.invalid"   # RFC 6761: never resolves
NETWORK = ["ghr", "s3", "gs", "grpc"]
ALL = ["file"] + NETWORK
GH_VARS = ("GH_TOKEN", "GITHUB_TOKEN", "GITHUB_API_URL", "GITHUB_ENDPOINT", "GITHUB_ARTIFACT", "GITHUB_APP_ID",
           "GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_PATH")
# Hostile strings a registry might publish as tags or file names. Each `touch` would leave a file named
# pwned-* in the shell's working directory (the workdir for hooks) if anything ever interpreted it.
HOSTILE = ["v1.0.0;touch pwned-semicolon", "$(touch pwned-subst)", "`touch pwned-backtick`", "../../x",
           "v9.0.0\nv9.9.9", "v9.1.0\r\n2026-11-26 ERROR forged log line", "..", "v9.2.0 && touch pwned-and"]


# ------------------------------------------------------------------------------------------- fault servers
class Canned:
    """An HTTP server answering every request with one canned answer; `truncate`: promise more than it sends."""

    def __init__(self, status=200, body=b"", content_type="application/json", headers=None, truncate=False):
        canned = self
        self.status, self.body, self.content_type = status, body, content_type
        self.headers, self.truncate = dict(headers or {}), truncate
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self):
                canned.requests.append(self.command + " " + self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(canned.status)
                self.send_header("Content-Type", canned.content_type)
                for key, value in canned.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(canned.body) * (10 if canned.truncate else 1) or 0))
                if canned.truncate:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(canned.body)
                if canned.truncate:
                    self.wfile.flush()
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Link:
    """A TCP link on 127.0.0.1 to an upstream port, switchable between passing bytes and hanging.

    `hang()`: existing connections are cut, new ones are accepted and never answered (a registry that
    took the connection and went silent); `restore()`: pass through again. Every socket is closed at close().
    """

    def __init__(self, upstream_port: int | None = None):
        self.upstream_port = upstream_port
        self.hanging = False
        self.accepted = 0
        self.lock = threading.Lock()
        self.sockets = []
        self.closed = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def target(self) -> str:
        return "127.0.0.1:%d" % self.port

    def hang(self) -> None:
        """From now on accept and never answer; cut what is connected (clients must reconnect)."""
        self._switch(hanging=True)

    def restore(self) -> None:
        """Pass bytes again; the held connections are cut."""
        self._switch(hanging=False)

    def _switch(self, hanging: bool) -> None:
        with self.lock:
            self.hanging = hanging
            cut, self.sockets = self.sockets, []
        for sock in cut:
            _close(sock)

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.sockets.append(client)
                if self.hanging or self.upstream_port is None:
                    continue  # held open, never read, never answered
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self.lock:
                self.sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self.threads.append(thread)
                thread.start()

    @staticmethod
    def _pump(src, dst) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            except OSError:
                break
        _close(src)
        _close(dst)

    def close(self) -> None:
        self.closed = True
        _close(self.listener)
        self._switch(self.hanging)
        for thread in self.threads:
            thread.join(5)


_close = CuttingProxy._close  # shutdown, then close: the peer sees the connection end at once


# ------------------------------------------------------------------------------------------- backends
@pytest.fixture
def env(monkeypatch, tmp_path):
    """No GitHub/AWS/GCS settings from the machine; the test credentials moto and the stand-ins accept."""
    for var in GH_VARS + ("AWS_ENDPOINT_URL", "AWS_PROFILE", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(var, raising=False)
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    forget_github_clients()
    yield monkeypatch
    forget_github_clients()


class Site:
    """One backend's registry for a test: publish (tag, {name: bytes}); its URL; where its traffic goes."""

    def __init__(self, kind: str, request, env, tmp_path):
        self.kind, self.env, self.tmp_path = kind, env, tmp_path
        self.stub = self.store = self.server = None
        if kind == "file":
            self.root = tmp_path / "registry"
            self.root.mkdir()
        elif kind == "ghr":
            self.stub = GitHubStub(tokens=(TOKEN,))
            request.addfinalizer(self.stub.close)
            self.point_at(self.stub.api_url)
            env.setenv("GITHUB_TOKEN", TOKEN)
        elif kind == "s3":
            self.store = S3Store(request.getfixturevalue("s3_server"), hint="faults")
        elif kind == "gs":
            server = request.getfixturevalue("gcs_server")
            env.setenv("STORAGE_EMULATOR_HOST", server.endpoint)
            self.store = GCSStore(server, hint="faults")
        elif kind == "grpc":
            self.server = request.getfixturevalue("grpc_plain")
            self.target = self.server.target

    def publish(self, tag: str, files: dict) -> None:
        """Publish release `tag` holding files (a gRPC registry names one release: the last published)."""
        if self.kind == "file":
            d = self.root / tag
            d.mkdir()
            for name, data in files.items():
                (d / name).write_bytes(data)
        elif self.kind == "ghr":
            self.stub.publish(OWNER, REPO, tag, files)
        elif self.kind in ("s3", "gs"):
            for name, data in files.items():
                self.store.put("%s/%s" % (tag, name), data)
        else:
            artifacts = self.tmp_path / "grpc-artifacts" / str(len(list(self.tmp_path.glob("grpc-artifacts/*"))))
            artifacts.mkdir(parents=True)
            name = next(iter(files))
            (artifacts / name).write_bytes(files[name])
            self.server.publish(tag, "file://%s/%s" % (artifacts, name))

    def point_at(self, endpoint: str) -> None:
        """Send this backend's traffic to endpoint (http://host:port) from now on."""
        if self.kind == "ghr":
            self.env.setenv("GITHUB_API_URL", endpoint)
            forget_github_clients()
        elif self.kind == "gs":
            self.env.setenv("STORAGE_EMULATOR_HOST", endpoint)
        elif self.kind == "s3":
            self.s3_endpoint = endpoint
        elif self.kind == "grpc":
            self.target = endpoint.split("://", 1)[-1]

    def url(self, query: str = "artifact=" + ARTIFACT) -> str:
        """The registry URL."""
        q = "?" + query if query else ""
        if self.kind == "file":
            return "file://%s%s" % (self.root, q)
        if self.kind == "ghr":
            return "ghr://%s/%s%s" % (OWNER, REPO, q)
        if self.kind == "s3":
            endpoint = getattr(self, "s3_endpoint", None) or self.store.server.endpoint
            return "s3://us-east-1/%s/releases?endpoint=%s%s" % (self.store.bucket, endpoint, "&" + query if query else "")
        if self.kind == "gs":
            return "gs://%s/releases%s" % (self.store.bucket, q)
        return "grpc://%s?no-tls=true%s" % (self.target, "&" + query if query else "")

    def requests(self) -> int:
        """How many requests the backend's server saw (ghr only; others: -1)."""
        return len(self.stub.requests) if self.stub else -1


@pytest.fixture
def site(request, env, tmp_path):
    """The backend named by the test's `backend` parameter."""
    return Site(request.param, request, env, tmp_path)


def backends(*kinds):
    """Parametrise `site` over these backends."""
    return pytest.mark.parametrize("site", kinds, indirect=True)


# ------------------------------------------------------------------------------------------- the poller
class PollerHarness:
    """A real Poller (dewy/poller/worker.py) with a real Config; the test is the master at the pipe's other end.

    It runs what serves now as `current` (nothing is deployed while the registry offers that version), so
    poll() only exercises the registry side: latest(), the outage log lines, the backoff, the status.
    """

    def __init__(self, tmp_path: Path, url: str, current: str | None = "1.0.0", interval: float = 1.0,
                 backoff_max: float = 16.0, **settings):
        from dewy.poller.worker import Poller

        workdir = tmp_path / "workdir"
        workdir.mkdir(exist_ok=True)
        values = {"registry": url, "mode": "assets", "workdir": str(workdir), "interval": "%gs" % interval,
                  "poll-backoff-max": "%gs" % backoff_max, "log-level": "info"}
        values.update(settings)
        self.config = config_mod.from_options(values)
        self.workdir = workdir
        ours, theirs = socket.socketpair()
        ours.settimeout(30)
        self.master = Channel(ours)
        self.poller = Poller(Channel(theirs))
        self.statuses = []
        self.poller.apply_config({"type": "config", "config": self.config.to_json(),
                                  "current": {"version": current, "release_dir": None} if current else None})

    @property
    def registry(self):
        return self.poller.registry

    def poll(self) -> dict:
        """One poll; returns the `status` it sent (with `took`, the seconds it took)."""
        started = time.monotonic()
        self.poller.poll()
        took = time.monotonic() - started
        messages = []
        while not any(m.get("type") == "status" for m in messages):
            messages += self.master.receive()
        status = [m for m in messages if m.get("type") == "status"][-1]
        status["took"] = took
        status["delay"] = self.poller.poll_delay()
        self.statuses.append(status)
        return status

    def close(self) -> None:
        if self.master.closed:
            return
        try:
            self.poller.finish()
        finally:
            if hasattr(self.poller.registry, "close"):
                self.poller.registry.close()
            self.master.close()
            self.poller.channel.close()
            root = logging.getLogger()
            for handler in [h for h in root.handlers if getattr(h, "_dewy", False)]:
                root.removeHandler(handler)  # dewy.log.setup's stderr handler: the next test sets its own


@pytest.fixture
def harness(tmp_path, caplog):
    """harness(url, **kw) -> a PollerHarness; closed at teardown. Log records land in caplog."""
    made = []

    def make(url, **kw):
        made.append(PollerHarness(tmp_path, url, **kw))
        caplog.set_level(logging.DEBUG, logger="dewy.registry")
        return made[-1]

    yield make
    for h in made:
        h.close()


# Configuration warnings said once per registry object, whatever happens later (not part of an incident).
CONFIG_WARNINGS = ("no-tls=true: plaintext",)


def loud(caplog) -> list:
    """Records at warning and above (what an operator's log shows as a problem), configuration warnings aside."""
    return [r for r in caplog.records if r.levelno >= logging.WARNING
            and not any(w in r.getMessage() for w in CONFIG_WARNINGS)]


def assert_one_line_per_incident(caplog, harness, polls: int, *words):
    """`polls` polls that all fail: one error line for the whole outage, naming the cause; the poll interval
    backs off; every error is one line; no traceback anywhere."""
    caplog.clear()
    statuses = [harness.poll() for _ in range(polls)]
    errors = [s["last_error"] for s in statuses]
    assert all(errors), statuses
    for error in errors:
        assert "\n" not in error and "\r" not in error and len(error) < 1000, error
        assert TOKEN not in error
    lines = loud(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert "\n" not in message and message.startswith("registry "), message
    for word in words:  # "a|b": either (botocore's versions word the same fault differently)
        assert any(w.lower() in message.lower() for w in word.split("|")), (word, message)
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    delays = [s["delay"] for s in statuses]
    assert delays == sorted(delays) and delays[-1] >= 2 * delays[0], "no backoff: %s" % delays
    assert delays[-1] <= harness.config.poll_backoff_max
    return statuses


# ================================================================================ rows: in-process, every backend
@backends(*ALL)
def test_5xx_backs_off_logs_once_and_ends_the_outage_with_one_line(site, harness, caplog):
    """Registry 5xx (gRPC: UNAVAILABLE; file://: the directory is gone, an unmounted share): a one-line error
    at once, backoff, one error line for the outage; when the registry is back, one info line."""
    site.publish("v1.0.0", {ARTIFACT: b"one"})
    fault = link = None
    if site.kind == "ghr":
        site.stub.fail_next(502, count=3)
    elif site.kind == "grpc":
        import grpc

        site.server.failure = (grpc.StatusCode.UNAVAILABLE, "the registry's backend is down")
    elif site.kind == "file":
        site.root.rename(site.root.with_name("registry.away"))
    else:  # a front end answering 503 in the store's own error format, behind a link that is later switched back
        fault = Canned(503, *(
            (b'{"error": {"code": 503, "message": "Backend Error"}}', "application/json") if site.kind == "gs" else
            (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ServiceUnavailable</Code>"
             b"<Message>Service is unable to handle request.</Message></Error>", "application/xml")))
        link = Link(fault.port)
        site.point_at(link.endpoint)
    try:
        h = harness(site.url())
        cause = {"ghr": "502", "grpc": "UNAVAILABLE", "file": "does not exist"}.get(site.kind, "503")
        statuses = assert_one_line_per_incident(caplog, h, 3, cause)
        assert all(s["took"] < 10 for s in statuses), "a 5xx must fail the poll at once (no retry sleeping)"
        # The registry answers again: one info line says so, and nothing louder.
        caplog.clear()
        if site.kind == "grpc":
            site.server.failure = None
        elif site.kind == "file":
            site.root.with_name("registry.away").rename(site.root)
        elif link is not None:
            link.upstream_port = site.store.server.port
            link.restore()
        status = h.poll()
        assert status["last_error"] is None and status["latest_version"] == "1.0.0", status
        again = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
        assert len(again) == 1 and "after 3 failed polls" in again[0], again
        assert not loud(caplog)
    finally:
        for server in (link, fault):
            if server is not None:
                server.close()


@backends(*NETWORK)
def test_a_registry_that_accepts_and_never_answers_times_out_each_poll(site, harness, caplog):
    """Timeout: the connection is taken and nothing comes back. Each poll ends within the registry's
    timeout (here shortened on the registry object; the defaults are checked below), one line for all."""
    site.publish("v1.0.0", {ARTIFACT: b"one"})
    link = Link()  # no upstream: every connection is held and never answered
    try:
        site.point_at(link.endpoint)
        h = harness(site.url())
        h.registry.timeout = (1.0, 1.0)
        if site.kind == "grpc":
            h.registry.deadline = 1.0
        statuses = assert_one_line_per_incident(caplog, h, 3)
        assert link.accepted >= 1, "the fault server was never reached"
        assert all(s["took"] < 8 for s in statuses), [s["took"] for s in statuses]
        text = " ".join(s["last_error"] for s in statuses).lower()
        assert any(w in text for w in ("timed out", "timeout", "deadline_exceeded")), text
    finally:
        link.close()


def test_default_registry_timeouts_end_a_poll_before_the_master_calls_the_poller_wedged():
    """The master counts a poller silent for its ping delay + 60 s as wedged (docs/ARCHITECTURE.md): a
    poll against a silent registry (a listing, a version's files, a checksum file) must end well before."""
    from dewy.registry import grpc as grpc_registry

    connect, read = BaseRegistry.timeout
    assert 3 * (connect + read) <= 60, BaseRegistry.timeout
    assert grpc_registry.DEADLINE * 2 <= 60


@backends(*NETWORK)
def test_connection_refused_is_one_quick_line(site, harness, caplog):
    dead = free_port()  # nobody listens here
    site.point_at("http://127.0.0.1:%d" % dead)
    h = harness(site.url())
    if site.kind == "grpc":
        h.registry.deadline = 3.0  # gRPC waits for the channel until the deadline
    statuses = assert_one_line_per_incident(caplog, h, 3)
    assert all(s["took"] < 5 for s in statuses), [s["took"] for s in statuses]
    text = statuses[0]["last_error"].lower()
    assert any(w in text for w in ("refused", "unavailable", "could not connect", "connect")), text


@backends(*NETWORK)
def test_dns_failure_is_one_quick_line(site, harness, caplog):
    site.point_at(("https://%s" if site.kind == "ghr" else "http://%s:9000") % INVALID_HOST)
    h = harness(site.url())
    if site.kind == "grpc":
        h.registry.deadline = 3.0
    statuses = assert_one_line_per_incident(caplog, h, 3)
    assert all(s["took"] < 5 for s in statuses), [s["took"] for s in statuses]
    text = statuses[0]["last_error"].lower()
    assert INVALID_HOST in text or any(w in text for w in ("name", "resolve", "dns", "unavailable")), text


# ================================================================================ rows: rate limits (GitHub)
@backends("ghr")
@pytest.mark.parametrize("how", ["403-remaining-0", "429-retry-after", "403-secondary"])
def test_rate_limit_stops_calls_until_the_reset_with_one_line(site, harness, caplog, how):
    """403 with `X-RateLimit-Remaining: 0` + reset, 429 with `Retry-After`, 403 secondary limit: no call until
    GitHub's time, nobody sleeps (each poll returns at once), one line for the whole wait."""
    site.publish("v1.0.0", {ARTIFACT: b"one"})
    h = harness(site.url())
    assert h.poll()["last_error"] is None
    if how == "403-remaining-0":
        site.stub.set_rate(0, time.time() + 600)
    elif how == "429-retry-after":
        site.stub.fail_next(429, retry_after=600)
    else:
        site.stub.fail_next(403)  # "You have exceeded a secondary rate limit", no header: wait a minute
    calls = site.requests()
    statuses = assert_one_line_per_incident(caplog, h, 4, "rate limit")
    assert site.requests() == calls + 1, "only the first poll may ask while limited"
    assert all(s["took"] < 2 for s in statuses), "a rate-limited poll must not sleep"
    assert "no calls until" in statuses[-1]["last_error"]


# ================================================================================ rows: malformed answers
MALFORMED = {
    # backend: [(label, Canned kwargs, what the error says)]
    "ghr": [("bad json", dict(body=b'[{"tag_name": "v1.0.0", "assets": ['), "not JSON"),
            ("truncated", dict(body=b'[{"tag_name": "v1.0.0"}]', truncate=True), "connection broken"),
            ("an object, not a list", dict(body=b'{"message": "hello"}'), "expected a list, got dict"),
            ("html", dict(body=b"<html>GitHub is down</html>", content_type="text/html"), "not JSON")],
    "s3": [("bad xml", dict(body=b"<ListBucketResult><Contents", content_type="application/xml"), "malformed"),
           ("truncated", dict(body=b"<?xml version='1.0'?><ListBucketResult><Name>b</Name>",
                              content_type="application/xml", truncate=True),
            # botocore < 1.44: ConnectionClosedError; 1.44 answers a body cut short with a stand-in HTTP 500.
            "closed before|no S3 error document"),
           ("html", dict(body=b"<html>down</html>", content_type="text/html"), "malformed")],
    "gs": [("bad json", dict(body=b'{"kind": "storage#objects", "prefixes": ['), "malformed"),
           ("truncated", dict(body=b'{"kind": "storage#objects", "prefixes": ["a/"]}', truncate=True), "cut short"),
           ("wrong shape", dict(body=b'{"prefixes": 7, "items": "x"}'), "malformed"),
           ("html", dict(body=b"<html>down</html>", content_type="text/html"), "malformed")],
}


@pytest.mark.parametrize("site,label,canned,says", [(kind, label, kw, says) for kind, rows in MALFORMED.items()
                                                    for label, kw, says in rows], indirect=["site"])
def test_malformed_answers_are_one_line_errors(site, harness, caplog, label, canned, says):
    """Bad JSON/XML, a body cut short of its Content-Length, the wrong shape: a one-line RegistryError saying
    so, never a traceback, one log line for the run of them."""
    fault = Canned(**canned)
    try:
        site.point_at(fault.endpoint)
        h = harness(site.url())
        h.registry.timeout = (2.0, 2.0)
        assert_one_line_per_incident(caplog, h, 3, says)
        assert fault.requests, "the malformed server was never asked"
    finally:
        fault.close()


def test_malformed_github_release_entries_are_skipped(env, harness, caplog):
    """Entries of the wrong types inside a well-formed list (numbers, nulls, a list for assets, an int name)."""
    entries = [1, None, "v9.9.9", {"tag_name": 7}, {"tag_name": ["v8.0.0"]},
               {"tag_name": "v3.0.0", "assets": "not a list"},
               {"tag_name": "v2.0.0", "assets": [{"name": 5, "id": [1]}, {"name": None}, "x",
                                                 {"name": ARTIFACT, "id": {"a": 1}, "state": "uploaded",
                                                  "digest": 12, "size": "big", "updated_at": [1]}],
                "published_at": 12}]
    fault = Canned(body=json.dumps(entries).encode())
    try:
        env.setenv("GITHUB_API_URL", fault.endpoint)
        env.setenv("GITHUB_TOKEN", TOKEN)
        reg = registry_pkg.from_url("ghr://%s/%s?artifact=%s" % (OWNER, REPO, ARTIFACT))
        release = reg.latest()
        # v3.0.0 has no usable assets (a string): newest_tag picks it, pick_artifact says it is not uploaded
        # yet... unless it is old. Either way: a RegistryError, or v2.0.0's asset; never a TypeError.
    except RegistryError as exc:
        assert "\n" not in str(exc) and "3.0.0" in str(exc), exc
    else:
        assert (release.version, release.artifact_name) == ("2.0.0", ARTIFACT)
    finally:
        fault.close()


@backends("grpc")
@pytest.mark.parametrize("tag,artifact_url,expect", [
    ("", "file:///srv/app.tar.gz", "without a tag"),
    ("v1.0.0", "", "without an artifact_url"),
    ("v1.0.0", "not a url at all", "unusable artifact_url"),
    ("v1.0.0", "ftp://x/app.tar.gz", "unusable artifact_url"),
    ("v1.0.0", "file:///srv/releases/", "without a file name"),
    ("v1.0.0", "file:///srv/%0A", "without a file name"),
    # Schemes dewy knows, refused by the store itself: the registry's bad answer, not a deploy failing with a
    # traceback at every poll (as it did).
    ("v1.0.0", "s3://us-east-1/b/app.tar.gz", "bad bucket name"),
    ("v1.0.0", "http://example.com/app.tar.gz", "loopback hosts only"),
    ("v1.0.0", "file://relative/app.tar.gz", "absolute path"),
])
def test_malformed_grpc_answers_are_one_line_errors(site, harness, caplog, tag, artifact_url, expect):
    site.server.publish(tag, artifact_url)
    h = harness(site.url(""), current=None)
    statuses = assert_one_line_per_incident(caplog, h, 3, expect)
    assert all(expect in s["last_error"] for s in statuses)


# ================================================================================ rows: thousands of tags
THOUSANDS = {"file": 3000, "ghr": 3000, "s3": 1100, "gs": 1100}  # buckets: more than one 1000-entry page


@backends("file", "ghr", "s3", "gs")
def test_thousands_of_tags_pick_the_newest_without_a_line_per_tag(site, harness, caplog):
    n = THOUSANDS[site.kind]
    # The versions first: GitHub lists the newest created first, so they are on the last of 30 pages.
    names = ["v1.%d.0" % i for i in range(3)] + ["build-%05d" % i for i in range(n - 3)]
    if site.kind == "ghr":
        for name in names:
            site.stub.publish(OWNER, REPO, name, {ARTIFACT: b"x"} if name.startswith("v") else None, digests=False)
    elif site.kind == "file":
        for name in names:
            (site.root / name).mkdir()
            if name.startswith("v"):
                (site.root / name / ARTIFACT).write_bytes(b"x")
    else:
        from concurrent.futures import ThreadPoolExecutor

        def put(name):
            site.store.put("%s/%s" % (name, ARTIFACT if name.startswith("v") else "notes.txt"), b"x")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, names))
    h = harness(site.url(), current="1.2.0")
    caplog.clear()
    calls = site.requests()
    for _ in range(2):
        status = h.poll()
        assert status["last_error"] is None and status["latest_version"] == "1.2.0", status
        assert status["took"] < 30, status["took"]
    assert not loud(caplog)
    if site.kind == "ghr":  # every page read once, then again conditionally (304s)
        assert site.requests() - calls == 2 * ((n + 99) // 100), site.requests() - calls
    skipped = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) <= n, "the names that are no versions are mentioned once, not at every poll"
    assert all(r.levelno == logging.DEBUG for r in skipped)


@backends(*ALL)
def test_tags_that_are_not_versions_are_one_warning_and_no_outage(site, harness, caplog):
    """The registry answered, only with nothing deployable: one warning saying why (shown in the status at
    every poll), no backoff, no registry-unreachable; the first deployable version ends it."""
    for tag in ("latest", "main", "release-2026", "v1", "nightly") if site.kind != "grpc" else ("latest",):
        site.publish(tag, {ARTIFACT: b"x"})
    h = harness(site.url(), current=None)
    caplog.clear()
    statuses = [h.poll() for _ in range(4)]
    assert all("not a semantic version" in (s["last_error"] or "") for s in statuses), statuses
    assert all("\n" not in s["last_error"] for s in statuses)
    lines = loud(caplog)
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING, [r.getMessage() for r in lines]
    assert lines[0].getMessage().startswith("nothing to deploy: ") and "not a semantic version" in lines[0].getMessage()
    assert {s["delay"] for s in statuses} == {h.config.interval}, "backed off: %s" % statuses
    assert h.poller.outage is None and not (h.workdir / ".dewy" / "outage.json").exists()
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"


# ================================================================================ rows: hostile names
def registry_answer(site, url):
    """latest() of a fresh registry for url: (Release or None, error text or None)."""
    reg = registry_pkg.from_url(url)
    try:
        return reg.latest(), None
    except RegistryError as exc:
        return None, str(exc)
    finally:
        if hasattr(reg, "close"):
            reg.close()


@backends(*ALL)
def test_hostile_tags_are_never_versions_and_hostile_artifact_names_never_picked(site, tmp_path):
    """Tags like `v1.0.0;touch x`, `$(...)`, `../../x`, with newlines; artifact names like `../../app.tar.gz`
    and names with newlines: only a real version and a plain file name ever come out, messages stay one line."""
    native = "app_%s_%s.tar.gz" % (versions.platform_aliases()[0][0], versions.platform_aliases()[1][0])
    # Names that are not one plain file name. (Shell syntax in a name, `$(touch x).tar.gz`, is a legal file
    # name: it may be picked, and is never interpreted - the e2e test below proves that part.)
    hostile_files = {"../../" + native: b"up", native + "\n": b"nl", "x\\" + native: b"bs"}
    if site.kind == "grpc":
        for tag in HOSTILE:
            site.server.publish(tag, "file:///srv/%s" % ARTIFACT)
            release, error = registry_answer(site, site.url(""))
            assert release is None and "\n" not in error and "\r" not in error, (tag, error)
        site.server.publish("v1.1.0", "file:///srv/..%2F..%2Fetc%2F" + "%0Apwned")
        release, error = registry_answer(site, site.url(""))
        assert release is None and "without a file name" in error and "\n" not in error, error
        return
    for tag in HOSTILE:
        if site.kind == "file" and ("/" in tag or tag == ".."):
            continue  # not a directory name a file system can hold
        if site.kind in ("s3", "gs") and ("/" in tag or tag == ".."):
            continue  # "/" makes it a deeper prefix; the test servers resolve a ".." segment of the request path
        if site.kind == "s3" and ("\n" in tag or "\r" in tag):
            continue  # S3 takes such keys; moto's server answers their PutObject 404
        site.publish(tag, {native: b"hostile"})
    files = dict(hostile_files, **{ARTIFACT: b"good"})
    if site.kind == "file":
        files = {k: v for k, v in files.items() if "/" not in k}
    if site.kind in ("s3", "gs"):
        files = {k: v for k, v in files.items() if "/" not in k}  # a "/" puts it below the version prefix
    if site.kind == "s3":
        files = {k: v for k, v in files.items() if "\n" not in k}  # moto cannot store it (see above)
    site.publish("v1.1.0", files)
    # Named explicitly: the plain file. Picked by OS/arch: never one of the hostile names (all of which
    # carry this host's OS/arch) - and the refusal message is one line.
    release, error = registry_answer(site, site.url())
    assert error is None, error
    assert (release.version, release.tag, release.artifact_name) == ("1.1.0", "v1.1.0", ARTIFACT)
    release, error = registry_answer(site, site.url(""))
    assert release is None and "no artifact for" in error and "\n" not in error and "\r" not in error, error
    assert "unsafe name" in error, error
    assert not list(tmp_path.rglob("pwned*"))


def test_plain_name_refuses_every_hostile_file_name():
    for name in ["../../x", "..", ".", "a/b", "a\\b", "a\nb", "a\rb", "a\0b", "\x7f", "", None, 5]:
        assert not plain_name(name), name
    for name in ["app.tar.gz", "v1.0.0;rm -rf -", "$(x)", "app linux.zip", "ü.tar.gz"]:
        assert plain_name(name), name


# ================================================================================ rows: e2e through dewy-master
def registry_lines(master: Master, mark: int) -> list:
    """Master-log lines after mark that are warnings or errors about the registry."""
    return [line for line in master.log_text()[mark:].splitlines()
            if (" ERROR " in line or " WARNING " in line) and "registry" in line
            and not any(w in line for w in CONFIG_WARNINGS)]


@pytest.mark.timeout(120)
def test_e2e_5xx_outage_one_line_backoff_app_keeps_serving(github_master):
    stub, adapter, make = github_master
    adapter.publish("1.0.0")
    master = make(**{"interval": "0.1s", "poll-backoff-max": "1.6s"}).start(wait_version="1.0.0")
    # The shipped_to upload comes after the switch: done before the 503s start (see the gRPC test below).
    wait_audit(master.workdir, lambda es: any(e.get("version") == "1.0.0" for e in es), "1.0.0's audit line")
    mark = len(master.log_text())
    stub.clear()
    stub.fail_next(503, count=100_000)
    master.wait_for(lambda s: "503" in (s.get("last_error") or ""), 20, "the 503 in the status")
    started = time.monotonic()
    for _ in range(20):  # the app answers all along
        assert master.get() == (200, "1.0.0\n")
        time.sleep(0.15)
    elapsed = time.monotonic() - started
    failed = [r for r in stub.recorded("api") if r.status == 503]
    # Without backoff, 0.1 s polls would make ~%d requests in this time; backing off to 1.6 s makes a handful.
    assert 2 <= len(failed) <= 3 + elapsed / 0.4, (len(failed), elapsed)
    assert len(registry_lines(master, mark)) == 1, registry_lines(master, mark)
    with stub.lock:
        stub.failures.clear()
    adapter.publish("1.1.0")
    master.wait_version("1.1.0", timeout=30)
    lines = [line for line in master.log_text()[mark:].splitlines() if "answers again" in line]
    assert len(lines) == 1, lines
    assert len(registry_lines(master, mark)) == 1


@pytest.mark.timeout(120)
def test_e2e_registry_that_never_answers_app_keeps_serving(tmp_path, request, grpc_plain):
    """grpc:// through a link that starts to hang (accepts, never answers): every poll ends at the RPC
    deadline, one line for the outage, the app serves; once the link passes again the next release deploys."""
    from helpers import Registry as FileRegistry

    files = FileRegistry(tmp_path)
    link = Link(grpc_plain.port)
    request.addfinalizer(link.close)

    class Adapter:
        url = "grpc://%s?no-tls=true" % link.target

        def publish(self, version, behaviour=""):
            files.publish(version, behaviour)
            grpc_plain.publish("v" + norm(version), "file://%s/%s" % (files.version_dir(version), files.ARTIFACT))

    masters = []
    request.node.dewy_masters = masters
    master = Master(tmp_path, Adapter(), **{"interval": "0.2s", "poll-backoff-max": "2s"})
    masters.append(master)
    try:
        Adapter().publish("1.0.0")
        master.start(wait_version="1.0.0")
        # The poller reports the deploy to the registry (gRPC Report) after the switch, then writes the audit
        # line: wait for it, or the hang below would catch the report too (a second line, not the outage's).
        wait_audit(master.workdir, lambda es: any(e.get("version") == "1.0.0" for e in es), "1.0.0's audit line")
        mark = len(master.log_text())
        link.hang()
        st = master.wait_for(lambda s: any(w in (s.get("last_error") or "") for w in ("DEADLINE_EXCEEDED", "timed out")), 40,
                             "the deadline in the status")
        polls = st.get("polls")
        master.wait_for(lambda s: s.get("polls", 0) >= polls + 3, 60, "three more failed polls")
        assert master.get() == (200, "1.0.0\n")
        assert master.status()["poller_pid"] == st["poller_pid"], "the poller was not restarted as wedged"
        assert len(registry_lines(master, mark)) == 1, registry_lines(master, mark)
        link.restore()
        Adapter().publish("1.1.0")
        master.wait_version("1.1.0", timeout=40)
        assert len([line for line in master.log_text()[mark:].splitlines() if "answers again" in line]) == 1
    finally:
        master.close()


@pytest.mark.timeout(120)
def test_e2e_hostile_names_never_reach_a_shell_or_a_path(github_master, tmp_path):
    """A registry publishing hostile tags and asset names, polled without ?artifact= (dewy picks by OS/arch).
    The artifact deployed is named `app_<os>_<arch>;touch pwned-semi;$(touch pwned-subst)`touch pwned-bt`.tar.gz`:
    a legal file name that goes through the whole pipeline (cache key, unpacking, audit, log lines, the
    shipped_to record) and would create pwned-* files if any shell ever interpreted it. The hooks get what
    they get through the environment only; no path escapes the workdir; unsafe names are never picked."""
    stub, adapter, make = github_master
    native = "app_%s_%s" % (versions.platform_aliases()[0][0], versions.platform_aliases()[1][0])
    evil = native + ";touch pwned-semi;$(touch pwned-subst)`touch pwned-bt`.tar.gz"
    adapter.query = ""  # ghr://acme/web: the artifact is chosen by this host's OS/arch
    adapter.publish("1.0.0", name=native + ".tar.gz")
    hook = 'printf "%s|%s|%s\\n" "$DEWY_VERSION" "$DEWY_PREVIOUS_VERSION" "$DEWY_RELEASE_DIR" >> ../hook.log'
    master = make(**{"before-deploy-hook": hook, "after-deploy-hook": hook}).start(wait_version="1.0.0")
    before = {p for p in tmp_path.rglob("*") if "workdir" not in p.parts and "staging" not in p.parts}
    for i, tag in enumerate(HOSTILE):
        stub.publish(OWNER, REPO, tag, {native + ".tar.gz": adapter.build("9.%d.0" % i)})
    unsafe = {"../../" + native + ".tar.gz": b"up", native + ".tar.gz\n": b"nl", "x\\" + native + ".tar.gz": b"bs"}
    stub.publish(OWNER, REPO, "v1.1.0", dict({evil: adapter.build("1.1.0")}, **unsafe))
    master.wait_version("1.1.0", timeout=30)
    assert master.get() == (200, "1.1.0\n")
    # A release whose only artifact-looking asset is `../app_<os>_<arch>.tar.gz`: waited for, never used.
    stub.publish(OWNER, REPO, "v1.2.0", {"../" + native + ".tar.gz": adapter.build("1.2.0")})
    waiting = wait_until(lambda: [line for line in master.log_text().splitlines()
                                  if "waiting for the artifact" in line and "1.2.0" in line], 20,
                         "the poller to wait for v1.2.0's artifact", master.details)
    assert len(waiting) == 1 and "1 unsafe name ignored" in waiting[0], waiting
    assert master.get() == (200, "1.1.0\n")

    assert not list(tmp_path.rglob("pwned*")) and not list(Path("/tmp").glob("pwned*")), "a shell ran a name"
    after = {p for p in tmp_path.rglob("*") if "workdir" not in p.parts and "staging" not in p.parts}
    assert after == before, sorted(map(str, after ^ before))  # hook.log was there since 1.0.0's deploy
    hook_lines = (tmp_path / "hook.log").read_text().splitlines()
    # Both hooks, for 1.0.0 and for 1.1.0, each with its version and its own release directory.
    assert [line.split("|")[0] for line in hook_lines] == ["1.0.0"] * 2 + ["1.1.0"] * 2, hook_lines
    assert all(line.split("|")[2].startswith(str(master.workdir / "releases") + "/") for line in hook_lines)
    # Nothing built from a registry string lies outside the workdir's own directories.
    workdir = master.workdir.resolve()
    for path in master.workdir.rglob("*"):
        assert str(path.resolve()).startswith(str(workdir) + "/") or path.is_symlink(), path
        assert "\n" not in path.name and not path.name.startswith("pwned"), path
    entries = [json.loads(line) for line in (master.workdir / ".dewy" / "audit.log").read_text().splitlines()]
    deployed = [e for e in entries if e.get("result") == "deployed" and e.get("version") == "1.1.0"]
    assert len(deployed) == 1 and deployed[0]["artifact"] == evil, entries
    assert all(e.get("artifact") in (None, native + ".tar.gz", evil) for e in entries), entries
    names = [n for n in stub.asset_names(OWNER, REPO, "v1.1.0") if n.startswith("shipped_to_")]
    assert len(names) == 1 and plain_name(names[0]), names
    assert master.status()["version"] == "1.1.0"


def test_not_yet_published_lists_a_bounded_number_of_names(tmp_path):
    """A version with thousands of files and no artifact: the waiting line stays short."""
    root = tmp_path / "registry" / "v1.0.0"
    root.mkdir(parents=True)
    for i in range(2000):
        (root / ("f%04d.txt" % i)).write_bytes(b"")
    (root / "bad\nname").write_bytes(b"")
    reg = registry_pkg.from_url("file://%s?artifact=%s" % (tmp_path / "registry", ARTIFACT))
    with pytest.raises(NotYetPublished) as info:
        reg.latest()
    text = str(info.value)
    assert len(text) < 1000 and "\n" not in text and "1990 more" in text and "1 unsafe name ignored" in text, text


def test_cache_keys_from_hostile_names_stay_inside_the_cache_directory(tmp_path):
    """The download cache names its files from `<version>/<artifact name>`: whatever a registry put in the
    name (here past pick_artifact's own refusal), the file lands directly inside the cache directory."""
    from dewy import cache as cache_pkg
    from dewy.poller.deploy import cache_key_of

    cache = cache_pkg.from_url("file", str(tmp_path / "workdir"))
    root = Path(cache.dir).resolve()
    for name in ["../../x", "..", "/etc/passwd", "a\nb", "$(touch pwned)", "x/../../../y", "." * 300]:
        key = cache_key_of("1.0.0", name)
        with cache.open_write(key) as out:
            out.write(b"data")
        path = Path(cache.path(key)).resolve()
        assert path.parent == root and path.read_bytes() == b"data", (name, path)
    assert not list(tmp_path.rglob("pwned*")) and not (tmp_path / "x").exists()
