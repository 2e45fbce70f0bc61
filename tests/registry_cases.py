"""Tests every bucket registry (S3, GCS) must pass, run against the real server of each.

A test module subclasses `BucketRegistryCases` and provides a `store` fixture (a servers.Store in a
fresh bucket, with the environment the registry needs). Dewy's layout: `<prefix>/<tag>/<artifact>`.
"""

from __future__ import annotations

import hashlib
import io
import os
import json
import subprocess
import sys

import pytest

from dewy import artifact, audit, registry, versions
from dewy.registry import RegistryError
from dewy.registry.base import NotYetPublished

OS_NAME = versions.platform_aliases()[0][0]
ARCH_NAME = versions.platform_aliases()[1][0]
NATIVE = "app_%s_%s.tar.gz" % (OS_NAME, ARCH_NAME)
FOREIGN = "app_plan9_mips.tar.gz"


def fetch(url: str) -> bytes:
    """The bytes an artifact URL names, through dewy's artifact store."""
    out = io.BytesIO()
    artifact.from_url(url).fetch(out)
    return out.getvalue()


def config_error(validate, url: str, message: str) -> str:
    """Assert validate(url) raises a one-line ValueError matching message, without secrets; return it."""
    with pytest.raises(ValueError, match=message) as info:
        validate(url)
    text = str(info.value)
    assert "\n" not in text and "secret" not in text, text
    return text


