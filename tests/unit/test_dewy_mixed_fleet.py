"""A fleet moving from Dewy (Go) to dewy shares one S3 cache: Dewy's shared registry answer
(`<prefix>/registry-cache/<sha256(canonical URL|GOOS|GOARCH)[:8] hex>.json`, registry/cached.go) and dewy's
(`<prefix>/<app>/registry/<hash>`) live side by side and never touch each other. They do not share one answer on
purpose (README "Coming from Dewy"): Dewy's entry holds one CurrentResponse chosen by Dewy's rules (newest
overall, then the slot checked), dewy's the newest release of this host's slot minus its refused versions."""

from __future__ import annotations

import hashlib
import json
import urllib.parse

from dewy import cache as cache_pkg
from dewy.registry.file import FileRegistry
from dewy.registry.shared import wrap
from helpers import Registry
from servers import S3Store
from unit.test_registry_s3 import aws_env  # noqa: F401 - the fixture: test credentials only


def dewy_go_key(registry_url: str, goos: str = "linux", goarch: str = "amd64") -> str:
    """Dewy's cacheKeyForScope: the query sorted by key (url.Values.Encode), then sha256 of URL|GOOS|GOARCH."""
    parts = urllib.parse.urlsplit(registry_url)
    query = urllib.parse.urlencode(sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))
    canonical = urllib.parse.urlunsplit(parts._replace(query=query))
    digest = hashlib.sha256(("%s|%s|%s" % (canonical, goos, goarch)).encode()).hexdigest()
    return "registry-cache/%s.json" % digest[:16]


def test_dewy_and_dewy_go_answers_coexist_in_one_cache(s3_server, aws_env, tmp_path):  # noqa: F811
    reg = Registry(tmp_path)
    reg.publish_bytes("1.1.0", b"new")
    store = S3Store(s3_server, hint="mixed", prefix="dewy")
    # What a Dewy host wrote for the same registry, in exactly its JSON shape (cachedEntry/CurrentResponse).
    dewy_entry = json.dumps({
        "response": {"ID": "0b9f6c1e-3f47-4c1d-9c66-2f0c1ab2d4e1", "Tag": "v1.0.0",
                     "ArtifactURL": "file://%s/v1.0.0/app.tar.gz" % reg.root,
                     "CreatedAt": "2026-11-26T06:50:12Z", "Slot": ""},
        "fetched_at": "2099-01-01T00:00:00Z", "locked_at": "0001-01-01T00:00:00Z"}).encode()
    key = dewy_go_key(reg.url)
    store.put(key, dewy_entry)

    cache = cache_pkg.from_url(store.url("registry-ttl=30s"), str(tmp_path / "w"), registry=reg.url)
    shared = wrap(FileRegistry(reg.url, cache=cache), cache)
    assert shared.latest().version == "1.1.0"  # dewy's own answer, not Dewy's (fresh until 2099) v1.0.0
    assert shared.latest().version == "1.1.0"
    assert store.get(key) == dewy_entry  # Dewy's entry untouched: a Dewy host still reads what it wrote
    ours = [n for n in store.names() if n != key]
    assert ours and all(not n.startswith("registry-cache/") for n in ours), ours
