"""The s3:// registry and artifact store against moto's S3 server (a real HTTP server process)."""

from __future__ import annotations

import os
import re
import time

import pytest

from dewy import artifact, registry
from dewy.artifact import ArtifactError
from dewy.demo.demo import free_port
from dewy.registry import RegistryError
from registry_cases import BucketRegistryCases, UnavailableServer, config_error, fetch, sdk_modules_loaded
from servers import AWS_TEST_ENV, CuttingProxy, S3Store


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """boto3's standard chain finds the test credentials in the environment, and nothing else."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def store(s3_server, aws_env, request):
    """A fresh bucket on the session's moto server."""
    return S3Store(s3_server, hint="s3-" + request.node.name[5:25])


class TestS3Registry(BucketRegistryCases):
    """The shared bucket-registry behaviour, on S3."""


def test_endpoint_from_aws_endpoint_url(store, monkeypatch):
    store.put("v1.0.0/app.tar.gz", b"via the environment")
    monkeypatch.setenv("AWS_ENDPOINT_URL", store.server.endpoint)
    url = "s3://%s/%s/%s?artifact=app.tar.gz" % (store.region, store.bucket, store.prefix)
    release = registry.from_url(url).latest()
    # Like Dewy, the artifact URL names only an endpoint the registry URL named; the env var does the rest.
    assert release.artifact_url == "s3://%s/%s/releases/v1.0.0/app.tar.gz" % (store.region, store.bucket)
    assert fetch(release.artifact_url) == b"via the environment"


def test_credentials_come_from_boto3s_chain(store, monkeypatch, tmp_path):
    store.put("v1.0.0/app.tar.gz", b"x")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(RegistryError, match="no AWS credentials found") as info:
        registry.from_url(store.url("artifact=app.tar.gz")).latest()
    assert "\n" not in str(info.value)
    # A profile in the shared credentials file is part of the same chain.
    credentials = tmp_path / "aws-credentials"
    credentials.write_text("[dewy]\naws_access_key_id = from-a-file\naws_secret_access_key = also-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "dewy")
    assert registry.from_url(store.url("artifact=app.tar.gz")).latest().tag == "v1.0.0"


def test_a_stopped_server_is_a_quick_one_line_registry_error(store):
    dead = "http://127.0.0.1:%d" % free_port()
    reg = registry.from_url("s3://us-east-1/%s/releases?endpoint=%s" % (store.bucket, dead))
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        reg.latest()
    message = str(info.value)
    # No retry-with-sleep inside a poll: the poller's own backoff is the retry.
    assert time.monotonic() - started < 5
    assert "cannot connect to %s" % dead in message and "\n" not in message, message
    assert AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"] not in message
    with pytest.raises(ArtifactError, match="cannot download s3://us-east-1/%s/x.tar.gz: cannot connect" % store.bucket):
        fetch("s3://us-east-1/%s/x.tar.gz?endpoint=%s" % (store.bucket, dead))


def test_a_missing_artifact_object_is_an_artifact_error(store):
    with pytest.raises(ArtifactError, match=r"NoSuchKey.*404"):
        fetch("s3://%s/%s/releases/v1/none.tar.gz?endpoint=%s" % (store.region, store.bucket, store.server.endpoint))


@pytest.mark.parametrize("url, message", [
    ("s3:///bucket/releases", "needs a region"),
    ("s3://us-east-1", "needs a bucket"),
    ("s3://us-east-1/", "needs a bucket"),
    ("s3://us%20east/bucket", "bad region"),
    ("s3://key:secret@us-east-1/bucket", "bad region"),
    ("s3://us-east-1/b", "bad bucket name"),
    ("s3://us-east-1/bucket?endpoint=ftp://127.0.0.1:21", 'bad value "ftp://127.0.0.1:21" for query key "endpoint"'),
    ("s3://us-east-1/bucket?endpoint=127.0.0.1:9000", "for query key \"endpoint\""),
    ("s3://us-east-1/bucket?endpoint=http://127.0.0.1:port", "for query key \"endpoint\""),
    ("s3://us-east-1/bucket?region=eu%20west", "bad region"),
    ("s3://us-east-1/bucket?pre-release=maybe", 'bad value "maybe" for query key "pre-release"'),
])
def test_bad_registry_urls_are_config_errors(url, message):
    config_error(registry.validate_url, url, message)


@pytest.mark.parametrize("url, message", [
    ("s3://us-east-1/bucket", "needs an object key"),
    ("s3://us-east-1/bucket/", "needs an object key"),
    ("s3:///bucket/key", "needs a region"),
    ("s3://us-east-1/bucket/key?endpoint=nope", "for query key \"endpoint\""),
])
def test_bad_artifact_urls_are_refused(url, message):
    config_error(artifact.validate_url, url, message)


def test_region_query_overrides_the_host_as_in_dewy(store):
    """Dewy decodes ?region= after taking the host: the query wins (registry, cache and artifact URLs alike)."""
    from dewy import cache

    reg = registry.from_url("s3://us-east-1/bucket/releases?region=eu-west-1")
    assert (reg.region, reg.bucket, reg.prefix.strip("/")) == ("eu-west-1", "bucket", "releases")
    assert cache.from_url("s3://us-east-1/bucket/dewy?region=eu-west-2", "/tmp").region == "eu-west-2"
    artifact.validate_url("s3://us-east-1/bucket/v1/app.tar.gz?region=eu-west-1")
    # and it really is the region asked: the store answers the listing under its own region
    store.put("v1.0.0/app.tar.gz", b"x")
    url = "s3://ap-south-1/%s/releases?region=%s&endpoint=%s&artifact=app.tar.gz" % (
        store.bucket, store.region, store.server.endpoint)
    assert registry.from_url(url).latest().version == "1.0.0"


def test_importing_and_validating_does_not_load_boto3():
    assert sdk_modules_loaded("s3", "s3://eu-west-1/bucket/releases?endpoint=http://127.0.0.1:9",
                              "s3://eu-west-1/bucket/v1/app.tar.gz", ("boto3", "botocore", "s3transfer")) == []


def test_a_broken_download_resumes_with_a_range_request(store):
    data = os.urandom(3 << 20)
    store.put("v1.0.0/app.tar.gz", data)
    with CuttingProxy(store.server.port, trigger=b"/releases/v1.0.0/app.tar.gz", cut_after=1 << 20) as proxy:
        got = fetch("s3://%s/%s/releases/v1.0.0/app.tar.gz?endpoint=%s" % (store.region, store.bucket, proxy.endpoint))
        assert proxy.cut.is_set()
    assert got == data
    gets = [head for head in proxy.requests if head.startswith("get ") and "app.tar.gz" in head]
    assert len(gets) == 2, gets
    resumed = re.search(r"^range: bytes=(\d+)-$", gets[1], re.M)
    assert resumed and 0 < int(resumed.group(1)) < 1 << 20, gets[1]
    assert re.search(r"^if-match: \S+", gets[1], re.M), "the resumed range is not pinned to the same object"


def test_a_5xx_is_a_registry_error_without_retries_inside_the_poll(aws_env):
    with UnavailableServer() as server:
        reg = registry.from_url("s3://us-east-1/bucket/releases?endpoint=" + server.endpoint)
        with pytest.raises(RegistryError) as info:
            reg.latest()
    assert str(info.value) == ("s3://us-east-1/bucket/releases/: cannot list versions: ServiceUnavailable: "
                               "Service is unable to handle request. (HTTP 503)")
    assert len(server.requests) == 1, server.requests  # the poller's backoff is the retry
