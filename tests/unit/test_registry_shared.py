"""The shared registry answer (`?registry-ttl=`): pollers sharing one real Redis (valkey-server) make one
upstream call per TTL in total, all see the newest release, survive a dead lock holder and a registry outage,
and go straight to the registry when the cache is down. Upstream calls are counted by a file registry
that counts its own `latest()` calls."""

import hashlib
import json
import logging
import os
import time

import pytest

from dewy import cache as cache_pkg
from dewy.demo.demo import free_port
from dewy.registry.base import NothingDeployable, NotYetPublished, RegistryError
from dewy.registry.file import FileRegistry
from dewy.registry.shared import SharedRegistry, lock_seconds, normalised_url, wrap
from consulstub import ConsulStub
from helpers import Registry, wait_until
from shared_answer import Counter, CountingRegistry, PollingFleet, ask_together, kill_lock_holder


@pytest.fixture
def reg(tmp_path):
    return Registry(tmp_path)


KEY = "fleet-key-for-tests"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The hosts' workdir; they hold the fleet key (DEWY_CACHE_KEY), so an entry one writes is authenticated
    and the others take it as it is: one upstream call per TTL for the whole fleet. Without the key each host
    checks a new answer with the registry once (the tests at the end)."""
    monkeypatch.delenv("DEWY_CACHEDIR", raising=False)
    monkeypatch.setenv("DEWY_CACHE_KEY", KEY)
    return str(tmp_path / "work")


def poller(redis_url, reg, counter, workdir, **kw):
    """One host: its own cache connection, its own registry and wrapper."""
    cache = cache_pkg.from_url(redis_url, workdir, registry=reg.url)
    return wrap(CountingRegistry(reg.url, counter, cache=cache, **kw), cache)


def test_wrap_only_with_a_shared_cache_and_a_ttl(redis_server, reg, workdir):
    plain = FileRegistry(reg.url)
    assert wrap(plain, cache_pkg.from_url("file", workdir)) is plain
    assert wrap(plain, cache_pkg.from_url(redis_server.url(), workdir)) is plain
    shared = wrap(plain, cache_pkg.from_url(redis_server.url(**{"registry-ttl": "30s"}), workdir))
    assert isinstance(shared, SharedRegistry) and shared.ttl == 30.0
    assert shared.url == reg.url and shared.report == plain.report  # the rest is the registry's


def test_key_ignores_credentials_and_query_order_but_not_slot_or_refusals(reg):
    assert normalised_url("S3://User:Secret@Host:9000/b/p/?b=2&a=1#x") == "s3://host:9000/b/p?a=1&b=2"
    base = FileRegistry("file:///srv/r?artifact=a.tgz&pre-release=true")
    same = FileRegistry("file:///srv/r/?pre-release=true&artifact=a.tgz")
    blue = FileRegistry("file:///srv/r?artifact=a.tgz&pre-release=true", slot="blue")
    key = SharedRegistry(base, None, 30).key
    assert key() == SharedRegistry(same, None, 30).key()
    assert key() != SharedRegistry(blue, None, 30).key()
    assert key(["1.0.0", "2.0.0"]) == key(["2.0.0", "1.0.0"]) != key(["2.0.0"]) != key()


def test_fresh_answer_is_used_without_calling_the_registry(redis_server, reg, workdir):
    reg.publish_bytes("1.0.0", b"one")
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "30s"})
    first, second = poller(url, reg, counter, workdir), poller(url, reg, counter, workdir)
    assert first.latest().version == "1.0.0"
    reg.publish_bytes("1.1.0", b"two")
    assert second.latest().version == "1.0.0"  # fresh for 30 s: shared, not asked again
    assert first.latest().version == "1.0.0"
    assert counter.count == 1


def test_fleet_makes_one_upstream_call_per_ttl_and_ends_on_the_newest(redis_server, reg, workdir):
    """20 pollers, registry-ttl=2s, ~7 s, three releases published meanwhile."""
    ttl, hosts, duration = 2.0, 20, 7.0
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "%gs" % ttl})
    pollers = [poller(url, reg, counter, workdir) for _ in range(hosts)]
    reg.publish_bytes("1.0.0", b"one")
    with PollingFleet(pollers) as fleet:
        time.sleep(1.0)
        reg.publish_bytes("1.1.0", b"two")
        time.sleep(1.5)
        reg.publish_bytes("1.2.0", b"three")
        time.sleep(duration - 2.5)
    elapsed, errors, last = fleet.elapsed, fleet.errors, fleet.last
    assert not errors, errors[:3]
    assert counter.count <= elapsed / ttl + 1, (counter.count, elapsed)
    assert counter.count >= 3  # it did refresh: the newest came through
    assert last == ["1.2.0"] * hosts
    gaps = [b - a for a, b in zip(counter.calls, counter.calls[1:])]
    assert min(gaps) >= ttl * 0.9, gaps  # never two refreshes within one TTL


def test_lock_holder_killed_mid_refresh_stalls_others_no_longer_than_the_lock(redis_server, reg, workdir, tmp_path):
    ttl = 2.0
    url = redis_server.url(**{"registry-ttl": "%gs" % ttl})
    reg.publish_bytes("1.0.0", b"one")
    locked_at = kill_lock_holder(url, workdir, reg.url, tmp_path)
    counter = Counter()
    # Each survivor builds its host (cache connection, registry) only once the holder is dead, as before.
    answers, took = ask_together([lambda: poller(url, reg, counter, workdir).latest() for _ in range(5)],
                                 since=locked_at)
    assert answers == ["1.0.0"] * 5
    assert counter.count == 1  # one survivor refreshed once the dead holder's lock expired
    lock = lock_seconds(ttl)
    assert max(took) <= lock + 1.0, took
    assert min(took) >= lock - 0.5, took  # they did wait for the lock: it was held


def test_registry_down_everyone_keeps_the_last_answer_logged_once(redis_server, reg, workdir, caplog):
    ttl = 1.0
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "%gs" % ttl})
    pollers = [poller(url, reg, counter, workdir) for _ in range(5)]
    reg.publish_bytes("1.0.0", b"one")
    assert {p.latest().version for p in pollers} == {"1.0.0"}
    hidden = reg.root.with_name("registry-away")
    os.rename(reg.root, hidden)  # the registry is gone: every refresh fails
    with caplog.at_level(logging.DEBUG, logger="dewy.registry.shared"):
        calls_before = counter.count
        started = time.monotonic()
        while time.monotonic() - started < 2.5 * ttl:
            assert {p.latest().version for p in pollers} == {"1.0.0"}
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        assert 1 <= counter.count - calls_before <= elapsed / ttl + 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "keeps the last answer" in warnings[0], warnings
        os.rename(hidden, reg.root)
        reg.publish_bytes("1.1.0", b"two")
        wait_until(lambda: {p.latest().version for p in pollers} == {"1.1.0"}, 5, "the new release")
    assert len([r for r in caplog.records if "answers again" in r.getMessage()]) == 1


def test_registry_down_and_no_answer_yet_is_an_error_shared_by_all(redis_server, reg, workdir):
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "30s"})
    pollers = [poller(url, reg, counter, workdir) for _ in range(3)]
    reg.root.rmdir()
    for p in pollers:
        with pytest.raises(RegistryError, match="does not exist"):
            p.latest()
    assert counter.count == 1


def test_not_yet_published_is_shared(redis_server, reg, workdir):
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "30s"})
    (reg.root / "v1.0.0").mkdir()  # the version exists, its artifact is still uploading
    for _ in range(3):
        with pytest.raises(NotYetPublished):
            poller(url, reg, counter, workdir).latest()
    assert counter.count == 1


def test_nothing_deployable_is_shared_as_an_answer_not_an_error(redis_server, reg, workdir):
    """An empty registry answered: the fleet shares "nothing deployable" (no outage on any host)."""
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "30s"})
    for _ in range(3):
        with pytest.raises(NothingDeployable, match="0 tags") as info:
            poller(url, reg, counter, workdir).latest()
        assert not isinstance(info.value, NotYetPublished)
    assert counter.count == 1


def test_refused_versions_get_their_own_answer(redis_server, reg, workdir):
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "30s"})
    reg.publish_bytes("1.0.0", b"one")
    reg.publish_bytes("1.1.0", b"two")
    a, b, c = (poller(url, reg, counter, workdir) for _ in range(3))
    assert a.latest().version == "1.1.0"
    assert b.latest(exclude=["1.1.0"]).version == "1.0.0"  # refused here only: not the fleet's answer
    assert c.latest(exclude=("1.1.0",)).version == "1.0.0"
    assert a.latest().version == "1.1.0"
    assert counter.count == 2  # one per distinct set of refused versions


def test_cache_down_asks_the_registry_directly(reg, workdir, caplog):
    counter = Counter()
    url = "redis://127.0.0.1:%d/0?registry-ttl=30s&app=x" % free_port()
    reg.publish_bytes("1.0.0", b"one")
    p = poller(url, reg, counter, workdir)
    with caplog.at_level(logging.INFO, logger="dewy.cache"):
        for _ in range(4):
            assert p.latest().version == "1.0.0"
    assert counter.count == 4
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_consul_shares_the_answer_too(reg, workdir, monkeypatch):
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    counter = Counter()
    reg.publish_bytes("1.0.0", b"one")
    with ConsulStub() as consul:
        url = "consul://%s/dewy?registry-ttl=1s" % consul.address
        pollers = [poller(url, reg, counter, workdir) for _ in range(4)]
        assert {p.latest().version for p in pollers} == {"1.0.0"}
        assert counter.count == 1
        reg.publish_bytes("1.1.0", b"two")
        wait_until(lambda: {p.latest().version for p in pollers} == {"1.1.0"}, 5, "the new release")
        assert counter.count == 2
        locks = [q for m, path, q, _ in consul.requests_seen if m == "PUT" and path.endswith("/lock")]
        assert locks and all(q.get("cas") == "0" or int(q.get("cas", 0)) > 0 for q in locks)


# --- an entry is a hint, never an authority (SECURITY.md, "The shared cache") -------------------------------


def _forge(cache, host, evil_release) -> None:
    """Overwrite the one shared answer through `cache` (another host's client) with evil_release."""
    key = host.key()
    entry = json.loads(cache.get(key))
    entry["release"] = evil_release
    cache.set(key, json.dumps(entry).encode(), ttl=600)


def _evil(tmp_path, version="6.6.6") -> dict:
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(b"evil")
    return {"version": version, "tag": "v" + version, "artifact_name": "app.tar.gz",
            "artifact_url": "file://" + str(path), "sha256": hashlib.sha256(b"evil").hexdigest()}


def test_without_a_key_each_host_checks_a_new_answer_with_the_registry_once(redis_server, reg, workdir,
                                                                            monkeypatch):
    monkeypatch.delenv("DEWY_CACHE_KEY")
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "30s"})
    reg.publish_bytes("1.0.0", b"one")
    pollers = [poller(url, reg, counter, workdir) for _ in range(4)]
    for _ in range(3):
        assert {p.latest().version for p in pollers} == {"1.0.0"}
    assert counter.count == 4  # one refresh + one check by each of the 3 others, never one per poll