def sdk_modules_loaded(backend: str, registry_url: str, artifact_url: str, sdk_roots: tuple) -> list:
    """The SDK modules a fresh interpreter holds after validating these URLs and importing the backend's
    modules (what the master does): the SDKs must load only when a client is made."""
    code = ("import json, sys; from dewy import registry, artifact; "
            "registry.validate_url(%r); artifact.validate_url(%r); "
            "import dewy.registry.%s, dewy.artifact.%s; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))"
            % (registry_url, artifact_url, backend, backend, tuple(sdk_roots)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


class UnavailableServer:
    """A stand-in storage server answering every request `503 Service Unavailable` in S3's (XML) or
    GCS's (JSON) error format; counts the requests it got."""

    def __init__(self):
        import http.server
        import threading

        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                requests.append(self.command + " " + self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if self.path.startswith(("/storage/", "/download/", "/upload/")):
                    body, kind = b'{"error": {"code": 503, "message": "Backend Error"}}', "application/json"
                else:
                    body, kind = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ServiceUnavailable</Code>"
                                  b"<Message>Service is unable to handle request.</Message></Error>"), "application/xml"
                self.send_response(503)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class BucketRegistryCases:
    """The shared behaviour of the bucket registries (S3 and GCS)."""

    @staticmethod
    def registry(store, query: str = "", slot: str = ""):
        return registry.from_url(store.url(query), slot=slot)

    def test_newest_version_its_native_artifact_and_dewys_artifact_url(self, store):
        for tag in ("v1.0.0", "v1.2.0", "v1.10.0", "1.9.9", "latest"):
            store.put("%s/%s" % (tag, FOREIGN), b"foreign")
            store.put("%s/%s" % (tag, NATIVE), tag.encode())
        store.put("v9.9.9", b"an object, not a version directory")
        release = self.registry(store).latest()
        assert (release.version, release.tag, release.artifact_name) == ("1.10.0", "v1.10.0", NATIVE)
        assert release.artifact_url == store.artifact_url("v1.10.0/" + NATIVE)
        assert (release.sha256, release.checksum_source) == (None, None)
        assert fetch(release.artifact_url) == b"v1.10.0"

    def test_the_artifact_tells_its_size_for_download_progress(self, store):
        data = os.urandom(300_000)
        store.put("v1.0.0/" + NATIVE, data)
        fetcher = artifact.from_url(self.registry(store).latest().artifact_url)
        fetcher.fetch(io.BytesIO())
        assert fetcher.size() == len(data)

    def test_pre_release_slot_and_refused_versions(self, store):
        for tag in ("v1.0.0+blue", "v1.1.0+green", "v1.2.0-rc.1+blue", "v0.9.0"):
            store.put(tag + "/app.tar.gz", tag.encode())
        assert self.registry(store, "artifact=app.tar.gz").latest().tag == "v1.1.0+green"
        assert self.registry(store, "artifact=app.tar.gz", slot="blue").latest().tag == "v1.0.0+blue"
        reg = self.registry(store, "artifact=app.tar.gz&pre-release=true", slot="blue")
        release = reg.latest()
        assert (release.version, release.tag) == ("1.2.0-rc.1+blue", "v1.2.0-rc.1+blue")
        assert fetch(release.artifact_url) == b"v1.2.0-rc.1+blue"  # "+" survives the artifact URL
        assert reg.latest(exclude=["1.2.0-rc.1+blue"]).tag == "v1.0.0+blue"
        with pytest.raises(RegistryError, match="no deployable version"):
            self.registry(store, "artifact=app.tar.gz", slot="red").latest()

    def test_calver_tags(self, store):
        for tag in ("2024.01.3", "v2024.11.0", "2024.02.10", "v9.9.9"):
            store.put(tag + "/app.tar.gz", b"x")
        release = self.registry(store, "artifact=app.tar.gz&calver=YYYY.0M.MICRO").latest()
        assert release.tag == "v2024.11.0"
        assert release.artifact_url == store.artifact_url("v2024.11.0/app.tar.gz")

    def test_every_page_of_a_listing_is_read(self, store):
        for minor in range(6):
            store.put("v1.%d.0/app.tar.gz" % minor, b"x")
        for name in ("a.txt", "b.txt", "c.txt", "d.txt", "zz.tar.gz"):
            store.put("v1.5.0/" + name, name.encode())
        reg = self.registry(store, "artifact=zz.tar.gz")
        reg.page_size = 2
        listings = store.listings(reg)
        release = reg.latest()
        # The newest version and the artifact are both only on a listing's last page.
        assert (release.tag, release.artifact_name) == ("v1.5.0", "zz.tar.gz")
        assert len(listings) >= 4, listings  # at least one for the versions, three for v1.5.0's 5 objects
        assert fetch(release.artifact_url) == b"zz.tar.gz"

    def test_no_prefix_means_the_bucket_root(self, store):
        store.prefix = ""
        store.put("v2.0.0/app.tar.gz", b"root")
        release = self.registry(store, "artifact=app.tar.gz").latest()
        assert release.tag == "v2.0.0"
        assert fetch(release.artifact_url) == b"root"

    def test_checksum_published_next_to_the_artifact(self, store):
        data = b"the artifact"
        digest = hashlib.sha256(data).hexdigest()
        store.put("v1.0.0/" + NATIVE, data)
        store.put("v1.0.0/checksums.txt", ("%s  %s\n%s  other\n" % (digest, NATIVE, "0" * 64)).encode())
        release = self.registry(store).latest()
        assert (release.sha256, release.checksum_source) == (digest, "checksums.txt")
        store.put("v1.0.0/%s.sha256" % NATIVE, b"f" * 64)  # now two files disagree
        with pytest.raises(RegistryError, match="(?i)disagree|conflict|differ"):
            self.registry(store).latest()

    def test_a_version_without_its_artifact_is_not_yet_published(self, store):
        store.put("v1.0.0/app.tar.gz", b"x")
        store.put("v1.1.0/checksums.txt", b"")  # CI is still uploading v1.1.0
        with pytest.raises(NotYetPublished, match="v1.1.0|1.1.0"):
            self.registry(store, "artifact=app.tar.gz").latest()
        with pytest.raises(NotYetPublished, match="no artifact for"):
            self.registry(store).latest()

    def test_report_writes_an_empty_shipped_to_object_for_a_successful_deploy(self, store):
        store.put("v1.0.0/app.tar.gz", b"x")
        reg = self.registry(store, "artifact=app.tar.gz")
        release = reg.latest()
        reg.report(release, audit.Shipped.now("server", release.version, release.tag, error="did not start"))
        assert store.names() == ["v1.0.0/app.tar.gz"]  # a failed deploy leaves no record (Dewy's)
        shipped = audit.Shipped.now("server", release.version, release.tag)
        reg.report(release, shipped)
        assert shipped.filename().startswith("shipped_to_") and shipped.filename().endswith("Z.txt")
        assert store.names() == sorted(["v1.0.0/app.tar.gz", "v1.0.0/" + shipped.filename()])
        assert store.get("v1.0.0/" + shipped.filename()) == b""
        assert reg.latest().artifact_name == "app.tar.gz"  # the record is never taken for an artifact

    def test_a_missing_bucket_is_a_one_line_registry_error(self, store):
        store.bucket = store.bucket + "-missing"
        with pytest.raises(RegistryError) as info:
            self.registry(store).latest()
        message = str(info.value)
        assert "\n" not in message and store.bucket in message and "404" in message, message

    def test_the_client_is_made_once_per_registry(self, store):
        store.put("v1.0.0/app.tar.gz", b"x")
        reg = self.registry(store, "artifact=app.tar.gz")
        client = reg.client()
        reg.latest()
        reg.latest()
        assert reg.client() is client
