"""Checks every shared cache (Redis, Consul, S3, GCS) must pass, run by each cache's tests against its real server.

`check_blobs_stay_local(cache, workdir, on_server)`: artifacts live on this host's disk, never on the server.
`check_scan(make)`: fleet rollouts' listing (dewy/fleet.py); `make(app)` returns a cache of the store for that app.
"""

from dewy.fleet import Fleet
from helpers import wait_until


def check_blobs_stay_local(cache, workdir, on_server) -> None:
    """A blob written through the cache is a file under workdir, read back whole, never on the server
    (`on_server()`: whether the server holds anything of it), and gone after delete."""
    with cache.open_write("1.0.0/app.tar.gz") as out:
        out.write(b"artifact bytes")
    path = cache.path("1.0.0/app.tar.gz")
    assert path is not None and path.startswith(str(workdir))
    with cache.open_read("1.0.0/app.tar.gz") as fh:
        assert fh.read() == b"artifact bytes"
    assert not on_server()
    cache.delete("1.0.0/app.tar.gz")
    assert cache.open_read("1.0.0/app.tar.gz") is None


def check_scan(make) -> None:
    """scan(prefix) lists the live values under prefix, in this app's namespace only, and skips expired ones."""
    cache, other = make("shop"), make("blog")
    assert cache.scan("fleet/hosts/") == {}
    cache.set("fleet/hosts/web-1", b"one")
    cache.set("fleet/hosts/web-2", b"two", ttl=60)
    cache.set("fleet/hosts/web-3", b"three", ttl=0.5)
    cache.set("fleet/refused/1.0.0", b"no")
    other.set("fleet/hosts/db-1", b"other app")
    assert cache.scan("fleet/hosts/")["fleet/hosts/web-2"] == b"two"
    wait_until(lambda: "fleet/hosts/web-3" not in cache.scan("fleet/hosts/"), 5, "the short-lived value to expire")
    assert cache.scan("fleet/hosts/") == {"fleet/hosts/web-1": b"one", "fleet/hosts/web-2": b"two"}
    assert other.scan("fleet/") == {"fleet/hosts/db-1": b"other app"}
    # Two hosts' Fleet objects on that store agree on one rollout and one refusal.
    a, b = Fleet(cache, "web-1", (50,), 0), Fleet(make("shop"), "web-2", (50,), 0)
    a.heartbeat("1.0.0", "serving", 1.0, ttl=60)
    b.heartbeat("1.0.0", "serving", 1.0, ttl=60)
    assert set(a.hosts()) >= {"web-1", "web-2"}
    assert a.rollout("2.0.0") == b.rollout("2.0.0")
    assert b.refuse("2.0.0", "crashed") is True and a.refuse("2.0.0", "crashed too") is False
    assert a.refusals()["2.0.0"]["host"] == "web-2"
