"""The grpc:// registry against a real grpcio server of Dewy's proto, in plaintext and with TLS."""

import socket
import subprocess
import sys

import grpc
import pytest

from dewy import audit, registry
from dewy.registry import RegistryError
from dewy.registry import grpc as grpc_registry
from grpc_registry_server import _grpc_plain_server, _grpc_tls_server  # noqa: F401 — fixtures
from grpc_registry_server import RegistryServer, grpc_plain, grpc_tls, grpc_tls_files  # noqa: F401
from helpers import wait_until


def connect(url, slot=""):
    reg = registry.from_url(url, slot=slot)
    reg.deadline = 5.0
    return reg


def shipped(mode="server", error=None, tag="v1.2.3"):
    return audit.Shipped.now(mode, tag.lstrip("v"), tag, error=error)


# --- URL validation (config errors, before anything connects) ------------------------------------

@pytest.mark.parametrize("url, words", [
    ("grpc://reg.example:9000?no-tls=maybe", ['"maybe"', '"no-tls"']),
    ("grpc://reg.example:9000?ca=relative/ca.pem", ['"ca"', "absolute path"]),
    ("grpc://reg.example:9000?ca=/nonexistent/ca.pem", ["/nonexistent/ca.pem", "cannot read"]),
    ("grpc://reg.example:9000?ca=/etc/hostname", ["/etc/hostname", "no PEM certificate"]),
    ("grpc://reg.example:9000/some/path", ["no path"]),
    ("grpc://:9000", ["needs a host"]),
    ("grpc://reg.example:port", ["bad port"]),
    ("grpc://user:secret@reg.example:9000", ["no user or password"]),
    ("grpc://reg.example:9000?pre-release=true", ['unknown query key "pre-release"']),
    ("grpc://reg.example:9000?calver=vX.Z", ['"calver"']),
    ("grpc://reg.example:9000?artifact=../x", ['"artifact"']),
])
def test_bad_urls_are_one_line_config_errors(url, words):
    with pytest.raises(ValueError) as err:
        registry.validate_url(url)
    message = str(err.value)
    assert "\n" not in message and "secret" not in message
    for word in words:
        assert word in message


def test_ca_with_no_tls_is_refused(grpc_tls_files):
    with pytest.raises(ValueError, match="cannot go with no-tls=true"):
        registry.validate_url("grpc://reg.example:9000?no-tls=true&ca=%s" % grpc_tls_files.ca_path)


def test_good_urls_validate(grpc_tls_files):
    registry.validate_url("grpc://reg.example:9000")
    registry.validate_url("grpc://reg.example?no-tls=true&artifact=app.tar.gz&calver=YYYY.0M.MICRO")
    registry.validate_url("grpc://[::1]:9000?ca=%s" % grpc_tls_files.ca_path)


def test_validating_and_building_a_grpc_url_does_not_import_grpcio():
    # The master validates registry URLs and must stay small: grpc is loaded on first use only.
    code = ("import sys; from dewy import registry; "
            "registry.validate_url('grpc://reg.example:9000?no-tls=true'); "
            "registry.from_url('grpc://reg.example:9000?no-tls=true'); "
            "bad = [m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', 'google.protobuf'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("system, machine, goos, goarch", [
    ("Linux", "x86_64", "linux", "amd64"),
    ("Linux", "aarch64", "linux", "arm64"),
    ("Darwin", "arm64", "darwin", "arm64"),
    ("Darwin", "x86_64", "darwin", "amd64"),
    ("Linux", "armv7l", "linux", "arm"),
    ("Linux", "i686", "linux", "386"),
    ("FreeBSD", "amd64", "freebsd", "amd64"),
    ("Linux", "riscv64", "linux", "riscv64"),
])
def test_platform_names_are_go_names(system, machine, goos, goarch):
    assert (grpc_registry.go_os(system), grpc_registry.go_arch(machine)) == (goos, goarch)


# --- Current, in plaintext ------------------------------------------------------------------------

