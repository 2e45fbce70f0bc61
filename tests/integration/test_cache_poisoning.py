"""Trust boundaries of the shared cache: whoever can write it (another host, an app that has its credentials)
overwrites the shared registry answer (`?registry-ttl=`) of a real Redis (valkey-server) or of the Consul
stand-in with a release the registry never published, pointing at an artifact outside the registry's store
with that artifact's own checksum. The host keeps serving the registry's version (SECURITY.md, "The shared
cache"); with `DEWY_CACHE_KEY` an unauthenticated entry is not even read, and a legitimate fleet still
deploys through the shared answer."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request

import pytest

from consulstub import ConsulStub
from helpers import Registry, audit_entries, wait_until


def _evil_release(tmp_path) -> dict:
    """A release 6.6.6 built aside (outside the registry), as an attacker would describe it."""
    evil = Registry(tmp_path / "evil")
    path = evil.publish("6.6.6") / Registry.ARTIFACT
    return {"version": "6.6.6", "tag": "v6.6.6", "artifact_name": Registry.ARTIFACT,
            "artifact_url": "file://" + str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "checksum_source": "checksums.txt"}


class RedisStore:
    """The shared answer in a real valkey-server, read and overwritten through redis-py."""

    def __init__(self, server):
        self.server = server
        self.client = server.client()

    def url(self, app: str) -> str:
        return self.server.url(app=app, **{"registry-ttl": "10m"})

    def answers(self, app: str) -> list:
        return [k.decode() for k in self.client.keys("dewy/%s/registry/*" % app) if not k.endswith(b"/lock")]

    def read(self, key: str) -> bytes:
        return self.client.get(key)

    def write(self, key: str, value: bytes) -> None:
        self.client.set(key, value, keepttl=True)


class ConsulStore:
    """The shared answer in the Consul stand-in, read and overwritten over its HTTP KV API."""

    def __init__(self, stub):
        self.stub = stub

    def url(self, app: str) -> str:
        return "consul://%s/dewy?app=%s&registry-ttl=10m" % (self.stub.address, app)

    def _kv(self, key: str, method: str = "GET", data: bytes | None = None, query: str = ""):
        request = urllib.request.Request("http://%s/v1/kv/%s%s" % (self.stub.address, key, query), data=data,
                                         method=method)
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read() or b"null")

    def answers(self, app: str) -> list:
        keys = self._kv("dewy/%s/registry/" % app, query="?keys") if self._any(app) else []
        return [k for k in keys if not k.endswith("/lock")]

    def _any(self, app: str) -> bool:
        return any(k.startswith("dewy/%s/registry/" % app) for k in self.stub.kv)

    def read(self, key: str) -> bytes:
        return base64.b64decode(self._kv(key)[0]["Value"])

    def write(self, key: str, value: bytes) -> None:
        flags = self._kv(key)[0]["Flags"]  # the entry's expiry, kept
        self._kv(key, "PUT", value, "?flags=%d" % flags)


@pytest.fixture(params=["redis", "consul"])
def store(request, redis_server):
    if request.param == "redis":
        yield RedisStore(redis_server)
    else:
        with ConsulStub() as stub:
            yield ConsulStore(stub)


def _poisoned(store, app: str, tmp_path) -> tuple:
    """Overwrite the app's one shared answer with the evil release; returns (key, evil release)."""
    keys = wait_until(lambda: store.answers(app), 10, "the shared registry answer to be written")
    assert len(keys) == 1, keys
    raw = store.read(keys[0])
    entry = json.loads(raw.partition(b"\n")[2] if raw.startswith(b"dewy-hmac-sha256:") else raw)
    evil = _evil_release(tmp_path)
    entry["release"] = evil
    store.write(keys[0], json.dumps(entry).encode())
    return keys[0], evil


def _polls(master, count: int) -> None:
    """Wait until the poller has polled `count` more times (its status's last_poll moved on)."""
    for _ in range(count):
        before = (master.status() or {}).get("last_poll")
        master.wait_for(lambda s: s.get("last_poll") != before, 20, "the next poll")


def test_a_poisoned_shared_answer_never_deploys_what_the_registry_did_not_publish(store, registry, hosts,
                                                                                   tmp_path):
    app = "poison-%s" % type(store).__name__.lower()
    registry.publish("1.0.0")
    master = hosts(1, cache=store.url(app), interval="0.3s")[0].start(wait_version="1.0.0")
    _, evil = _poisoned(store, app, tmp_path)
    _polls(master, 3)
    master.wait_version("1.0.0", timeout=5)  # still serving what the registry publishes
    assert [e for e in audit_entries(master.workdir) if e.get("version") == "6.6.6"] == []
    assert not list((master.workdir / "releases").glob("*/evil*"))
    log = master.log_text()
    assert log.count("which the registry") == 1, log[-3000:]  # said once, not at every poll
    assert "6.6.6" in log and evil["artifact_url"] in log


def test_with_a_cache_key_unauthenticated_entries_are_ignored_and_the_fleet_still_shares(store, registry, hosts,
                                                                                        tmp_path):
    app = "keyed-%s" % type(store).__name__.lower()
    env = {"DEWY_CACHE_KEY": "fleet-secret-0123456789"}
    registry.publish("1.0.0")
    fleet = hosts(2, cache=store.url(app), interval="0.3s", env=env)
    for master in fleet:
        master.start(wait_version="1.0.0")
    key, _ = _poisoned(store, app, tmp_path)
    said = 0
    for master in fleet:
        _polls(master, 3)
        master.wait_version("1.0.0", timeout=5)
        log = master.log_text()
        # Said once by the host that read it first (it then rewrites the answer, so the other may never see it).
        assert log.count("is not authenticated by the cache key") <= 1, log[-3000:]
        said += log.count("is not authenticated by the cache key")
        assert env["DEWY_CACHE_KEY"] not in log
    assert said >= 1
    # A key holder found no (authenticated) answer, asked the registry and wrote one the fleet trusts again.
    healed = store.read(key)
    assert healed.startswith(b"dewy-hmac-sha256:"), healed[:200]
    assert json.loads(healed.partition(b"\n")[2])["release"]["version"] == "1.0.0"
