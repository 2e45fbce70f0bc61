"""The Consul cache against the Consul stand-in (tests/consulstub.py), and the stand-in's own API contract."""

import base64
import logging
import time

import pytest
import requests

from dewy import cache as cache_pkg
from dewy.cache.base import CacheUnavailable
from dewy.cache.consul import ConsulCache
from dewy.demo.demo import free_port
from consulstub import ConsulStub
from shared_cache_cases import check_blobs_stay_local, check_scan
from helpers import wait_until

TOKEN = "consul-secret-token-7781"


@pytest.fixture
def consul(monkeypatch):
    for name in ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL",
                 "DEWY_CACHEDIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", TOKEN)
    with ConsulStub(token=TOKEN) as stub:
        yield stub


def make(url, tmp_path, registry=""):
    return cache_pkg.from_url(url, str(tmp_path / "work"), registry=registry)


# --- the cache ------------------------------------------------------------------------------------

def test_values_under_prefix_and_app_with_the_token(consul, tmp_path):
    cache = make("consul://%s/team/dewy?app=shop" % consul.address, tmp_path)
    assert isinstance(cache, ConsulCache) and cache.shared
    cache.set("answer", b"42")
    assert cache.get("answer") == b"42"
    assert "team/dewy/shop/answer" in consul.kv
    assert base64.b64decode(consul.kv["team/dewy/shop/answer"]["Value"]) == b"42"
    assert {token for *_, token in consul.requests_seen} == {TOKEN}  # sent as X-Consul-Token
    cache.delete("answer")
    assert cache.get("answer") is None and "team/dewy/shop/answer" not in consul.kv


def test_address_and_token_from_the_environment(consul, tmp_path, monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "http://" + consul.address)
    cache = make("consul:///dewy?app=x", tmp_path)
    cache.set("k", b"v")
    assert "dewy/x/k" in consul.kv
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul.address)
    assert make("consul://?app=y", tmp_path).prefix == "dewy"  # default prefix


