"""The s3:// cache against moto's S3 server (a real HTTP server process): values as objects, expiry in
their metadata, the lock by conditional writes (`If-None-Match: *`, `If-Match: <ETag>`), outages, and the
shared registry answer over it (bucket_cache_cases.py)."""

from __future__ import annotations

import pytest

from bucket_cache_cases import Backend, BucketCacheCases, make
from dewy.cache.s3 import S3Cache
from helpers import wait_until
from unit.test_registry_s3 import aws_env  # noqa: F401 - the fixture: test credentials only


class S3Backend(Backend):
    """A fresh bucket on the session's moto server; the cache URL names the endpoint with ?endpoint=."""

    scheme = "s3"
    sdk_roots = ("boto3", "botocore")
    bad_urls = (
        ("s3:///bucket/dewy", "s3:// cache needs a region as its host"),
        ("s3://eu-west-1", "s3:// cache needs a bucket after the region"),
        ("s3://eu-west-1/b!d/dewy", 'bad bucket name "b!d" in s3:// cache'),
        ("s3://key:secret@eu-west-1/bucket", "credentials in the URL are not supported"),
        ("s3://eu-west-1/bucket/a/../b", 'bad value "a/../b" for the key prefix'),
        ("s3://eu-west-1/bucket?endpoint=ftp://x", 'bad value "ftp://x" for query key "endpoint"'),
        ("s3://eu-west-1/bucket?registry-ttl=soon", 'bad value "soon" for query key "registry-ttl"'),
        ("s3://eu-west-1/bucket?prefix=x", 'unknown query key "prefix" for s3://; supported: app, endpoint, region, registry-ttl'),
    )

    def __init__(self, server):
        self.server, self.endpoint = server, server.endpoint
        self.client = server.client()
        self.bucket = server.new_bucket("cache-s3")

    def url(self, prefix: str = "", **query) -> str:
        return self.url_of(self.endpoint, self.bucket, prefix, **query)

    def url_of(self, endpoint: str, bucket: str, prefix: str = "", **query) -> str:
        return "s3://us-east-1/%s/%s?%s" % (bucket, prefix, self.query(dict(endpoint=endpoint, **query)))

    def create_bucket(self, name: str) -> None:
        self.client.create_bucket(Bucket=name)

    def object(self, key: str):
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.NoSuchKey:
            return None
        return response["Body"].read(), response["Metadata"]

    def create_only(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "PreconditionFailed"
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 412
            return False


@pytest.fixture
def store(s3_server, aws_env):
    """A fresh bucket; boto3's standard chain finds the test credentials in the environment, and nothing else."""
    return S3Backend(s3_server)


class TestS3Cache(BucketCacheCases):
    """The object-store cache behaviour, on S3."""


def requests_of(cache) -> list:
    """A list that records (operation, HTTP headers) of every request the cache's client sends from now on."""
    seen = []

    def record(request, event_name, **kw):
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        seen.append((event_name.split(".")[-1], headers))
    cache.client().meta.events.register("before-send.s3", record)
    return seen


def test_the_lock_is_a_conditional_put_and_its_release_a_conditional_delete(store, tmp_path):
    workdir = str(tmp_path / "work")
    one, two = make(store.url(app="lock"), workdir), make(store.url(app="lock"), workdir)
    sent = requests_of(one)
    assert one.add("lock", b"one", ttl=0.3) is True
    puts = [h for op, h in sent if op == "PutObject"]
    assert [h.get("If-None-Match") for h in puts] == ["*"]
    etag = store.client.head_object(Bucket=store.bucket, Key="dewy/lock/lock")["ETag"]
    # Expired: the next host takes it over with a write conditional on the ETag it read.
    sent_two = requests_of(two)
    wait_until(lambda: two.get("lock") is None, 3, "the lock to expire")
    assert two.add("lock", b"two", ttl=30) is True
    puts = [h for op, h in sent_two if op == "PutObject"]
    assert [(h.get("If-None-Match"), h.get("If-Match")) for h in puts] == [("*", None), (None, etag)]
    del sent_two[:]
    assert two.discard("lock", b"two") is True
    new_etag = [h.get("If-Match") for op, h in sent_two if op == "DeleteObject"]
    assert len(new_etag) == 1 and new_etag[0] not in (None, etag)


def test_no_credentials_is_an_outage_with_a_clear_reason(store, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cache = make(store.url(), str(tmp_path / "work"))
    assert cache.get("k") is None
    assert "no AWS credentials found" in caplog.text and "testing-secret" not in caplog.text


def test_endpoint_from_the_environment(store, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", store.endpoint)
    cache = make("s3://us-east-1/%s/team?app=env" % store.bucket, str(tmp_path / "work"))
    cache.set("k", b"through AWS_ENDPOINT_URL")
    assert store.object("team/env/k")[0] == b"through AWS_ENDPOINT_URL"


def test_the_scheme_builds_an_s3_cache(store, tmp_path):
    cache = make(store.url("a/b", app="x"), str(tmp_path / "work"))
    assert isinstance(cache, S3Cache) and (cache.bucket, cache.prefix, cache.key("k")) == (store.bucket, "a/b", "a/b/x/k")