def test_current_names_the_release_and_the_request_carries_go_platform_names(grpc_plain):
    grpc_plain.publish("v1.2.3", "file:///srv/releases/v1.2.3/app_linux_amd64.tar.gz")
    release = connect(grpc_plain.url()).latest()
    assert (release.version, release.tag, release.artifact_name) == ("1.2.3", "v1.2.3", "app_linux_amd64.tar.gz")
    assert release.artifact_url == "file:///srv/releases/v1.2.3/app_linux_amd64.tar.gz"
    assert release.sha256 is None  # Dewy's service publishes no checksum
    request = grpc_plain.current_requests[-1]
    assert request.os == grpc_registry.go_os() and request.arch == grpc_registry.go_arch()
    assert request.os in ("linux", "darwin") and request.arch not in ("x86_64", "aarch64")
    assert not request.HasField("arifact_name")  # absent on the wire without ?artifact=


def test_artifact_query_sets_arifact_name(grpc_plain):
    grpc_plain.publish("v2.0.0", "file:///srv/v2.0.0/custom.tar.gz")
    release = connect(grpc_plain.url("artifact=custom.tar.gz")).latest()
    request = grpc_plain.current_requests[-1]
    assert request.HasField("arifact_name") and request.arifact_name == "custom.tar.gz"
    assert release.artifact_name == "custom.tar.gz"


@pytest.mark.parametrize("artifact_url, name", [
    ("s3://ap-northeast-1/bucket/app/v1.0.0/app_linux_amd64.tar.gz", "app_linux_amd64.tar.gz"),
    ("gs://bucket/app/v1.0.0/app.zip", "app.zip"),
    ("ghr://owner/repo/tag/v1.0.0/app_linux_arm64.tar.gz", "app_linux_arm64.tar.gz"),
    ("https://cdn.example/dl/app%20v1.tar.gz?X-Amz-Signature=abc", "app v1.tar.gz"),
    ("file:///srv/r/v1.0.0/app.tgz", "app.tgz"),
])
def test_artifact_url_may_use_any_artifact_scheme(grpc_plain, artifact_url, name):
    grpc_plain.publish("v1.0.0", artifact_url)
    release = connect(grpc_plain.url()).latest()
    assert (release.artifact_url, release.artifact_name) == (artifact_url, name)


@pytest.mark.parametrize("artifact_url, words", [
    ("ftp://host/app.tar.gz", ['unsupported scheme "ftp"']),
    ("", ["without an artifact_url"]),
    ("https://cdn.example/dl/?X-Amz-Signature=topsecret", ["without a file name"]),
])
def test_unusable_artifact_url_is_a_registry_error(grpc_plain, artifact_url, words):
    grpc_plain.publish("v1.0.0", artifact_url)
    with pytest.raises(RegistryError) as err:
        connect(grpc_plain.url()).latest()
    for word in words:
        assert word in str(err.value)
    assert "topsecret" not in str(err.value)


def test_tag_that_is_not_a_version_is_a_registry_error(grpc_plain):
    grpc_plain.publish("latest", "file:///srv/latest/app.tar.gz")
    with pytest.raises(RegistryError, match='offers tag "latest", which is not a semantic version'):
        connect(grpc_plain.url()).latest()


def test_refused_version_is_a_registry_error(grpc_plain):
    grpc_plain.publish("v1.2.3", "file:///srv/v1.2.3/app.tar.gz")
    reg = connect(grpc_plain.url())
    with pytest.raises(RegistryError, match="offers only version 1.2.3, which is refused here"):
        reg.latest(exclude={"1.2.3"})
    assert reg.latest(exclude={"1.2.2"}).version == "1.2.3"


def test_slot_must_match_the_tag_build_metadata(grpc_plain):
    grpc_plain.publish("v1.2.3+green", "file:///srv/v1.2.3/app.tar.gz")
    with pytest.raises(RegistryError, match='offers only v1.2.3\\+green, which is not of slot "blue"'):
        connect(grpc_plain.url(), slot="blue").latest()
    assert connect(grpc_plain.url(), slot="green").latest().version == "1.2.3+green"
    assert connect(grpc_plain.url()).latest().version == "1.2.3+green"