def test_token_file(consul, tmp_path, monkeypatch):
    monkeypatch.delenv("CONSUL_HTTP_TOKEN")
    (tmp_path / "token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(tmp_path / "token"))
    cache = make("consul://%s/dewy?app=x" % consul.address, tmp_path)
    cache.set("k", b"v")
    assert cache.get("k") == b"v"


def test_ssl_switches_to_https(consul, tmp_path, monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    cache = make("consul://%s/dewy?app=x" % consul.address, tmp_path)
    assert cache.base.startswith("https://")
    assert cache.get("k") is None  # the stub speaks plain HTTP: a TLS handshake fails -> an outage, a miss


@pytest.mark.parametrize("token", [None, "wrong-token-0000"])
def test_missing_or_wrong_token_is_a_403_outage_without_the_token(consul, tmp_path, monkeypatch, caplog, token):
    if token is None:
        monkeypatch.delenv("CONSUL_HTTP_TOKEN")
    else:
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", token)
    cache = make("consul://%s/dewy?app=x" % consul.address, tmp_path)
    with caplog.at_level(logging.DEBUG, logger="dewy.cache"):
        assert cache.get("k") is None
        cache.set("k", b"v")
        with pytest.raises(CacheUnavailable) as info:
            cache.add("lock", b"me", 5)
    assert "403" in str(info.value) and "CONSUL_HTTP_TOKEN" in str(info.value)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert (token or TOKEN) not in caplog.text + str(info.value)
    assert not consul.kv


def test_scan_lists_live_values_of_this_app(consul, tmp_path):
    check_scan(lambda app: make("consul://%s/dewy?app=%s" % (consul.address, app), tmp_path))


def test_ttl_rides_in_flags(consul, tmp_path):
    cache = make("consul://%s/dewy?app=x" % consul.address, tmp_path)
    cache.set("short", b"v", ttl=0.3)
    assert cache.get("short") == b"v"
    flags = consul.kv["dewy/x/short"]["Flags"]
    assert 0 < flags - time.time() * 1000 <= 300
    wait_until(lambda: cache.get("short") is None, 3, "the value to expire")
    cache.set("short", b"w")
    assert consul.kv["dewy/x/short"]["Flags"] == 0 and cache.get("short") == b"w"


def test_add_uses_cas_and_takes_over_an_expired_lock(consul, tmp_path):
    url = "consul://%s/dewy?app=x" % consul.address
    one, two = make(url, tmp_path), make(url, tmp_path)
    assert one.add("lock", b"one", 0.3) is True
    assert two.add("lock", b"two", 0.3) is False
    assert any(m == "PUT" and q.get("cas") == "0" for m, _, q, _ in consul.requests_seen)
    assert two.discard("lock", b"two") is False and one.get("lock") == b"one"
    wait_until(lambda: two.add("lock", b"two", 5), 3, "the expired lock to be taken over")
    assert one.discard("lock", b"one") is False  # expired and taken: theirs now
    assert two.discard("lock", b"two") is True and "dewy/x/lock" not in consul.kv


def test_value_over_the_limit_is_dropped_with_a_warning(consul, tmp_path, caplog):
    cache = make("consul://%s/dewy?app=x" % consul.address, tmp_path)
    cache.set("big", b"small")
    with caplog.at_level(logging.WARNING, logger="dewy.cache"):
        cache.set("big", b"x" * (512 * 1024 + 1))
    assert "limit" in caplog.text
    assert cache.get("big") == b"small"


def test_artifacts_stay_on_local_disk(consul, tmp_path):
    cache = make("consul://%s/dewy?app=x" % consul.address, tmp_path)
    check_blobs_stay_local(cache, tmp_path, lambda: consul.kv)


def test_agent_down_is_logged_once(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    cache = make("consul://127.0.0.1:%d/dewy?app=x" % free_port(), tmp_path)
    with caplog.at_level(logging.DEBUG, logger="dewy.cache"):
        for _ in range(3):
            assert cache.get("k") is None
            cache.set("k", b"v")
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert "cannot reach consul" in caplog.text


@pytest.mark.parametrize("url, message", [
    ("consul://user:pw@127.0.0.1:8500/dewy", "takes no credentials"),
    ("consul://127.0.0.1:85x0/dewy", "bad port"),
    ("consul://127.0.0.1:8500/de wy", "key prefix"),
    ("consul://127.0.0.1:8500/dewy?registry-ttl=-1s", '"registry-ttl"'),
    ("consul://127.0.0.1:8500/dewy?token=x", 'unknown query key "token" for consul://; supported: app, registry-ttl'),
])
def test_bad_urls(url, message):
    with pytest.raises(ValueError) as info:
        cache_pkg.validate_url(url)
    assert message in str(info.value)
    assert "pw@" not in str(info.value)


# --- the stand-in's contract (what Consul documents) ---------------------------------------------

def test_stub_kv_api(consul):
    base = "http://%s/v1/kv/" % consul.address
    h = {"X-Consul-Token": TOKEN}
    assert requests.get(base + "a/b", headers=h).status_code == 404
    assert requests.put(base + "a/b?flags=7", data=b"one", headers=h).json() is True
    got = requests.get(base + "a/b", headers=h)
    entry = got.json()[0]
    assert entry["Key"] == "a/b" and entry["Flags"] == 7 and base64.b64decode(entry["Value"]) == b"one"
    assert int(got.headers["X-Consul-Index"]) == entry["ModifyIndex"]
    assert requests.get(base + "a/b?raw", headers=h).content == b"one"
    assert requests.put(base + "a/b?cas=0", data=b"x", headers=h).json() is False
    assert requests.put(base + "a/b?cas=%d" % entry["ModifyIndex"], data=b"two", headers=h).json() is True
    assert requests.put(base + "a/b?cas=%d" % entry["ModifyIndex"], data=b"three", headers=h).json() is False
    requests.put(base + "a/c/d", data=b"", headers=h)
    assert requests.get(base + "a/?keys", headers=h).json() == ["a/b", "a/c/d"]
    assert requests.get(base + "a/?keys&separator=/", headers=h).json() == ["a/b", "a/c/"]
    assert [e["Key"] for e in requests.get(base + "a?recurse", headers=h).json()] == ["a/b", "a/c/d"]
    assert requests.get(base + "a/c/d", headers=h).json()[0]["Value"] is None
    assert requests.delete(base + "a/b?cas=1", headers=h).json() is False
    assert requests.delete(base + "a?recurse", headers=h).json() is True
    assert requests.get(base + "a?recurse", headers=h).status_code == 404
    assert requests.put(base + "big", data=b"x" * (512 * 1024 + 1), headers=h).status_code == 413


def test_stub_blocking_query_returns_on_change(consul):
    import threading

    base = "http://%s/v1/kv/" % consul.address
    h = {"X-Consul-Token": TOKEN}
    requests.put(base + "w", data=b"1", headers=h)
    index = requests.get(base + "w", headers=h).headers["X-Consul-Index"]
    timer = threading.Timer(0.2, lambda: requests.put(base + "w", data=b"2", headers=h))
    timer.start()
    started = time.monotonic()
    got = requests.get(base + "w?index=%s&wait=5s" % index, headers=h)
    timer.join()
    assert base64.b64decode(got.json()[0]["Value"]) == b"2"
    assert 0.1 < time.monotonic() - started < 4


def test_stub_sessions_and_locks(consul):
    api = "http://%s/v1/" % consul.address
    h = {"Authorization": "Bearer " + TOKEN}  # Consul accepts the token this way too
    assert requests.put(api + "session/create", json={"TTL": "5s"}, headers=h).status_code == 400
    one = requests.put(api + "session/create", json={"TTL": "10s", "LockDelay": "0s"}, headers=h).json()["ID"]
    two = requests.put(api + "session/create", json={"LockDelay": "1s"}, headers=h).json()["ID"]
    assert requests.put(api + "kv/l?acquire=" + one, data=b"1", headers=h).json() is True
    assert requests.put(api + "kv/l?acquire=" + two, data=b"2", headers=h).json() is False
    assert requests.get(api + "kv/l", headers=h).json()[0]["Session"] == one
    assert requests.put(api + "kv/l?release=" + two, headers=h).json() is False
    assert requests.put(api + "kv/l?release=" + one, headers=h).json() is True
    assert "Session" not in requests.get(api + "kv/l", headers=h).json()[0]
    assert requests.put(api + "kv/l?acquire=" + two, data=b"2", headers=h).json() is True
    assert requests.get(api + "kv/l", headers=h).json()[0]["LockIndex"] == 2
    assert requests.put(api + "session/destroy/" + two, headers=h).json() is True
    assert requests.get(api + "session/info/" + two, headers=h).json() == []
    assert requests.put(api + "kv/l?acquire=" + one, data=b"1", headers=h).json() is False  # lock-delay 1s
    assert requests.put(api + "kv/l?acquire=nonexistent", headers=h).status_code == 500
    assert requests.put(api + "session/renew/" + one, headers=h).json()[0]["ID"] == one


def test_stub_acl(consul):
    url = "http://%s/v1/kv/x" % consul.address
    assert requests.get(url).status_code == 403 and requests.get(url).text == "Permission denied"
    assert requests.get(url, headers={"X-Consul-Token": "nope"}).text == "ACL not found"
    assert requests.get(url + "?token=" + TOKEN).status_code == 404