@pytest.mark.parametrize("keyed", [False, True])
def test_a_forged_answer_outside_the_store_is_never_fetched(redis_server, reg, workdir, tmp_path, monkeypatch,
                                                            caplog, keyed):
    """Another host (keyed: one holding the fleet key, so the entry is authenticated) names an artifact
    outside the registry's directory: the host deploys the registry's release, with the registry's checksum."""
    if not keyed:
        monkeypatch.delenv("DEWY_CACHE_KEY")
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "30s"})
    reg.publish_files("1.0.0", b"one", {"app.tar.gz.sha256": hashlib.sha256(b"one").hexdigest().encode()})
    host = poller(url, reg, counter, workdir)
    first = host.latest()
    assert first.sha256 == hashlib.sha256(b"one").hexdigest()
    other = cache_pkg.from_url(url, workdir, registry=reg.url)
    _forge(other, host, _evil(tmp_path))
    victim = poller(url, reg, counter, workdir)
    with caplog.at_level(logging.WARNING, logger="dewy.registry.shared"):
        for _ in range(3):
            assert victim.latest() == first
    said = [r.getMessage() for r in caplog.records if "does not publish" in r.getMessage()]
    assert len(said) == 1 and "6.6.6" in said[0], said


def test_a_forged_checksum_of_a_published_release_is_not_taken(redis_server, reg, workdir, monkeypatch):
    monkeypatch.delenv("DEWY_CACHE_KEY")
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "30s"})
    reg.publish_files("1.0.0", b"one", {"app.tar.gz.sha256": hashlib.sha256(b"one").hexdigest().encode()})
    host = poller(url, reg, counter, workdir)
    first = host.latest()
    forged = dict(vars(first), sha256=hashlib.sha256(b"evil").hexdigest())
    _forge(cache_pkg.from_url(url, workdir, registry=reg.url), host, forged)
    assert poller(url, reg, counter, workdir).latest().sha256 == first.sha256


