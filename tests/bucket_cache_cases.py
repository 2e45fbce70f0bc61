"""Tests every object-store cache (S3, GCS) must pass, run against the real server of each (moto, fake-gcs-server).

A test module subclasses `BucketCacheCases` and provides a `store` fixture: a `Backend` on a fresh bucket
with the environment the SDK needs. The shared registry answer is tested over each store the way
test_registry_shared.py tests it over Redis: pollers (threads, one cache each) against a counting registry.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time

import pytest

from dewy import cache as cache_pkg
from dewy.cache.base import CacheUnavailable
from dewy.cache.bucket import EXPIRES
from dewy.registry.shared import lock_seconds, wrap
from shared_cache_cases import check_blobs_stay_local, check_scan
from helpers import Registry, wait_until
from registry_cases import UnavailableServer
from shared_answer import Counter, CountingRegistry, PollingFleet, ask_together, kill_lock_holder


class Backend:
    """A fresh bucket on a test server, seen by the cache through `url()` and by the test through raw calls."""

    scheme = ""
    sdk_roots: tuple = ()
    bad_urls: tuple = ()  # (url, what the one-line error says)
    honours_conditional_delete = True  # the server refuses a delete at a version that is no longer current

    def url(self, prefix: str = "", **query) -> str:
        """The cache URL of this bucket (prefix: the key prefix; query: registry-ttl=, app=...)."""
        raise NotImplementedError

    def url_of(self, endpoint: str, bucket: str, **query) -> str:
        """A cache URL for another bucket, on the server at endpoint (setting the environment when needed)."""
        raise NotImplementedError

    def create_bucket(self, name: str) -> None:
        """Create a bucket on the session's server."""
        raise NotImplementedError

    def object(self, key: str) -> tuple | None:
        """(bytes, metadata) of an object in the bucket, or None when there is none."""
        raise NotImplementedError

    def create_only(self, key: str, data: bytes) -> bool:
        """The store's own create-only write (the conditional write the lock relies on); False when refused."""
        raise NotImplementedError

    @staticmethod
    def query(pairs: dict) -> str:
        return "&".join("%s=%s" % item for item in pairs.items() if item[1] is not None)


def objects(requests: list) -> list:
    """The requests on objects: google-cloud-storage also looks the bucket up once, in a background thread."""
    return [r for r in requests if not re.match(r"GET /storage/v1/b/[^/?]+(\?|$)", r)]


def make(url, workdir, registry=""):
    return cache_pkg.from_url(url, workdir, registry=registry)