def test_calver_tags(grpc_plain):
    grpc_plain.publish("v2026.04.3", "file:///srv/v2026.04.3/app.tar.gz")
    assert connect(grpc_plain.url("calver=YYYY.0M.MICRO")).latest().version == "2026.04.3"
    with pytest.raises(RegistryError, match="not in calver format YY.MM.MICRO"):
        connect(grpc_plain.url("calver=YY.MM.MICRO")).latest()


def test_server_error_is_one_line_with_code_and_details(grpc_plain):
    grpc_plain.failure = (grpc.StatusCode.PERMISSION_DENIED, "no release for\nthis host")
    with pytest.raises(RegistryError) as err:
        connect(grpc_plain.url()).latest()
    message = str(err.value)
    assert "\n" not in message
    assert "Current failed: PERMISSION_DENIED: no release for this host" in message
    assert grpc_plain.target in message


def test_deadline_on_every_call(grpc_plain):
    grpc_plain.publish("v1.0.0", "file:///srv/v1.0.0/app.tar.gz")
    grpc_plain.delay = 2.0
    reg = connect(grpc_plain.url())
    reg.deadline = 0.3
    with pytest.raises(RegistryError, match="Current failed: DEADLINE_EXCEEDED"):
        reg.latest()
    assert grpc_registry.DEADLINE <= 30  # the default bounds a hung server too


def test_server_down_is_unavailable():
    with socket.socket() as probe:  # a port nobody listens on (bound, never listening)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        reg = connect("grpc://127.0.0.1:%d?no-tls=true" % port)
        with pytest.raises(RegistryError) as err:
            reg.latest()
    message = str(err.value)
    assert "Current failed: UNAVAILABLE" in message and "\n" not in message and "Traceback" not in message


def test_registry_comes_back_after_an_outage(grpc_plain):
    grpc_plain.failure = (grpc.StatusCode.UNAVAILABLE, "maintenance")
    reg = connect(grpc_plain.url())
    with pytest.raises(RegistryError, match="UNAVAILABLE: maintenance"):
        reg.latest()
    grpc_plain.publish("v1.0.1", "file:///srv/v1.0.1/app.tar.gz")
    assert reg.latest().version == "1.0.1"


def test_server_restart_is_found_again_by_the_same_registry():
    # A real outage: the server goes away and comes back on its port; the long-lived channel
    # reconnects (its reconnect backoff is capped at 5 s, not grpc's default 120 s).
    first = RegistryServer()
    port = first.port
    first.publish("v1.0.0", "file:///srv/v1.0.0/app.tar.gz")
    reg = connect("grpc://127.0.0.1:%d?no-tls=true" % port)
    assert reg.latest().version == "1.0.0"
    first.stop()
    with pytest.raises(RegistryError, match="Current failed: UNAVAILABLE"):
        reg.latest()
    second = RegistryServer(port=port)
    try:
        second.publish("v1.0.1", "file:///srv/v1.0.1/app.tar.gz")

        def poll():
            try:
                return reg.latest().version
            except RegistryError:
                return None
        assert wait_until(poll, 15, "the registry to answer again", interval=0.2) == "1.0.1"
    finally:
        reg.close()
        second.stop()


# --- Report ---------------------------------------------------------------------------------------

def test_report_success_sends_the_current_id_tag_and_command_without_err(grpc_plain):
    response_id = grpc_plain.publish("v1.2.3", "file:///srv/v1.2.3/app.tar.gz", response_id="resp-42")
    reg = connect(grpc_plain.url())
    release = reg.latest()
    reg.report(release, shipped("server"))
    report = grpc_plain.reports[-1]
    assert (report.id, report.tag, report.command) == (response_id, "v1.2.3", "server")
    assert not report.HasField("err")


