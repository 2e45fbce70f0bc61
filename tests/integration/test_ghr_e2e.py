"""ghr:// end to end: a real dewy-master whose poller talks to the GitHub stand-in through GITHUB_API_URL.

Newest release deployed and serving, then a newer one; the shipped_to record uploaded as a release
asset; unchanged polls are 304s that download nothing; a digest mismatch refused while the old
version serves; a 5xx outage logged once while the app keeps serving.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from dewy import audit, versions
from ghstub import GitHubStub
from helpers import Master, build_release, norm, wait_until

TOKEN = "ghp_e2e_stub_token_4711"
OWNER, REPO = "acme", "web"


class GitHubReleases:
    """A registry adapter for helpers.Master: publishes the sample app as GitHub releases in the stand-in."""

    ARTIFACT = "app.tar.gz"

    def __init__(self, base: Path, stub: GitHubStub):
        self.stub = stub
        self.staging = Path(base) / "staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.query = "artifact=" + self.ARTIFACT

    @property
    def url(self) -> str:
        """The registry URL for the ini."""
        return "ghr://%s/%s?%s" % (OWNER, REPO, self.query)

    def build(self, version: str, behaviour: str = "") -> bytes:
        """The sample app's release tarball for version."""
        path = self.staging / ("%s.tar.gz" % norm(version))
        build_release(str(path), norm(version), behaviour)
        return path.read_bytes()

    def publish(self, version: str, behaviour: str = "", digest=True, name: str | None = None,
                prerelease: bool = False, upload: bool = True) -> dict:
        """Publish release v<version> with the tarball as its asset `name` (GitHub's digest, or the one given).

        upload=False: the release only, as CI creates it before its build is done (see upload()).
        """
        release = self.stub.publish(OWNER, REPO, "v" + norm(version), prerelease=prerelease)
        if upload:
            self.upload(version, behaviour, digest, name)
        return release

    def upload(self, version: str, behaviour: str = "", digest=True, name: str | None = None) -> None:
        """Add the tarball to release v<version>."""
        self.stub.add_asset(OWNER, REPO, "v" + norm(version), name or self.ARTIFACT, self.build(version, behaviour),
                            digest=digest)

    def shipped_to(self, version: str) -> list:
        """Names of the shipped_to assets of release v<version>."""
        return [n for n in self.stub.asset_names(OWNER, REPO, "v" + norm(version)) if n.startswith("shipped_to_")]


@pytest.fixture
def github_master(request, tmp_path):
    """(stand-in, adapter, master factory); every master is stopped before the stand-in closes."""
    masters = []
    request.node.dewy_masters = masters  # conftest attaches their logs to a failure report
    with GitHubStub(tokens=(TOKEN,)) as stub:
        releases = GitHubReleases(tmp_path, stub)
        # GH_TOKEN wins over GITHUB_TOKEN: set both so a token in the test machine's environment is not used.
        env = {"GITHUB_API_URL": stub.api_url, "GITHUB_ENDPOINT": "", "GH_TOKEN": TOKEN, "GITHUB_TOKEN": TOKEN,
               "GITHUB_ARTIFACT": "", "GITHUB_APP_ID": "", "GITHUB_APP_INSTALLATION_ID": ""}

        def make(**settings) -> Master:
            master = Master(tmp_path, releases, env=env, **settings)
            masters.append(master)
            return master

        try:
            yield stub, releases, make
        finally:
            for master in masters:
                master.close()


