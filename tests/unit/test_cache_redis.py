"""The Redis cache against a real valkey-server (password-protected): values, expiry, the lock, namespaces,
artifacts on local disk, outages, and no password in any message."""

import logging
import socket
import threading
import uuid

import pytest

from dewy import cache as cache_pkg
from dewy.cache.base import CacheError, CacheUnavailable
from dewy.cache.redis import RedisCache
from dewy.demo.demo import free_port
from shared_cache_cases import check_blobs_stay_local, check_scan
from helpers import wait_until
from valkeyserver import PASSWORD, ValkeyServer


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.delenv("DEWY_CACHEDIR", raising=False)
    return str(tmp_path / "work")


def make(url, workdir, registry=""):
    return cache_pkg.from_url(url, workdir, registry=registry)


def test_values_live_on_the_server_under_prefix_and_app(redis_server, workdir):
    cache = make(redis_server.url(app="shop"), workdir)
    assert isinstance(cache, RedisCache) and cache.shared
    cache.set("answer", b"42")
    assert cache.get("answer") == b"42"
    assert redis_server.client().get("dewy/shop/answer") == b"42"
    cache.delete("answer")
    assert cache.get("answer") is None
    assert redis_server.client().get("dewy/shop/answer") is None


def test_scan_lists_live_values_of_this_app(redis_server, workdir):
    redis_server.client().flushdb()
    check_scan(lambda app: make(redis_server.url(app=app), workdir))


def test_other_apps_and_prefixes_do_not_see_each_other(redis_server, workdir):
    app = "a-" + uuid.uuid4().hex[:8]
    first = make(redis_server.url(app=app), workdir)
    other_app = make(redis_server.url(), workdir)
    other_prefix = make(redis_server.url(app=app, prefix="team2/dewy"), workdir)
    first.set("k", b"first")
    assert other_app.get("k") is None and other_prefix.get("k") is None
    other_prefix.set("k", b"second")
    assert first.get("k") == b"first"
    assert redis_server.client().get("team2/dewy/%s/k" % app) == b"second"


def test_default_app_is_the_registry_url_hash(redis_server, workdir):
    url = redis_server.url().split("?")[0]  # no ?app=
    a = make(url, workdir, registry="file:///srv/releases/?pre-release=true&artifact=x.tgz")
    b = make(url, workdir, registry="file:///srv/releases?artifact=x.tgz&pre-release=true")
    c = make(url, workdir, registry="file:///srv/other")
    assert a.app == b.app != c.app
    assert make(url, workdir).app == "default"
    a.set("k", b"v")
    assert b.get("k") == b"v" and c.get("k") is None
    a.delete("k")


def test_ttl_expires_on_the_server(redis_server, workdir):
    cache = make(redis_server.url(), workdir)
    cache.set("short", b"v", ttl=0.2)
    assert cache.get("short") == b"v"
    assert 0 < redis_server.client().pttl("%s/%s/short" % (cache.prefix, cache.app)) <= 200
    wait_until(lambda: cache.get("short") is None, 3, "the value to expire")
    cache.set("gone", b"v", ttl=0)
    assert cache.get("gone") is None
    cache.set("forever", b"v", ttl=0.2)
    cache.set("forever", b"w")  # without a ttl: permanent again
    assert redis_server.client().pttl("%s/%s/forever" % (cache.prefix, cache.app)) == -1


def test_add_is_exclusive_and_expires(redis_server, workdir):
    url = redis_server.url()
    one, two = make(url, workdir), make(url, workdir)
    assert one.add("lock", b"one", ttl=0.3) is True
    assert two.add("lock", b"two", ttl=0.3) is False
    assert two.discard("lock", b"two") is False  # not ours: stays
    assert one.get("lock") == b"one"
    wait_until(lambda: two.add("lock", b"two", ttl=5), 3, "the lock to expire and be taken")
    assert one.discard("lock", b"one") is False  # our lock expired and is theirs now: not freed
    assert two.discard("lock", b"two") is True
    assert one.get("lock") is None


def test_artifacts_stay_on_local_disk(redis_server, workdir):
    cache = make(redis_server.url(), workdir)
    check_blobs_stay_local(cache, workdir, lambda: redis_server.client().keys("%s/%s/*" % (cache.prefix, cache.app)))


def test_unix_socket(redis_server, workdir):
    cache = make("unix://%s?db=0&password=%s&app=%s" % (redis_server.socket_path, PASSWORD, uuid.uuid4().hex[:8]),
                 workdir)
    cache.set("k", b"over the socket")
    assert cache.get("k") == b"over the socket"
    assert cache.add("lock", b"x", 1) is True


@pytest.mark.parametrize("password", ["", "wrong-password-123"])
def test_bad_password_is_an_outage_that_never_shows_the_password(redis_server, workdir, caplog, password):
    cache = make(redis_server.url(password=password), workdir)
    with caplog.at_level(logging.DEBUG, logger="dewy.cache"):
        assert cache.get("k") is None                 # a miss, not an exception: deploys go on
        cache.set("k", b"v")                          # nothing happens
        with pytest.raises(CacheUnavailable) as info:
            cache.add("lock", b"x", 1)                # a lock cannot be taken: the caller knows
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, caplog.text              # logged once for the outage
    text = caplog.text + str(info.value)
    assert "auth" in text.lower() or "password" in text.lower() or "noauth" in text.lower(), text
    assert "wrong-password-123" not in text and PASSWORD not in text


