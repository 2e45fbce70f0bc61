"""The gs:// cache against fake-gcs-server (a real HTTP server process): values as objects, expiry in their
metadata, the lock by conditional writes (`ifGenerationMatch=0`, `ifGenerationMatch=<generation>`), outages,
and the shared registry answer over it (bucket_cache_cases.py)."""

from __future__ import annotations

import os
import urllib.parse

import pytest

from bucket_cache_cases import Backend, BucketCacheCases, make
from dewy.cache.gs import GCSCache
from helpers import wait_until


class GCSBackend(Backend):
    """A fresh bucket on the session's fake-gcs-server, found through STORAGE_EMULATOR_HOST."""

    scheme = "gs"
    sdk_roots = ("google",)
    bad_urls = (
        ("gs:///dewy", "gs:// cache needs a bucket as its host"),
        ("gs://Bad_Bucket!/dewy", 'bad bucket name "Bad_Bucket!" in gs:// cache'),
        ("gs://token:secret@bucket/dewy", "credentials in the URL are not supported"),
        ("gs://bucket/a/../b", 'bad value "a/../b" for the key prefix'),
        ("gs://bucket/dewy?registry-ttl=0", 'bad value "0" for query key "registry-ttl"'),
        ("gs://bucket/dewy?endpoint=http://x", 'unknown query key "endpoint" for gs://; supported: app, registry-ttl'),
    )
    # fake-gcs-server ignores ifGenerationMatch on DELETE (and on media downloads); GCS itself honours both.
    honours_conditional_delete = False

    def __init__(self, server, monkeypatch):
        self.server, self.endpoint, self.monkeypatch = server, server.endpoint, monkeypatch
        self.client = server.client()
        self.bucket = server.new_bucket("cache-gs")

    def url(self, prefix: str = "", **query) -> str:
        return self.url_of(self.endpoint, self.bucket, prefix, **query)

    def url_of(self, endpoint: str, bucket: str, prefix: str = "", **query) -> str:
        self.monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)  # the emulator is named by the environment
        return "gs://%s/%s" % (bucket, prefix) + ("?" + self.query(query) if query else "")

    def create_bucket(self, name: str) -> None:
        self.client.create_bucket(name)

    def object(self, key: str):
        blob = self.client.bucket(self.bucket).get_blob(key)
        return None if blob is None else (blob.download_as_bytes(), blob.metadata or {})

    def create_only(self, key: str, data: bytes) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.client.bucket(self.bucket).blob(key).upload_from_string(data, if_generation_match=0, retry=None)
            return True
        except PreconditionFailed as exc:
            assert exc.code == 412
            return False


@pytest.fixture
def store(gcs_server, monkeypatch, tmp_path):
    """GOOGLE_APPLICATION_CREDENTIALS names a missing file: against an emulator the client must be anonymous."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    return GCSBackend(gcs_server, monkeypatch)


class TestGCSCache(BucketCacheCases):
    """The object-store cache behaviour, on GCS."""


def requests_of(cache) -> list:
    """A list that records (method, path, query) of every request the cache's client sends from now on."""
    seen = []

    def hook(response, *args, **kwargs):
        url = urllib.parse.urlsplit(response.request.url)
        seen.append((response.request.method, url.path, dict(urllib.parse.parse_qsl(url.query))))
    cache.handle().client._http.hooks["response"].append(hook)  # the client's requests session
    return seen


def test_the_lock_is_a_create_only_upload_and_its_release_a_conditional_delete(store, tmp_path):
    workdir = str(tmp_path / "work")
    one, two = make(store.url(app="lock"), workdir), make(store.url(app="lock"), workdir)
    sent = requests_of(one)
    assert one.add("lock", b"one", ttl=0.3) is True
    uploads = [q for method, path, q in sent if method == "POST" and "/upload/" in path]
    assert [q.get("ifGenerationMatch") for q in uploads] == ["0"]
    generation = str(store.client.bucket(store.bucket).get_blob("dewy/lock/lock").generation)
    sent_two = requests_of(two)
    wait_until(lambda: two.get("lock") is None, 3, "the lock to expire")
    # Expired: the next host takes it over with an upload conditional on the generation it read.
    assert two.add("lock", b"two", ttl=30) is True
    uploads = [q for method, path, q in sent_two if method == "POST" and "/upload/" in path]
    assert [q.get("ifGenerationMatch") for q in uploads] == ["0", generation]
    del sent_two[:]
    assert two.discard("lock", b"two") is True
    deletes = [q.get("ifGenerationMatch") for method, path, q in sent_two if method == "DELETE"]
    assert len(deletes) == 1 and deletes[0] not in (None, generation)


def test_the_emulator_is_used_anonymously(store, tmp_path):
    from google.auth.credentials import AnonymousCredentials

    cache = make(store.url(), str(tmp_path / "work"))
    cache.set("k", b"v")
    assert isinstance(cache.handle().client._credentials, AnonymousCredentials)
    assert os.environ["STORAGE_EMULATOR_HOST"] == store.endpoint


def test_the_scheme_builds_a_gcs_cache(store, tmp_path):
    cache = make(store.url("a/b", app="x"), str(tmp_path / "work"))
    assert isinstance(cache, GCSCache)
    assert (cache.bucket, cache.prefix, cache.key("k")) == (store.bucket, "a/b", "a/b/x/k")
