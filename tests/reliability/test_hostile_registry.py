"""Hostile registries and stores, served by a raw-socket stand-in on 127.0.0.1 (plain or TLS with a test CA):
dewy's production clients (the GitHub client, the https artifact store) run unchanged against

- an endless JSON answer: refused at the cap, naming it, memory bounded;
- an answer dripping one byte a second (no per-read timeout fires): ended by the call's total deadline as an
  ordinary RegistryError;
- an https:// artifact or a GitHub asset redirected to plain http:// off loopback: refused without connecting;
- error texts with terminal escapes: shown without control characters.
"""

from __future__ import annotations

import io
import socket
import ssl
import threading
import time

import pytest

from ghstub import forget_github_clients

from dewy import artifact, github, registry
from dewy.artifact import ArtifactError
from dewy.registry import RegistryError
from grpc_registry_server import TLSFiles

ENV_VARS = ("GH_TOKEN", "GITHUB_TOKEN", "GITHUB_API_URL", "GITHUB_ENDPOINT", "GITHUB_ARTIFACT", "GITHUB_APP_ID",
            "GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_PATH")
OFF_LOOPBACK = "http://192.0.2.7/app.tar.gz"  # TEST-NET-1: never answers; refused before any connect


class Hostile:
    """Answers every request by `mode`: endless-json, drip, redirect (to OFF_LOOPBACK), escapes (an error
    whose message carries terminal escapes). TLS when tls (TLSFiles) is given. A context manager."""

    def __init__(self, mode: str, tls: TLSFiles | None = None, directory=None):
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.context = None
        if tls is not None:
            cert, key = directory / "hostile-cert.pem", directory / "hostile-key.pem"
            cert.write_bytes(tls.cert_pem)
            key.write_bytes(tls.key_pem)
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(str(cert), str(key))
        self.stop = threading.Event()
        self.threads = []
        self.conns = []
        self.sent = 0

    @property
    def url(self) -> str:
        return "%s://127.0.0.1:%d" % ("https" if self.context else "http", self.port)

    def __enter__(self):
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self.threads.append(thread)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.listener.close()
        for conn in list(self.conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self.threads:
            thread.join(5)

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn):
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            if self.mode == "redirect":
                conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % OFF_LOOPBACK.encode())
            elif self.mode == "escapes":
                body = b'{"message": "Bad \\u001b[2J\\u001b]0;owned\\u0007credentials"}'
                conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
            elif self.mode in ("endless-json", "endless-token"):
                status = b"201 Created" if self.mode == "endless-token" else b"200 OK"
                conn.sendall(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[" % status)
                block = b'{"tag_name": "v1.0.0", "assets": []},' * 1000
                while not self.stop.is_set():
                    conn.sendall(block)
                    self.sent += len(block)
            elif self.mode == "drip":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while not self.stop.is_set():
                    conn.sendall(b" ")
                    self.stop.wait(1.0)
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture
def gh_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    forget_github_clients()
    yield monkeypatch
    forget_github_clients()


def test_an_endless_json_listing_stops_at_the_cap_naming_it(gh_env):
    with Hostile("endless-json") as server:
        gh_env.setenv("GITHUB_API_URL", server.url)
        started = time.monotonic()
        with pytest.raises(RegistryError, match="larger than %d bytes" % github.MAX_JSON):
            registry.from_url("ghr://acme/app").latest()
        assert time.monotonic() - started < 30
        assert server.sent < github.MAX_JSON * 4  # it stopped reading at the cap, not when the stub gave up


def test_a_dripping_registry_ends_at_the_total_deadline_as_a_registry_error(gh_env):
    with Hostile("drip") as server:
        gh_env.setenv("GITHUB_API_URL", server.url)
        reg = registry.from_url("ghr://acme/app")
        reg.total_deadline = 3.0  # 40 s in production: well inside the master's 60 s wedge budget
        started = time.monotonic()
        with pytest.raises(RegistryError, match="total deadline"):
            reg.latest()
        took = time.monotonic() - started
        assert 2.5 < took < 8, took  # the per-read timeout (15 s) never fired: one byte a second
        # The next call works the same way (the alarm was cleared, the connection dropped).
        reg.total_deadline = 1.0
        with pytest.raises(RegistryError, match="total deadline"):
            reg.latest()


def test_an_https_artifact_redirected_to_plain_http_off_loopback_is_refused(tmp_path, monkeypatch):
    tls = TLSFiles(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_path))
    with Hostile("redirect", tls, tmp_path) as server:
        started = time.monotonic()
        with pytest.raises(ArtifactError, match="redirect from https:// to plain http://192.0.2.7 refused"):
            artifact.from_url(server.url + "/app.tar.gz").fetch(io.BytesIO())
        assert time.monotonic() - started < 5  # never tried to connect to 192.0.2.7


def test_a_github_asset_redirected_to_plain_http_off_loopback_is_refused(tmp_path, gh_env):
    tls = TLSFiles(tmp_path)
    gh_env.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_path))
    with Hostile("redirect", tls, tmp_path) as server:
        client = github.Client(server.url, github.auth_from_env({}))
        with pytest.raises(github.GitHubError, match="redirect from https:// to plain http://192.0.2.7 refused"):
            github.open_asset(client, "acme", "app", 1)


