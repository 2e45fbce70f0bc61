"""A download stopped midway (SIGTERM for a USR2, a crash, a wedge kill) is resumed by the next poller with a
Range request from where it stopped, instead of from byte 0 (issue 16 item 13). In-process: a real Deploy
fetching from a real local HTTP server that honours Range, into a real file cache; the stop is the poller's own
Stop (a BaseException, as SIGTERM raises it) thrown from the progress listener after the first MiB."""

from __future__ import annotations

import hashlib
import os

import pytest

from ghstub import forget_github_clients

from dewy import cache as cache_pkg
from dewy.config import from_options
from dewy.notify.dispatch import Dispatcher
from dewy.poller.deploy import Backends, Deploy, Repeats
from dewy.poller.partial import META_FILE, PARTIAL_FILE
from dewy.poller.worker import Stop
from dewy.registry.base import Release
from unit.test_artifact_http import BODY, server, url  # noqa: F401 - server is a fixture

MIB = 1 << 20


def deploy_of(tmp_path, srv, tell=None) -> Deploy:
    cfg = from_options({"registry": "file:///nowhere", "app": ["app"], "workdir": str(tmp_path / "w"),
                        "cache": "file://%s" % (tmp_path / "cache")})
    os.makedirs(tmp_path / "w" / ".dewy", mode=0o700, exist_ok=True)
    cache = cache_pkg.from_url(cfg.cache, cfg.workdir)
    release = Release(version="1.1.0", tag="v1.1.0", artifact_name="app.tar.gz", artifact_url=url(srv),
                      sha256=hashlib.sha256(BODY).hexdigest())
    return Deploy(release, Backends(cfg, None, cache, Dispatcher([])), (None, None), None, None, Repeats(),
                  tell_master=tell)


def stop_after_first_chunk(type_, **progress):
    if progress.get("done"):
        raise Stop()


@pytest.fixture(autouse=True)
def quiet_server(request):
    """A download abandoned by Stop resets the connection: the server need not print a traceback for it."""
    if "server" in request.fixturenames:
        request.getfixturevalue("server").handle_error = lambda req, address: None


def test_a_download_stopped_midway_is_resumed_with_a_range_request(tmp_path, server):
    with pytest.raises(Stop):
        deploy_of(tmp_path, server, stop_after_first_chunk).fetch()
    dewy_dir = tmp_path / "w" / ".dewy"
    assert os.path.getsize(dewy_dir / PARTIAL_FILE) == MIB, "the first MiB is kept for the next poller"
    assert oct(os.stat(dewy_dir / PARTIAL_FILE).st_mode & 0o777) == "0o600"
    assert not (tmp_path / "cache" / "1.1.0%2Fapp.tar.gz").exists()

    inode = os.stat(dewy_dir / PARTIAL_FILE).st_ino
    digest = deploy_of(tmp_path, server).fetch()  # the next poller
    assert os.stat(tmp_path / "cache" / "1.1.0%2Fapp.tar.gz").st_ino == inode, "renamed into the cache, not copied"
    assert digest == hashlib.sha256(BODY).hexdigest()
    assert [(r["range"], r["if_range"]) for r in server.requests] == [(None, None), ("bytes=%d-" % MIB, '"v1"')]
    assert (tmp_path / "cache" / "1.1.0%2Fapp.tar.gz").read_bytes() == BODY
    assert not (dewy_dir / PARTIAL_FILE).exists() and not (dewy_dir / META_FILE).exists()


def test_a_kept_download_the_store_will_not_resume_is_fetched_whole(tmp_path, server):
    with pytest.raises(Stop):
        deploy_of(tmp_path, server, stop_after_first_chunk).fetch()
    server.ranges = False  # the file changed: no 206 for If-Range
    assert deploy_of(tmp_path, server).fetch() == hashlib.sha256(BODY).hexdigest()
    assert [r["range"] for r in server.requests] == [None, "bytes=%d-" % MIB, None]
    assert (tmp_path / "cache" / "1.1.0%2Fapp.tar.gz").read_bytes() == BODY


def test_a_github_asset_download_stopped_midway_resumes_unless_the_asset_was_uploaded_again(tmp_path, monkeypatch):
    """ghr://: the asset id names the file (GitHub gives an asset uploaded again a new id)."""
    from dewy import registry
    from ghstub import GitHubStub

    for var in ("GH_TOKEN", "GITHUB_TOKEN", "GITHUB_API_URL", "GITHUB_APP_ID"):
        monkeypatch.delenv(var, raising=False)
    forget_github_clients()
    data = os.urandom(3 * MIB)
    release = None
    with GitHubStub(tokens=("ghp_partial0123456789",)) as stub:
        monkeypatch.setenv("GITHUB_API_URL", stub.api_url)
        monkeypatch.setenv("GITHUB_TOKEN", "ghp_partial0123456789")
        stub.publish("acme", "app", "v1.1.0", {"app.tar.gz": data})
        release = registry.from_url("ghr://acme/app?artifact=app.tar.gz").latest()

        def deploy(tell=None):
            cfg = from_options({"registry": "ghr://acme/app", "app": ["app"], "workdir": str(tmp_path / "w"),
                                "cache": "file://%s" % (tmp_path / "cache")})
            os.makedirs(tmp_path / "w" / ".dewy", mode=0o700, exist_ok=True)
            return Deploy(release, Backends(cfg, None, cache_pkg.from_url(cfg.cache, cfg.workdir), Dispatcher([])),
                          (None, None), None, None, Repeats(), tell_master=tell)

        with pytest.raises(Stop):
            deploy(stop_after_first_chunk).fetch()
        kept = os.path.getsize(tmp_path / "w" / ".dewy" / PARTIAL_FILE)
        assert 0 < kept < len(data)
        assert deploy().fetch() == hashlib.sha256(data).hexdigest()
        ranges = [r.headers.get("range") for r in stub.recorded("storage")]
        assert ranges == [None, "bytes=%d-" % kept], ranges
        assert (tmp_path / "cache" / "1.1.0%2Fapp.tar.gz").read_bytes() == data

        # Uploaded again (a new asset id) after a stop: the kept part is dropped and the new file comes whole.
        (tmp_path / "cache" / "1.1.0%2Fapp.tar.gz").unlink()
        with pytest.raises(Stop):
            deploy(stop_after_first_chunk).fetch()
        stub.clear()
        again = os.urandom(2 * MIB)
        stub.publish("acme", "app", "v1.1.0", {"app.tar.gz": again})
        release = registry.from_url("ghr://acme/app?artifact=app.tar.gz").latest()
        assert deploy().fetch() == hashlib.sha256(again).hexdigest()
        assert [r.headers.get("range") for r in stub.recorded("storage")] == [None]
    forget_github_clients()