class BucketCacheCases:
    """The behaviour of the object-store caches."""

    @pytest.fixture
    def workdir(self, tmp_path, monkeypatch):
        monkeypatch.delenv("DEWY_CACHEDIR", raising=False)
        return str(tmp_path / "work")

    # --- values ---------------------------------------------------------------------------------

    def test_values_are_objects_under_prefix_and_app(self, store, workdir):
        cache = make(store.url("fleet/dewy", app="shop"), workdir)
        assert cache.shared and (cache.prefix, cache.app) == ("fleet/dewy", "shop")
        cache.set("answer", b"42")
        assert cache.get("answer") == b"42"
        data, meta = store.object("fleet/dewy/shop/answer")
        assert data == b"42" and meta[EXPIRES] == "0"  # no TTL: never expires
        cache.delete("answer")
        assert cache.get("answer") is None and store.object("fleet/dewy/shop/answer") is None

    def test_default_prefix_and_the_app_namespace(self, store, workdir):
        url = store.url()
        a = make(url, workdir, registry="file:///srv/releases/?pre-release=true&artifact=x.tgz")
        b = make(url, workdir, registry="file:///srv/releases?artifact=x.tgz&pre-release=true")
        c = make(url, workdir, registry="file:///srv/other")
        assert a.prefix == "dewy" and a.app == b.app != c.app
        a.set("k", b"v")
        assert b.get("k") == b"v" and c.get("k") is None
        assert store.object("dewy/%s/k" % a.app)[0] == b"v"

    def test_ttl_is_the_objects_metadata_and_reads_after_it_miss(self, store, workdir):
        cache = make(store.url(), workdir)
        cache.get("warm-up")  # make the client now: that is slow, the TTL is short
        before = int(time.time() * 1000)
        cache.set("short", b"v", ttl=1.0)
        assert cache.get("short") == b"v"
        expires = int(store.object("%s/%s/short" % (cache.prefix, cache.app))[1][EXPIRES])
        assert before + 1000 <= expires <= time.time() * 1000 + 1000
        wait_until(lambda: cache.get("short") is None, 3, "the value to expire")
        cache.set("gone", b"v")
        cache.set("gone", b"v", ttl=0)  # a TTL of 0 deletes
        assert cache.get("gone") is None and store.object("%s/%s/gone" % (cache.prefix, cache.app)) is None
        cache.set("forever", b"v", ttl=0.2)
        cache.set("forever", b"w")  # without a ttl: permanent again
        assert store.object("%s/%s/forever" % (cache.prefix, cache.app))[1][EXPIRES] == "0"

    def test_scan_lists_live_values_of_this_app(self, store, workdir):
        check_scan(lambda app: make(store.url(app=app), workdir))

    def test_artifacts_stay_on_local_disk(self, store, workdir):
        cache = make(store.url(), workdir)
        check_blobs_stay_local(cache, workdir, lambda: store.object(
            "%s/%s/1.0.0/app.tar.gz" % (cache.prefix, cache.app)) is not None)

    # --- the lock -------------------------------------------------------------------------------

    def test_the_store_refuses_a_second_create(self, store):
        """What the lock relies on, asked of the server itself: a create-only write loses to an existing object."""
        assert store.create_only("raw/lock", b"first") is True
        assert store.create_only("raw/lock", b"second") is False
        assert store.object("raw/lock")[0] == b"first"

    def test_add_is_exclusive_expires_and_discard_frees_only_our_own(self, store, workdir):
        url = store.url()
        one, two = make(url, workdir), make(url, workdir)
        one.get("warm-up"), two.get("warm-up")  # make both clients now: that is slow, the lock's TTL is short
        assert one.add("lock", b"one", ttl=1.0) is True
        assert two.add("lock", b"two", ttl=1.0) is False
        assert two.discard("lock", b"two") is False  # not ours: stays
        assert one.get("lock") == b"one"
        wait_until(lambda: two.add("lock", b"two", ttl=30), 3, "the lock to expire and be taken over")
        assert one.discard("lock", b"one") is False  # ours expired and is theirs now: not freed
        assert one.get("lock") == b"two"
        assert two.discard("lock", b"two") is True
        assert one.get("lock") is None and store.object("%s/%s/lock" % (one.prefix, one.app)) is None
        assert one.add("lock", b"one", ttl=30) is True  # free again

    def test_one_of_many_racing_hosts_takes_the_lock_and_one_takes_over_an_expired_one(self, store, workdir):
        hosts = [make(store.url(), workdir) for _ in range(8)]
        for host in hosts:
            host.get("warm-up")  # make every client now, so the race is between requests

        def race(ttl):
            barrier, won = threading.Barrier(len(hosts)), []

            def take(i):
                barrier.wait()
                if hosts[i].add("lock", b"host-%d" % i, ttl):
                    won.append(i)
            threads = [threading.Thread(target=take, args=(i,)) for i in range(len(hosts))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
            return won

        first = race(30)
        assert len(first) == 1, first
        assert hosts[0].get("lock") == b"host-%d" % first[0]
        hosts[0].set("lock", b"a dead holder's", ttl=0.001)  # as if its holder died and it expired
        wait_until(lambda: hosts[0].get("lock") is None, 3, "the lock to expire")
        second = race(30)  # all find it expired: exactly one takes it over
        assert len(second) == 1, second
        assert hosts[0].get("lock") == b"host-%d" % second[0]

    def test_a_stale_version_loses_the_takeover(self, store, workdir):
        """Two hosts read the same expired lock; the one that writes second holds a version that is gone."""
        cache = make(store.url(app="stale"), workdir)
        key = "dewy/stale/lock"
        cache.set("lock", b"expired", ttl=0.001)
        entry = cache._read(key)
        assert cache._write(key, b"first", 1, entry.version) is True
        assert cache._write(key, b"second", 1, entry.version) is False
        assert store.object(key)[0] == b"first"
        if store.honours_conditional_delete:
            assert cache._remove(key, entry.version) is False  # a release at the old version frees nothing
            assert store.object(key)[0] == b"first"

    # --- outages --------------------------------------------------------------------------------

    def test_store_down_is_logged_once_and_fails_fast(self, store, workdir, caplog):
        with UnavailableServer() as down:
            cache = make(store.url_of(down.endpoint, "some-bucket"), workdir)
            with caplog.at_level(logging.INFO, logger="dewy.cache"):
                assert cache.get("k") is None       # a miss, not an exception: deploys go on
                first = len(objects(down.requests))
                for _ in range(3):
                    assert cache.get("k") is None
                    cache.set("k", b"v")            # nothing happens
                    cache.delete("k")
                with pytest.raises(CacheUnavailable, match="503"):
                    cache.add("lock", b"x", 1)      # a lock cannot be taken: the caller asks the registry
            assert 1 <= first <= 2 and len(objects(down.requests)) == first, down.requests  # left alone for RETRY s
        assert [r.levelname for r in caplog.records] == ["ERROR"], caplog.text
        assert "going without it" in caplog.text

    def test_a_missing_bucket_is_an_outage_until_it_exists(self, store, workdir, caplog, monkeypatch):
        import dewy.cache.remote as remote

        monkeypatch.setattr(remote, "RETRY", 0.0)  # look again at every call, to see it come back at once
        bucket = "not-yet-" + store.bucket[-12:]
        cache = make(store.url_of(store.endpoint, bucket), workdir)
        with caplog.at_level(logging.INFO, logger="dewy.cache"):
            for _ in range(3):
                cache.set("k", b"v")
                with pytest.raises(CacheUnavailable) as info:
                    cache.add("lock", b"x", 1)
            assert bucket in str(info.value) and "\n" not in str(info.value)
            assert [r.levelname for r in caplog.records] == ["ERROR"], caplog.text
            store.create_bucket(bucket)
            cache.set("k", b"back")
            assert cache.get("k") == b"back"
        assert "answers again" in caplog.records[-1].getMessage()

    def test_validating_the_url_loads_no_sdk(self, store):
        code = ("import json, sys; from dewy import cache; cache.validate_url(%r); import dewy.cache.%s; "
                "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))"
                % (store.url(**{"registry-ttl": "30s"}), store.scheme, store.sdk_roots))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == []

    def test_bad_urls_are_one_line_errors_without_secrets(self, store):
        assert store.bad_urls
        for url, message in store.bad_urls:
            with pytest.raises(ValueError) as info:
                cache_pkg.validate_url(url)
            assert message in str(info.value), (url, str(info.value))
            assert "\n" not in str(info.value) and "secret" not in str(info.value)

    def test_registry_ttl_is_read(self, store, workdir):
        assert make(store.url(**{"registry-ttl": "1m30s"}), workdir).registry_ttl == 90.0
        assert make(store.url(), workdir).registry_ttl is None

    # --- the shared registry answer over this store ---------------------------------------------

    @pytest.fixture
    def keyed(self, monkeypatch):
        """The hosts hold the fleet key (DEWY_CACHE_KEY): an answer one writes is authenticated and the others
        take it as it is, one upstream call per TTL (without it each host checks a new answer once)."""
        monkeypatch.setenv("DEWY_CACHE_KEY", "fleet-key-for-tests")

    @staticmethod
    def pollers(url, reg, counter, workdir, n):
        """n hosts: each its own cache (and client, made now), registry and wrapper."""
        made = []
        for _ in range(n):
            cache = make(url, workdir, registry=reg.url)
            cache.get("warm-up")
            made.append(wrap(CountingRegistry(reg.url, counter, cache=cache), cache))
        return made

    def test_shared_answer_one_upstream_call_per_ttl_for_the_fleet(self, store, workdir, tmp_path, keyed):
        """10 pollers, registry-ttl=1s, ~4 s, two releases published meanwhile."""
        ttl, hosts = 1.0, 10
        reg, counter = Registry(tmp_path), Counter()
        reg.publish_bytes("1.0.0", b"one")
        pollers = self.pollers(store.url(**{"registry-ttl": "%gs" % ttl}), reg, counter, workdir, hosts)
        with PollingFleet(pollers) as fleet:
            time.sleep(0.8)
            reg.publish_bytes("1.1.0", b"two")
            time.sleep(0.8)
            reg.publish_bytes("1.2.0", b"three")
            wait_until(lambda: fleet.last == ["1.2.0"] * hosts, 10, "every host on the newest release",
                       lambda: repr(fleet.last))
        elapsed, errors = fleet.elapsed, fleet.errors
        assert not errors, errors[:3]
        assert 3 <= counter.count <= elapsed / ttl + 1, (counter.count, elapsed)
        gaps = [b - a for a, b in zip(counter.calls, counter.calls[1:])]
        assert min(gaps) >= ttl * 0.9, gaps  # never two refreshes within one TTL

    def test_shared_answer_survives_a_lock_holder_killed_mid_refresh(self, store, workdir, tmp_path, keyed):
        ttl = 1.0
        url = store.url(**{"registry-ttl": "%gs" % ttl})
        reg, counter = Registry(tmp_path), Counter()
        reg.publish_bytes("1.0.0", b"one")
        survivors = self.pollers(url, reg, counter, workdir, 5)
        locked_at = kill_lock_holder(url, workdir, reg.url, tmp_path)
        answers, took = ask_together([p.latest for p in survivors], since=locked_at)
        assert answers == ["1.0.0"] * 5
        assert counter.count == 1  # one survivor refreshed once the dead holder's lock expired
        lock = lock_seconds(ttl)
        assert lock - 0.5 <= min(took) and max(took) <= lock + 1.0, took  # waited for the lock, not longer

    def test_shared_answer_with_the_store_down_asks_the_registry(self, store, workdir, tmp_path):
        reg, counter = Registry(tmp_path), Counter()
        reg.publish_bytes("1.0.0", b"one")
        with UnavailableServer() as down:
            url = store.url_of(down.endpoint, "some-bucket", **{"registry-ttl": "30s"})
            p = self.pollers(url, reg, counter, workdir, 1)[0]
            for _ in range(3):
                assert p.latest().version == "1.0.0"
        assert counter.count == 3