def test_with_a_key_an_unauthenticated_answer_is_a_miss_logged_once(redis_server, reg, workdir, tmp_path, caplog):
    counter = Counter()
    url = redis_server.url(**{"registry-ttl": "30s"})
    reg.publish_bytes("1.0.0", b"one")
    host = poller(url, reg, counter, workdir)
    assert host.latest().version == "1.0.0"
    key = "%s/%s/%s" % (host.cache.prefix, host.cache.app, host.key())
    entry = {"v": 1, "checked": time.time(), "release": _evil(tmp_path), "error": None}
    redis_server.client().set(key, json.dumps(entry))  # written without the key
    with caplog.at_level(logging.WARNING, logger="dewy.cache"):
        for _ in range(3):
            assert poller(url, reg, counter, workdir).latest().version == "1.0.0"
    said = [r.getMessage() for r in caplog.records if "not authenticated by the cache key" in r.getMessage()]
    assert len(said) == 1 and KEY not in said[0], said
    assert redis_server.client().get(key).startswith(b"dewy-hmac-sha256:")  # a key holder wrote it again


def test_owns_is_the_registry_store_only():
    """Registry.owns: what a shared entry may name as it is (with the fleet key)."""
    from dewy.registry.gs import GCSRegistry
    from dewy.registry.ghr import GitHubRegistry
    from dewy.registry.s3 import S3Registry

    file = FileRegistry("file:///srv/rel")
    assert file.owns("file:///srv/rel/v1.0.0/app.tar.gz")
    for url in ("file:///srv/rel/../etc/shadow", "file:///srv/rel/v1/%2E%2E/%2E%2E/etc/shadow", "file:///srv/relx/a",
                "file:///tmp/evil/app.tar.gz", "file:///srv/rel/", "http://srv/rel/v1/a"):
        assert not file.owns(url), url
    s3 = S3Registry("s3://eu-west-1/bucket/releases")
    assert s3.owns("s3://eu-west-1/bucket/releases/v1.0.0/app.tar.gz")
    for url in ("s3://eu-west-1/other/releases/v1/a", "s3://eu-west-1/bucket/else/v1/a",
                "s3://eu-west-1/bucket/releases/v1/a?endpoint=http://evil", "s3://eu-west-1/bucket/releases/../x"):
        assert not s3.owns(url), url
    gs = GCSRegistry("gs://bucket/releases")
    assert gs.owns("gs://bucket/releases/v1.0.0/app.tar.gz") and not gs.owns("gs://evil/releases/v1/a")
    ghr = GitHubRegistry("ghr://owner/repo")
    assert ghr.owns("ghr://owner/repo/tag/v1.0.0/app.tar.gz")
    assert not ghr.owns("ghr://evil/repo/tag/v1.0.0/app.tar.gz") and not ghr.owns("https://evil/app.tar.gz")