@pytest.mark.timeout(120)
def test_github_releases_end_to_end(github_master):
    stub, releases, make = github_master
    releases.publish("1.0.0")
    master = make(**{"poll-backoff-max": "1s"}).start(wait_version="1.0.0")

    # shipped_to record, Dewy's name, uploaded to the release's upload_url with the token.
    (record,) = wait_until(lambda: releases.shipped_to("1.0.0"), 20, "the shipped_to asset of v1.0.0",
                           master.details)
    host = audit.hostname().lower()
    assert re.fullmatch(r"shipped_to_%s_server_at_\d{8}T\d{6}\.\d{9}Z\.txt" % re.escape(host), record), record
    text = stub.asset_bytes(OWNER, REPO, "v1.0.0", record).decode()
    assert text.startswith("shipped to %s server at " % host) and "version: 1.0.0" in text
    (upload,) = stub.recorded("uploads", "POST")
    assert upload.headers["authorization"] == "Bearer " + TOKEN and upload.headers["content-type"] == "text/plain"

    # A newer release is deployed and serves.
    master.deploy("1.1.0")
    wait_until(lambda: releases.shipped_to("1.1.0"), 20, "the shipped_to asset of v1.1.0", master.details)
    assert not stub.storage_auth_violations()  # the token never went to the storage host

    # Unchanged polls: If-None-Match, 304, nothing downloaded. (Our own upload changed the list: the poll
    # after it is a 200 with a new ETag; from then on nothing changes.)
    master.quiesce()
    wait_until(lambda: any(r.status == 304 for r in stub.recorded("api")), 20, "a 304 poll", master.details)
    stub.clear()
    wait_until(lambda: len([r for r in stub.recorded() if r.status]) >= 5, 20, "five polls", master.details)
    seen = stub.recorded()
    # Nothing but list polls (no asset, storage or upload request), each conditional and each a 304.
    assert all((r.server, r.path) == ("api", "/repos/%s/%s/releases" % (OWNER, REPO)) for r in seen), \
        [(r.server, r.path) for r in seen]
    assert all(r.headers.get("if-none-match") for r in seen)
    assert [r.status for r in seen if r.status] == [304] * len([r for r in seen if r.status])

    # A release whose bytes do not match GitHub's digest is refused; 1.1.0 keeps serving.
    releases.publish("1.2.0", digest="sha256:" + hashlib.sha256(b"something else").hexdigest())
    entry = wait_until(lambda: next((e for e in audit.read(str(master.workdir))
                                     if e.get("version") == "1.2.0" and e.get("result") == "refused"), None),
                       30, "v1.2.0 refused", master.details)
    assert "checksum mismatch" in entry["error"], entry
    assert master.get() == (200, "1.1.0\n")
    assert master.status()["version"] == "1.1.0"
    assert not releases.shipped_to("1.2.0")  # records name successful deploys only

    # A 5xx outage: one log line, the app keeps serving, polling resumes when GitHub answers again.
    mark = len(master.log_text())
    stub.fail_next(502, count=10_000)
    master.wait_for(lambda s: "502" in (s.get("last_error") or ""), 20, "the 502 in the status")
    wait_until(lambda: len([r for r in stub.recorded("api") if r.status == 502]) >= 3, 20, "three failed polls",
               master.details)
    assert master.get() == (200, "1.1.0\n")
    stub.failures.clear()
    master.wait_for(lambda s: not s.get("last_error"), 20, "the outage to end")
    outage_lines = [line for line in master.log_text()[mark:].splitlines() if "502" in line and "ERROR" in line]
    assert len(outage_lines) == 1, outage_lines
    assert TOKEN not in master.log_text()
    assert master.get() == (200, "1.1.0\n") and master.status()["version"] == "1.1.0"


@pytest.mark.timeout(120)
def test_github_pre_release_slot_os_arch_and_a_release_still_building(github_master):
    stub, releases, make = github_master
    native = "app_%s_%s.tar.gz" % (versions.platform_aliases()[0][0], versions.platform_aliases()[1][0])
    releases.query = "pre-release=true"  # no ?artifact=: the asset named for this host's OS/arch
    releases.publish("1.0.0+blue", name=native)
    stub.add_asset(OWNER, REPO, "v1.0.0+blue", "app_plan9_mips.tar.gz", b"not for this host")
    releases.publish("1.5.0+green", name=native)  # another slot: never deployed here
    master = make(slot="blue").start(wait_version="1.0.0+blue")

    # A pre-release (GitHub's flag) of our slot is deployed with pre-release=true.
    releases.publish("1.1.0-rc.1+blue", name=native, prerelease=True)
    master.wait_version("1.1.0-rc.1+blue")

    # CI created the release but has not uploaded the build: logged at info, the app keeps serving.
    mark = len(master.log_text())
    releases.publish("1.2.0+blue", upload=False)
    wait_until(lambda: "waiting for the artifact" in master.log_text()[mark:], 20, "the waiting line",
               master.details)
    assert master.get() == (200, "1.1.0-rc.1+blue\n")
    assert not (master.status() or {}).get("last_error")
    releases.upload("1.2.0+blue", name=native)
    master.wait_version("1.2.0+blue")
    waiting = [line for line in master.log_text()[mark:].splitlines() if "waiting for the artifact" in line]
    assert len(waiting) == 1 and " INFO " in waiting[0], waiting