def test_report_failure_sends_err_and_assets_mode(grpc_plain):
    grpc_plain.publish("v1.2.3", "file:///srv/v1.2.3/app.tar.gz", response_id="resp-7")
    reg = connect(grpc_plain.url())
    release = reg.latest()
    reg.report(release, shipped("assets", error="app exited with status 3 before it was ready"))
    report = grpc_plain.reports[-1]
    assert (report.id, report.tag, report.command) == ("resp-7", "v1.2.3", "assets")
    assert report.HasField("err") and report.err == "app exited with status 3 before it was ready"


def test_report_keeps_the_id_per_tag(grpc_plain):
    reg = connect(grpc_plain.url())
    grpc_plain.publish("v1.0.0", "file:///srv/v1.0.0/app.tar.gz", response_id="id-old")
    old = reg.latest()
    grpc_plain.publish("v1.1.0", "file:///srv/v1.1.0/app.tar.gz", response_id="id-new")
    new = reg.latest()
    reg.report(old, shipped(tag="v1.0.0", error="x"))
    reg.report(new, shipped(tag="v1.1.0"))
    assert [(r.tag, r.id) for r in grpc_plain.reports] == [("v1.0.0", "id-old"), ("v1.1.0", "id-new")]


def test_report_failure_is_a_registry_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        reg = connect("grpc://127.0.0.1:%d?no-tls=true" % probe.getsockname()[1])
        release = registry.Release("1.0.0", "v1.0.0", "app.tar.gz", "file:///x/app.tar.gz")
        with pytest.raises(RegistryError, match="Report failed: UNAVAILABLE"):
            reg.report(release, shipped(tag="v1.0.0"))


# --- TLS ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_with_the_private_ca(grpc_tls, host):
    response_id = grpc_tls.publish("v3.0.0", "file:///srv/v3.0.0/app.tar.gz")
    reg = connect("grpc://%s:%d?ca=%s" % (host, grpc_tls.port, grpc_tls.tls.ca_path))
    release = reg.latest()
    assert release.version == "3.0.0"
    reg.report(release, shipped(tag="v3.0.0"))
    assert grpc_tls.reports[-1].id == response_id


def test_tls_without_the_ca_fails_cleanly(grpc_tls):
    # TLS is the default; the system roots do not trust the test's CA.
    grpc_tls.publish("v3.0.0", "file:///srv/v3.0.0/app.tar.gz")
    with pytest.raises(RegistryError) as err:
        connect("grpc://%s" % grpc_tls.target).latest()
    message = str(err.value)
    assert "Current failed: UNAVAILABLE" in message and "\n" not in message
    assert "handshake failed" in message.lower()
    assert not grpc_tls.current_requests  # the handshake failed: nothing reached the service


def test_no_tls_against_a_tls_server_fails_cleanly(grpc_tls):
    grpc_tls.publish("v3.0.0", "file:///srv/v3.0.0/app.tar.gz")
    with pytest.raises(RegistryError) as err:
        connect("grpc://%s?no-tls=true" % grpc_tls.target).latest()
    message = str(err.value)
    assert "Current failed: UNAVAILABLE" in message and "\n" not in message
    assert not grpc_tls.current_requests


def test_tls_against_a_plaintext_server_fails_cleanly(grpc_plain, grpc_tls_files):
    grpc_plain.publish("v3.0.0", "file:///srv/v3.0.0/app.tar.gz")
    with pytest.raises(RegistryError, match="Current failed: UNAVAILABLE"):
        connect("grpc://%s?ca=%s" % (grpc_plain.target, grpc_tls_files.ca_path)).latest()
    assert not grpc_plain.current_requests


def test_system_roots_are_read_from_ssl_cert_file(grpc_tls_files, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(grpc_tls_files.ca_path))
    assert grpc_registry.system_roots() == grpc_tls_files.ca_pem


def test_tls_default_trusts_ssl_cert_file(grpc_tls, grpc_tls_files, monkeypatch):
    # "System roots" are the host's CA bundle, so an operator can add a CA the usual way.
    monkeypatch.setenv("SSL_CERT_FILE", str(grpc_tls_files.ca_path))
    grpc_tls.publish("v3.1.0", "file:///srv/v3.1.0/app.tar.gz")
    assert connect("grpc://%s" % grpc_tls.target).latest().version == "3.1.0"