def test_registry_error_text_reaches_logs_without_control_characters(gh_env):
    with Hostile("escapes") as server:
        gh_env.setenv("GITHUB_API_URL", server.url)
        with pytest.raises(RegistryError) as info:
            registry.from_url("ghr://acme/app").latest()
    text = str(info.value)
    assert "Bad" in text and "credentials" in text
    assert not any(ord(c) < 0x20 or ord(c) == 0x7f for c in text), repr(text)


def test_a_dripping_registry_is_an_ordinary_outage_for_a_real_master(make_master, gh_env):
    """A real dewy-master polling a GitHub registry that drips one byte a second: each poll ends at the
    total deadline (2 s here, DEWY_TEST_REGISTRY_DEADLINE; 40 s in production, inside the master's 60 s wedge
    budget), polls back off, `registry-unreachable` is notified once, and the poller is never killed."""
    from types import SimpleNamespace

    from notifystubs import WebhookServer

    with Hostile("drip") as server, WebhookServer() as hook:
        master = make_master(env={"GITHUB_API_URL": server.url, "DEWY_TEST_REGISTRY_DEADLINE": "2"},
                             notifier=hook.url(), interval="0.5s", **{"poll-backoff-max": "2s"})
        master.registry = SimpleNamespace(url="ghr://acme/app")
        master.start()
        master.wait_for(lambda s: "total deadline" in (s.get("last_error") or ""), 30, "a poll ended at the deadline")
        hook.wait_for(lambda: "registry-unreachable" in [e["event"] for e in hook.events])
        polls = master.status()["polls"]
        master.wait_for(lambda s: s["polls"] >= polls + 3, 40, "three more failed polls")
        assert [e["event"] for e in hook.events].count("registry-unreachable") == 1, hook.events
        log = master.log_text()
        assert "restarting the poller" not in log and "Traceback" not in log, master.log_tail()
        assert "backs off" in log, master.log_tail()


def test_an_endless_app_token_answer_is_not_read_whole(gh_env):
    """GitHub App auth: an installation token answer that never ends is read up to 64 KiB, then refused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with Hostile("endless-token") as server:
        gh_env.setenv("GITHUB_API_URL", server.url)
        gh_env.setenv("GITHUB_APP_ID", "1")
        gh_env.setenv("GITHUB_APP_INSTALLATION_ID", "2")
        gh_env.setenv("GITHUB_APP_PRIVATE_KEY", key)
        started = time.monotonic()
        with pytest.raises(RegistryError, match="not a token"):
            registry.from_url("ghr://acme/app").latest()
        assert time.monotonic() - started < 10
        assert server.sent < github.MAX_JSON  # it stopped reading long before


def test_an_endless_consul_answer_stops_at_the_cap(tmp_path, monkeypatch):
    """What holds the Consul cache's port and never ends its answer: refused at the cap, named."""
    from dewy import cache as cache_pkg
    from dewy.cache import CacheUnavailable
    from dewy.cache import consul

    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    monkeypatch.setattr(consul, "MAX_ANSWER", 4 << 20)
    with Hostile("endless-json") as server:
        cache = cache_pkg.from_url("consul://127.0.0.1:%d/dewy?app=x" % server.port, str(tmp_path))
        with pytest.raises(CacheUnavailable, match="more than %d bytes" % (4 << 20)):
            cache.scan("fleet/")
        assert server.sent < 64 << 20
