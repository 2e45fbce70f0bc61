"""grpc:// end to end: a real dewy-master polls a grpcio server of Dewy's proto, deploys, and Reports."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import grpc
import pytest

from dewy.registry import grpc as grpc_registry
from grpc_registry_server import _grpc_plain_server, _grpc_tls_server  # noqa: F401 — fixtures
from grpc_registry_server import grpc_plain, grpc_tls, grpc_tls_files  # noqa: F401 — fixtures
from helpers import build_release, norm


class GRPCPublisher:
    """The Master's registry adapter: publish() builds the sample app into a directory and makes the
    gRPC server answer Current with a file:// artifact_url for it."""

    ARTIFACT = "app.tar.gz"

    def __init__(self, base: Path, server, query: str = ""):
        self.root = Path(base) / "grpc-releases"
        self.server = server
        self.query = query
        self.ids = {}  # tag -> the CurrentResponse id the server gave it

    @property
    def url(self) -> str:
        """The registry URL for the ini (plaintext: no-tls=true; TLS: ca=<the test CA>)."""
        return self.server.url(self.query)

    def publish(self, version: str, behaviour: str = "") -> Path:
        """Build version (with misbehaviour switches) and make it what Current answers."""
        tag = "v" + norm(version)
        version_dir = self.root / tag
        version_dir.mkdir(parents=True)
        path = version_dir / self.ARTIFACT
        build_release(str(path), norm(version), behaviour)
        self.ids[tag] = self.server.publish(tag, "file://" + urllib.parse.quote(str(path)))
        return version_dir


@pytest.fixture(params=["plaintext", "tls"])
def registry(request, tmp_path):
    """A GRPCPublisher over the session's plaintext or TLS server (overrides conftest's file:// one)."""
    server = request.getfixturevalue("grpc_plain" if request.param == "plaintext" else "grpc_tls")
    return GRPCPublisher(tmp_path, server, query="artifact=app.tar.gz")


def _report(registry, tag: str):
    return registry.server.wait_report(lambda r: r.tag == tag)


@pytest.mark.timeout(120)
def test_deploys_newest_and_newer_and_reports_each(make_master, registry):
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    report = _report(registry, "v1.0.0")
    assert (report.id, report.command) == (registry.ids["v1.0.0"], "server")
    assert not report.HasField("err")
    # What went over the wire from the poller process: Go's platform names and the artifact asked for.
    request = registry.server.current_requests[0]
    assert (request.os, request.arch) == (grpc_registry.go_os(), grpc_registry.go_arch())
    assert request.HasField("arifact_name") and request.arifact_name == "app.tar.gz"

    master.deploy("1.1.0")
    report = _report(registry, "v1.1.0")
    assert (report.id, report.command) == (registry.ids["v1.1.0"], "server")
    assert not report.HasField("err")
    assert master.get() == (200, "1.1.0\n")
    assert [r.tag for r in registry.server.reports] == ["v1.0.0", "v1.1.0"]  # one Report per deploy


@pytest.mark.timeout(120)
@pytest.mark.parametrize("registry", ["plaintext"], indirect=True)
def test_release_that_fails_to_start_is_reported_with_err(make_master, registry):
    registry.publish("1.0.0")
    master = make_master(ready="delay:0.5s").start(wait_version="1.0.0")
    _report(registry, "v1.0.0")
    registry.publish("1.1.0", behaviour="crash-at-start")
    report = _report(registry, "v1.1.0")
    assert (report.id, report.command) == (registry.ids["v1.1.0"], "server")
    assert report.HasField("err") and "1.1.0" in report.err, report
    st = master.wait_version("1.0.0")
    assert st["version"] == "1.0.0"
    assert master.get() == (200, "1.0.0\n")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("registry", ["plaintext"], indirect=True)
def test_registry_outage_keeps_the_app_serving(make_master, registry):
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    server = registry.server
    with server.cond:
        server.failure = (grpc.StatusCode.UNAVAILABLE, "registry under maintenance")
        seen = len(server.current_requests)
    st = master.wait_for(lambda s: "registry under maintenance" in (s.get("last_error") or ""), 30,
                         "the outage in the status")
    assert "UNAVAILABLE" in st["last_error"]
    server.wait_requests(seen + 3)
    assert master.get() == (200, "1.0.0\n")
    master.deploy("1.1.0")  # publishing clears the failure: the registry is back
    master.wait_for(lambda s: s.get("last_error") is None, 30, "the outage to clear in the status")
    # One error line for the whole outage (with the gRPC code), and no grpc C-core chatter in the log.
    lines = master.log_text().splitlines()
    errors = [line for line in lines if " ERROR " in line and "registry under maintenance" in line]
    assert len(errors) == 1 and "UNAVAILABLE" in errors[0], errors
    assert not [line for line in lines if re.search(r"\.cc:\d+\]", line)], master.log_tail()
