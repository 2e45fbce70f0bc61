"""The gs:// registry and artifact store against fake-gcs-server (a real HTTP server process)."""

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
from servers import CuttingProxy, FakeGCSServer, GCSStore


@pytest.fixture
def store(gcs_server, monkeypatch, tmp_path, request):
    """A fresh bucket on the session's fake-gcs-server, found through STORAGE_EMULATOR_HOST.

    GOOGLE_APPLICATION_CREDENTIALS names a file that does not exist: against an emulator the client
    must be anonymous and never look for application-default credentials.
    """
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    return GCSStore(gcs_server, hint="gs-" + request.node.name[5:25])


class TestGCSRegistry(BucketRegistryCases):
    """The shared bucket-registry behaviour, on GCS."""


def test_the_emulator_is_used_anonymously(store):
    from google.auth.credentials import AnonymousCredentials

    store.put("v1.0.0/app.tar.gz", b"anonymous")
    reg = registry.from_url(store.url("artifact=app.tar.gz"))
    release = reg.latest()
    assert isinstance(reg.client()._credentials, AnonymousCredentials)
    fetcher = artifact.from_url(release.artifact_url)
    assert release.artifact_url == "gs://%s/releases/v1.0.0/app.tar.gz" % store.bucket
    assert fetch(release.artifact_url) == b"anonymous"
    assert isinstance(fetcher.client()._credentials, AnonymousCredentials)


def test_a_stopped_server_is_a_quick_one_line_registry_error(store, monkeypatch):
    dead = "127.0.0.1:%d" % free_port()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://" + dead)
    reg = registry.from_url(store.url())
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        reg.latest()
    message = str(info.value)
    # No retry-with-sleep inside a poll: the poller's own backoff is the retry.
    assert time.monotonic() - started < 5
    assert message == "gs://%s/releases/: cannot list versions: cannot connect to %s" % (store.bucket, dead)


def test_a_missing_artifact_object_is_an_artifact_error(store):
    with pytest.raises(ArtifactError, match="cannot download gs://%s/releases/none.tar.gz: no such object"
                       % store.bucket):
        fetch("gs://%s/releases/none.tar.gz" % store.bucket)


@pytest.mark.parametrize("url, message", [
    ("gs:///releases", "needs a bucket"),
    ("gs://", "needs a bucket"),
    ("gs://My_Bucket/releases", "bad bucket name"),
    ("gs://ab", "bad bucket name"),
    ("gs://key:secret@bucket/releases", "credentials in the URL are not supported"),
    ("gs://bucket/releases?endpoint=http://127.0.0.1:1", 'unknown query key "endpoint"'),
    ("gs://bucket/releases?calver=QQ", 'query key "calver"'),
])
def test_bad_registry_urls_are_config_errors(url, message):
    config_error(registry.validate_url, url, message)


@pytest.mark.parametrize("url, message", [
    ("gs://bucket", "needs an object name"),
    ("gs://bucket/", "needs an object name"),
    ("gs:///object", "needs a bucket"),
])
def test_bad_artifact_urls_are_refused(url, message):
    config_error(artifact.validate_url, url, message)


def test_importing_and_validating_does_not_load_google_cloud():
    assert sdk_modules_loaded("gs", "gs://bucket/releases?artifact=app.tar.gz", "gs://bucket/v1/app.tar.gz",
                              ("google", "requests")) == []


def test_a_broken_download_resumes_from_where_it_broke(monkeypatch, tmp_path):
    data = os.urandom(3 << 20)
    # A server of its own whose download links point at the proxy (fake-gcs-server's -external-url).
    with CuttingProxy(None, trigger=b"alt=media", cut_after=1 << 20) as proxy:
        with FakeGCSServer(external_url=proxy.endpoint) as server:
            proxy.upstream_port = server.port
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)
            store = GCSStore(server, hint="resume")
            store.put("v1.0.0/app.tar.gz", data)
            got = fetch("gs://%s/releases/v1.0.0/app.tar.gz" % store.bucket)
            assert proxy.cut.is_set()
    assert got == data
    downloads = [head for head in proxy.requests if head.startswith("get ") and "alt=media" in head]
    starts = [int(m.group(1)) for m in (re.search(r"^range: bytes=(\d+)-", h, re.M) for h in downloads) if m]
    # After the cut, the next request starts where the bytes stopped, not at 0.
    assert starts[0] == 0 and 0 < starts[1] < 1 << 20, downloads
    assert all("ifgenerationmatch=" in head or "generation=" in head for head in downloads[1:]), downloads


def test_a_5xx_is_a_registry_error_without_retries_inside_the_poll(monkeypatch):
    with UnavailableServer() as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.endpoint)
        reg = registry.from_url("gs://bucket/releases")
        with pytest.raises(RegistryError) as info:
            reg.latest()
    assert str(info.value) == "gs://bucket/releases/: cannot list versions: HTTP 503: Backend Error"
    # One listing (the library may look up the bucket's metadata first): the poller's backoff is the retry.
    assert len([r for r in server.requests if "/o?" in r]) == 1, server.requests