def test_server_down_is_logged_once_and_comes_back(workdir, caplog, monkeypatch):
    import dewy.cache.remote as remote

    monkeypatch.setattr(remote, "RETRY", 0.0)  # look again at every call, to see it come back quickly
    port = free_port()
    cache = make("redis://:%s@127.0.0.1:%d/0?app=down" % (PASSWORD, port), workdir)
    with caplog.at_level(logging.INFO, logger="dewy.cache"):
        for _ in range(3):
            assert cache.get("k") is None
            cache.set("k", b"v")
            cache.delete("k")
        with pytest.raises(CacheUnavailable):
            cache.add("lock", b"x", 1)
        assert [r.levelname for r in caplog.records] == ["ERROR"], caplog.text
        with ValkeyServer(port=port):
            cache.set("k", b"back")
            assert cache.get("k") == b"back"
    assert "answers again" in caplog.records[-1].getMessage()
    assert PASSWORD not in caplog.text


def test_an_outage_fails_fast_until_retry(workdir):
    """A server that is down is not contacted again at every call (no timeout per poll): count connections."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def refuse_all():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()  # not a Redis server: hang up at once

    thread = threading.Thread(target=refuse_all, daemon=True)
    thread.start()
    try:
        cache = make("redis://127.0.0.1:%d/0?app=x" % listener.getsockname()[1], workdir)
        for _ in range(5):
            assert cache.get("k") is None
            cache.set("k", b"v")
        assert 1 <= len(accepted) <= 2  # the first get (and redis-py's one retry); nothing after
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(5)
    assert not thread.is_alive()


@pytest.mark.parametrize("url, message", [
    ("redis://127.0.0.1:6379/x", 'bad Redis database "x"'),
    ("redis:///0", "needs a host"),
    ("unix://run/redis.sock", "absolute path"),
    ("redis://h:6379/0?registry-ttl=soon", 'bad value "soon" for query key "registry-ttl"'),
    ("redis://h:6379/0?registry-ttl=0s", 'bad value "0s" for query key "registry-ttl"'),
    ("redis://h:6379/0?app=../x", 'bad value "../x" for query key "app"'),
    ("redis://h:6379/0?ttl=3", 'unknown query key "ttl" for redis://; supported: app, prefix, registry-ttl'),
    ("memory://?registry-ttl=30s", 'query key "registry-ttl" needs a cache the fleet shares'),
    ("file:///var/cache/dewy?registry-ttl=30s", "file:// keeps answers on this host"),
])
def test_bad_urls(url, message):
    with pytest.raises(ValueError) as info:
        cache_pkg.validate_url(url)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_registry_ttl_is_read(redis_server, workdir):
    assert make(redis_server.url(**{"registry-ttl": "1m30s"}), workdir).registry_ttl == 90.0
    assert make(redis_server.url(), workdir).registry_ttl is None


def test_bad_url_never_shows_the_password(workdir):
    with pytest.raises((CacheError, ValueError)) as info:
        make("redis://:topsecret99@127.0.0.1:notaport/0", workdir)
    assert "topsecret99" not in str(info.value)


@pytest.mark.parametrize("value, message", [
    ("memory://?registry-ttl=30s", 'query key "registry-ttl" needs a cache the fleet shares'),
    ("redis://:topsecret99@cache:6379/x?registry-ttl=30s", 'bad Redis database "x"'),
])
def test_config_error_is_one_line_without_the_password(tmp_path, value, message):
    from dewy.config import ConfigError, load_ini

    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = file:///srv/r\napp = /bin/true\ncache = %s\n" % value)
    with pytest.raises(ConfigError) as info:
        load_ini(str(ini))
    text = str(info.value)
    assert message in text and "cache" in text and "\n" not in text
    assert "topsecret99" not in text


# --- rediss:// (TLS) --------------------------------------------------------------------------------

@pytest.fixture
def redis_tls(redis_server, tmp_path):
    """The session's valkey-server behind a TLS terminator whose certificate a test CA signed."""
    from grpc_registry_server import TLSFiles
    from tlsproxy import TLSProxy

    tls = TLSFiles(tmp_path)
    with TLSProxy(tls, ("127.0.0.1", redis_server.port), tmp_path) as proxy:
        yield proxy, tls


def test_rediss_verifies_the_server_with_the_ca_and_shares_values(redis_server, redis_tls, workdir):
    proxy, tls = redis_tls
    cache = make("rediss://:%s@localhost:%d/0?app=tls&ca=%s" % (PASSWORD, proxy.port, tls.ca_path), workdir)
    cache.set("answer", b"over tls")
    assert cache.get("answer") == b"over tls"
    assert redis_server.client().get("dewy/tls/answer") == b"over tls"  # the same server, reached through TLS
    assert cache.add("lock", b"t", 5) and cache.scan("ans") == {"answer": b"over tls"}


def test_rediss_refuses_a_server_its_roots_do_not_trust(redis_tls, workdir, caplog, monkeypatch):
    proxy, tls = redis_tls
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    cache = make("rediss://:%s@localhost:%d/0?app=tls" % (PASSWORD, proxy.port), workdir)  # system roots only
    with caplog.at_level(logging.ERROR, logger="dewy.cache"):
        assert cache.get("answer") is None  # an outage: the registry is asked directly instead
    assert "certificate verify failed" in caplog.text and PASSWORD not in caplog.text
    wait_until(lambda: proxy.handshake_errors, 5, "the proxy to see the refused handshake")
