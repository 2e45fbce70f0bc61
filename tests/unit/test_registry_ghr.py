"""The ghr:// registry and artifact store against the GitHub stand-in (tests/ghstub.py) on 127.0.0.1.

dewy's production client runs unchanged: only GITHUB_API_URL points it at the stand-in.
"""

import hashlib
import io
import logging
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dewy import artifact, audit, github, registry, versions
from dewy.artifact import ArtifactError
from dewy.registry import RegistryError
from dewy.registry.base import NotYetPublished
from ghstub import GitHubStub, forget_github_clients
from helpers import wait_until

TOKEN = "ghp_stubtoken0123456789"
OS_NAME = versions.platform_aliases()[0][0]
ARCH_NAME = versions.platform_aliases()[1][0]
NATIVE = "app_%s_%s.tar.gz" % (OS_NAME, ARCH_NAME)
ENV_VARS = ("GH_TOKEN", "GITHUB_TOKEN", "GITHUB_API_URL", "GITHUB_ENDPOINT", "GITHUB_ARTIFACT", "GITHUB_APP_ID",
            "GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_PATH")


@pytest.fixture
def clean_env(monkeypatch):
    """No GitHub variables from the machine running the tests; no client shared with another test."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    forget_github_clients()
    yield monkeypatch
    forget_github_clients()


@pytest.fixture
def stub(clean_env):
    """A fresh stand-in with a token dewy uses (GITHUB_TOKEN) and GITHUB_API_URL pointing at it."""
    with GitHubStub(tokens=(TOKEN,)) as server:
        clean_env.setenv("GITHUB_API_URL", server.api_url)
        clean_env.setenv("GITHUB_TOKEN", TOKEN)
        yield server


def ghr(query="", slot=""):
    return registry.from_url("ghr://acme/app" + query, slot=slot)


def fetch(url) -> bytes:
    out = io.BytesIO()
    artifact.from_url(url).fetch(out)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ selection
def test_newest_by_tag_version_not_by_creation_order_with_githubs_headers(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"one"})
    stub.publish("acme", "app", "v2.0.0", {NATIVE: b"two"})
    stub.publish("acme", "app", "v1.5.0", {NATIVE: b"backport"})  # created last: GitHub's "latest"
    release = ghr().latest()
    assert (release.version, release.tag, release.artifact_name) == ("2.0.0", "v2.0.0", NATIVE)
    assert release.artifact_url == "ghr://acme/app/tag/v2.0.0/%s" % NATIVE
    (listing,) = stub.recorded("api", "GET", "/releases")
    assert listing.path == "/repos/acme/app/releases" and listing.query == {"per_page": "100"}
    assert listing.headers["accept"] == "application/vnd.github+json"
    assert listing.headers["x-github-api-version"] == "2022-11-28"
    assert listing.headers["authorization"] == "Bearer " + TOKEN
    assert listing.headers["user-agent"].startswith("dewy/")


def test_drafts_are_ignored_and_pre_releases_need_the_query_key(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    stub.publish("acme", "app", "v3.0.0", {NATIVE: b"draft"}, draft=True)
    stub.publish("acme", "app", "v1.1.0", {NATIVE: b"flagged"}, prerelease=True)  # flag on a final-looking tag
    stub.publish("acme", "app", "v1.2.0-rc.1", {NATIVE: b"rc"})                   # semver pre-release tag
    assert ghr().latest().version == "1.0.0"
    assert ghr("?pre-release=true").latest().version == "1.2.0-rc.1"
    # Drafts are listed to us (we are authenticated) yet never chosen, even with pre-releases on.
    assert ghr("?pre-release=true&artifact=%s" % NATIVE).latest().version != "3.0.0"


def test_slot_and_refused_versions_apply(stub):
    stub.publish("acme", "app", "v1.0.0+blue", {NATIVE: b"b1"})
    stub.publish("acme", "app", "v1.1.0+green", {NATIVE: b"g"})
    stub.publish("acme", "app", "v1.0.5+blue", {NATIVE: b"b2"})
    assert ghr(slot="blue").latest().version == "1.0.5+blue"
    assert ghr(slot="blue").latest(exclude=["1.0.5+blue"]).version == "1.0.0+blue"
    release = ghr(slot="blue").latest()
    assert fetch(release.artifact_url) == b"b2"  # `+` in the tag survives the artifact URL


def test_calver_tags(stub):
    stub.publish("acme", "app", "v2024.01.3", {NATIVE: b"a"})
    stub.publish("acme", "app", "v2024.02.1", {NATIVE: b"b"})
    stub.publish("acme", "app", "v1.9.9", {NATIVE: b"semver"})
    assert ghr("?calver=YYYY.0M.MICRO").latest().tag == "v2024.02.1"


def test_nothing_deployable_says_why(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"d"}, draft=True)
    stub.publish("acme", "app", "v1.1.0", {NATIVE: b"p"}, prerelease=True)
    with pytest.raises(RegistryError) as err:
        ghr().latest()
    message = str(err.value)
    assert "acme/app" in message and "1 draft" in message and "1 marked pre-release" in message
    assert "\n" not in message


def test_github_artifact_variable(stub, clean_env):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"native", "site.tar.gz": b"site"})
    assert ghr().latest().artifact_name == NATIVE  # by this host's OS/arch
    clean_env.setenv("GITHUB_ARTIFACT", "site.tar.gz")
    assert ghr().latest().artifact_name == "site.tar.gz"
    assert ghr("?artifact=%s" % NATIVE).latest().artifact_name == NATIVE  # the query key wins


# ------------------------------------------------------------------------------------------ conditional polling
def test_unchanged_poll_sends_if_none_match_gets_304_and_downloads_nothing(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a", "checksums.txt": b"x"}, digests=False)
    reg = ghr()
    first = reg.latest()
    assert first.checksum_source is None or first.checksum_source == "checksums.txt"
    assert reg.not_modified is False
    stub.clear()
    second = reg.latest()
    (poll,) = stub.requests  # one request, nothing else: no asset, no checksum, no storage
    assert poll.headers.get("if-none-match") and poll.status == 304
    assert second == first
    assert reg.not_modified is True  # the poller's metrics count it as dewy_registry_requests_total{result="not_modified"}
    # A change (a new release) is a 200 again, and the new answer is used.
    stub.publish("acme", "app", "v1.1.0", {NATIVE: b"b"})
    stub.clear()
    assert reg.latest().version == "1.1.0"
    assert [r.status for r in stub.recorded("api", contains="/releases")][0] == 200
    assert reg.not_modified is False


def test_304_does_not_use_up_the_rate_limit(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    reg = ghr()
    reg.latest()
    before = stub.rate_remaining
    for _ in range(3):
        reg.latest()
    assert stub.rate_remaining == before
    assert [r.status for r in stub.recorded("api")][-3:] == [304, 304, 304]


def test_next_page_only_when_the_first_holds_nothing_deployable(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"stable"})
    for i in range(100):  # newer releases, all marked pre-release: the whole first page
        stub.publish("acme", "app", "v2.0.%d" % i, {NATIVE: b"pre"}, prerelease=True)
    release = ghr().latest()
    assert release.version == "1.0.0"
    pages = stub.recorded("api", "GET", "/releases")
    assert len(pages) == 2
    assert pages[1].path.startswith("/repositories/") and pages[1].query["page"] == "2"  # the Link, as given
    stub.clear()
    assert ghr("?pre-release=true").latest().version == "2.0.99"
    assert len(stub.recorded("api", "GET", "/releases")) == 1  # page 1 had one: no page 2


def test_second_page_is_polled_conditionally_too(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"stable"})
    for i in range(100):
        stub.publish("acme", "app", "v2.0.%d" % i, {NATIVE: b"pre"}, prerelease=True)
    reg = ghr()
    reg.latest()
    stub.clear()
    assert reg.latest().version == "1.0.0"
    assert [(r.status, bool(r.headers.get("if-none-match"))) for r in stub.requests] == [(304, True), (304, True)]


# ------------------------------------------------------------------------------------------ checksums
def test_asset_digest_is_the_expected_checksum(stub):
    data = b"artifact bytes"
    stub.publish("acme", "app", "v1.0.0", {NATIVE: data})
    release = ghr().latest()
    assert release.sha256 == hashlib.sha256(data).hexdigest()
    assert release.checksum_source == "GitHub asset digest"
    assert not stub.recorded("storage")  # the digest costs no download


def test_checksums_file_when_there_is_no_digest(stub):
    data = b"artifact bytes"
    sums = ("%s  %s\n" % (hashlib.sha256(data).hexdigest(), NATIVE)).encode()
    stub.publish("acme", "app", "v1.0.0", {NATIVE: data, "app_checksums.txt": sums}, digests=False)
    release = ghr().latest()
    assert (release.sha256, release.checksum_source) == (hashlib.sha256(data).hexdigest(), "app_checksums.txt")
    (download,) = stub.recorded("api", "GET", "/releases/assets/")
    assert download.headers["accept"] == "application/octet-stream"
    assert stub.recorded("storage") and not stub.storage_auth_violations()


def test_no_checksum_published(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"x"}, digests=False)
    release = ghr().latest()
    assert (release.sha256, release.checksum_source) == (None, None)


# ------------------------------------------------------------------------------------------ not yet uploaded
def test_release_without_its_artifact_is_waited_for_with_its_publish_time(stub):
    """A release without an asset for this host is an answer, not an outage, however old: the poller gets when
    it was published, to wait quietly while CI uploads and warn (in the log and `dewy status`) after that."""
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"old"})
    stub.publish("acme", "app", "v1.1.0", {"notes.txt": b"ci still building"})
    with pytest.raises(NotYetPublished, match="waiting for the upload") as err:
        ghr().latest()
    assert "1.1.0" in str(err.value) and "%s/%s" % (OS_NAME, ARCH_NAME) in str(err.value)
    assert abs(err.value.since - time.time()) < 60
    stuck = time.time() - 31 * 60
    stub.publish("acme", "app", "v1.2.0", {"notes.txt": b"stuck"}, published_at=stuck)
    with pytest.raises(NotYetPublished, match="published at .*: waiting for the upload") as err:
        ghr().latest()
    assert abs(err.value.since - stuck) < 2


# ------------------------------------------------------------------------------------------ rate limits
def test_remaining_zero_stops_calls_until_the_reset_and_logs_once(stub, caplog):
    caplog.set_level(logging.DEBUG)
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    reset = int(time.time()) + 2
    stub.set_rate(1, reset)  # this answer is the hour's last
    reg = ghr()
    assert reg.latest().version == "1.0.0"
    calls = len(stub.requests)
    for _ in range(3):
        with pytest.raises(RegistryError) as err:
            reg.latest()
        assert "no calls until %s" % github.when(reset) in str(err.value)
    assert len(stub.requests) == calls  # not a single call while limited
    limited = [r for r in caplog.records if "rate limit" in r.getMessage() and "cleared" not in r.getMessage()]
    # Said once, at debug: the poller logs the RateLimited error itself once per outage.
    assert len(limited) == 1 and limited[0].levelno == logging.DEBUG
    wait_until(lambda: time.time() >= reset, 5, "the rate-limit reset time")
    assert reg.latest().version == "1.0.0"
    assert [r.getMessage() for r in caplog.records].count("GitHub API rate limit cleared") == 1


@pytest.mark.parametrize("status", [403, 429])
def test_retry_after_is_obeyed(stub, status):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    stub.fail_next(status, retry_after=120)
    reg = ghr()
    before = time.time()
    with pytest.raises(RegistryError) as err:
        reg.latest()
    assert "Retry-After 120" in str(err.value) and "HTTP %d" % status in str(err.value)
    calls = len(stub.requests)
    with pytest.raises(RegistryError):
        reg.latest()
    assert len(stub.requests) == calls
    assert reg.client.limited_until >= before + 119


def test_secondary_rate_limit_without_retry_after_waits_a_minute(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    stub.fail_next(403)  # GitHub's "You have exceeded a secondary rate limit" message, no header
    reg = ghr()
    before = time.time()
    with pytest.raises(RegistryError, match="secondary rate limit"):
        reg.latest()
    assert before + 59 <= reg.client.limited_until <= time.time() + 61


def test_a_plain_403_is_an_error_not_a_rate_limit(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    stub.fail_next(403, message="Resource not accessible by integration")
    reg = ghr()
    with pytest.raises(RegistryError, match="403 Forbidden: Resource not accessible by integration"):
        reg.latest()
    assert reg.latest().version == "1.0.0"  # no wait imposed


def test_403_with_remaining_zero_waits_for_the_reset(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    stub.set_rate(0, time.time() + 600)
    with pytest.raises(RegistryError) as err:
        ghr().latest()
    assert "no calls until %s" % github.when(stub.rate_reset) in str(err.value)


def test_5xx_and_connection_refused_are_registry_errors(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    stub.fail_next(502)
    reg = ghr()
    with pytest.raises(RegistryError) as err:
        reg.latest()
    assert "502" in str(err.value) and "\n" not in str(err.value)
    assert reg.latest().version == "1.0.0"  # not a rate limit: the next poll asks again
    stub.close()
    with pytest.raises(RegistryError) as err:
        reg.latest()
    assert "refused" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ auth
def test_token_never_in_errors_or_logs(stub, clean_env, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "ghp_not_a_valid_token_zz9"
    clean_env.setenv("GH_TOKEN", secret)  # GH_TOKEN wins over GITHUB_TOKEN
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    with pytest.raises(RegistryError) as err:
        ghr().latest()
    assert "401" in str(err.value) and "Bad credentials" in str(err.value)
    assert stub.requests[0].headers["authorization"] == "Bearer " + secret
    assert secret not in str(err.value) and secret not in caplog.text


def test_redaction_of_a_token_echoed_by_a_server(stub):
    client = github.client_from_env()
    assert client.redact("bad header Bearer %s here" % TOKEN) == "bad header Bearer *** here"


def test_no_credentials_works_with_one_warning(stub, clean_env, caplog):
    caplog.set_level(logging.INFO)
    clean_env.delenv("GITHUB_TOKEN")
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"public"})
    stub.publish("acme", "app", "v2.0.0", {NATIVE: b"draft"}, draft=True)
    release = ghr().latest()
    assert release.version == "1.0.0"
    assert fetch(release.artifact_url) == b"public"  # the artifact shares the client: no second warning
    ghr().latest()
    warnings = [r for r in caplog.records if "60 requests per hour" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert all("authorization" not in r.headers for r in stub.requests)


def _app_key(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    path = tmp_path / "app.pem"
    path.write_text(pem)
    return pem, public, path


def test_github_app_token_exchange_and_renewal(clean_env, tmp_path):
    pem, public, path = _app_key(tmp_path)
    with GitHubStub(tokens=(), app_id=31337, app_public_key=public, installation_id=777) as stub:
        clean_env.setenv("GITHUB_API_URL", stub.api_url)
        clean_env.setenv("GITHUB_APP_ID", "31337")
        clean_env.setenv("GITHUB_APP_INSTALLATION_ID", "777")
        clean_env.setenv("GITHUB_APP_PRIVATE_KEY_PATH", str(path))
        stub.publish("acme", "app", "v1.0.0", {NATIVE: b"app"})
        stub.token_lifetime = 3600
        reg = ghr()
        release = reg.latest()
        assert fetch(release.artifact_url) == b"app"
        reg.latest()
        exchanges = stub.recorded("api", "POST", "/access_tokens")
        assert len(exchanges) == 1 and exchanges[0].path == "/app/installations/777/access_tokens"
        (claims,) = stub.jwts
        now = time.time()
        assert claims["iss"] == "31337" and now - 75 <= claims["iat"] <= now - 50
        assert claims["exp"] - now <= 600
        token = exchanges[0].status == 201 and next(iter(stub.installation_tokens))
        listing = stub.recorded("api", "GET", "/releases")
        assert all(r.headers["authorization"] == "Bearer " + token for r in listing)
        # Tokens that expire within the renewal margin are renewed before the next call.
        stub.token_lifetime = 120
        reg.client.auth.invalidate()
        reg.latest()
        reg.latest()
        assert len(stub.recorded("api", "POST", "/access_tokens")) == 3  # bought, then renewed before use
        stub.token_lifetime = 3600
        reg.latest()
        reg.latest()
        assert len(stub.recorded("api", "POST", "/access_tokens")) == 4
        last = stub.recorded("api", "GET", "/releases")[-1]
        assert last.status == 304 and stub.installation_tokens[last.headers["authorization"][7:]] > time.time() + 3000


def test_github_app_token_revoked_early_is_bought_again(clean_env, tmp_path):
    pem, public, path = _app_key(tmp_path)
    with GitHubStub(tokens=(), app_id=8, app_public_key=public, installation_id=3) as stub:
        for var, value in (("GITHUB_API_URL", stub.api_url), ("GITHUB_APP_ID", "8"),
                           ("GITHUB_APP_INSTALLATION_ID", "3"), ("GITHUB_APP_PRIVATE_KEY_PATH", str(path))):
            clean_env.setenv(var, value)
        stub.publish("acme", "app", "v1.0.0", {NATIVE: b"app"})
        reg = ghr()
        reg.latest()
        stub.installation_tokens.clear()  # revoked on GitHub's side
        with pytest.raises(RegistryError, match="401"):
            reg.latest()
        assert reg.latest().version == "1.0.0"
        assert len(stub.recorded("api", "POST", "/access_tokens")) == 2


def test_github_app_key_from_the_environment_and_bad_key(clean_env, tmp_path, caplog):
    pem, public, _ = _app_key(tmp_path)
    with GitHubStub(tokens=(), app_id=5, app_public_key=public, installation_id=9) as stub:
        clean_env.setenv("GITHUB_API_URL", stub.api_url)
        clean_env.setenv("GITHUB_APP_ID", "5")
        clean_env.setenv("GITHUB_APP_INSTALLATION_ID", "9")
        clean_env.setenv("GITHUB_APP_PRIVATE_KEY", pem.replace("\n", "\\n"))  # as an env file holds it
        stub.publish("acme", "app", "v1.0.0", {NATIVE: b"app"})
        assert ghr().latest().version == "1.0.0"
        other_pem, _, _ = _app_key(tmp_path)  # signed with a key the App does not have
        clean_env.setenv("GITHUB_APP_PRIVATE_KEY", other_pem)
        forget_github_clients()
        with pytest.raises(RegistryError) as err:
            ghr().latest()
        assert "installation token" in str(err.value) and "401" in str(err.value)
        assert "PRIVATE KEY" not in str(err.value) and "PRIVATE KEY" not in caplog.text


def test_incomplete_app_variables_are_config_errors(clean_env, tmp_path):
    clean_env.setenv("GITHUB_APP_ID", "5")
    with pytest.raises(ValueError, match="GITHUB_APP_INSTALLATION_ID"):
        registry.validate_url("ghr://acme/app")
    clean_env.setenv("GITHUB_APP_INSTALLATION_ID", "9")
    with pytest.raises(ValueError, match="GITHUB_APP_PRIVATE_KEY"):
        registry.validate_url("ghr://acme/app")
    clean_env.setenv("GITHUB_APP_PRIVATE_KEY_PATH", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="not a readable file"):
        registry.validate_url("ghr://acme/app")


# ------------------------------------------------------------------------------------------ enterprise
@pytest.mark.parametrize("var", ["GITHUB_API_URL", "GITHUB_ENDPOINT"])
def test_enterprise_api_url_with_a_path(clean_env, var):
    with GitHubStub(prefix="/api/v3", tokens=(TOKEN,)) as stub:
        clean_env.setenv(var, stub.api_url + "/")
        clean_env.setenv("GITHUB_TOKEN", TOKEN)
        stub.publish("acme", "app", "v1.0.0", {NATIVE: b"ghe"})
        release = ghr().latest()
        assert fetch(release.artifact_url) == b"ghe"
        assert all(r.path.startswith("/api/v3/") for r in stub.recorded("api"))


def test_bad_urls_and_endpoints_are_config_errors(clean_env):
    for url, words in [("ghr://acme", "ghr://OWNER/REPO"), ("ghr://acme/app/extra", "ghr://OWNER/REPO"),
                       ("ghr://acme/app?pre-release=maybe", "pre-release"), ("ghr://acme/app?bucket=x", "bucket")]:
        with pytest.raises(ValueError, match=words):
            registry.validate_url(url)
    clean_env.setenv("GITHUB_API_URL", "http://ghe.example.com/api/v3")
    with pytest.raises(ValueError, match="https"):
        registry.validate_url("ghr://acme/app")
    clean_env.setenv("GITHUB_API_URL", "ftp://ghe.example.com")
    with pytest.raises(ValueError, match="GITHUB_API_URL"):
        artifact.validate_url("ghr://acme/app/tag/v1/x.tar.gz")


# ------------------------------------------------------------------------------------------ artifact
def test_download_follows_302_without_the_token(stub):
    data = bytes(range(256)) * 9000  # > 2 MiB: several chunks
    stub.publish("acme", "app", "v1.0.0", {NATIVE: data})
    assert fetch(ghr().latest().artifact_url) == data
    (api,) = stub.recorded("api", "GET", "/releases/assets/")
    assert api.status == 302 and api.headers["authorization"] == "Bearer " + TOKEN
    (storage,) = stub.recorded("storage")
    assert storage.status == 200 and "authorization" not in storage.headers
    assert not stub.storage_auth_violations()


def test_the_artifact_tells_its_size_for_download_progress(stub):
    data = b"x" * 123_457
    stub.publish("acme", "app", "v1.0.0", {NATIVE: data})
    fetcher = artifact.from_url(ghr().latest().artifact_url)
    fetcher.fetch(io.BytesIO())
    assert fetcher.size() == len(data)


def test_the_storage_stand_in_refuses_a_token(stub):
    """The proof above is only worth something if the stand-in would catch a leaked token."""
    import requests

    asset = stub.publish("acme", "app", "v1.0.0", {NATIVE: b"x"})["assets"][0]
    api = requests.get("%s/repos/acme/app/releases/assets/%d" % (stub.api_url, asset["id"]), timeout=10,
                       headers={"Accept": "application/octet-stream", "Authorization": "Bearer " + TOKEN},
                       allow_redirects=False)
    leaked = requests.get(api.headers["Location"], headers={"Authorization": "Bearer " + TOKEN}, timeout=10)
    assert leaked.status_code == 400 and len(stub.storage_auth_violations()) == 1


def test_download_resumes_with_range_after_a_broken_connection(stub):
    data = hashlib.sha256(b"seed").digest() * 100_000  # 3.2 MB
    stub.publish("acme", "app", "v1.0.0", {NATIVE: data})
    release = ghr().latest()
    stub.cut_after = 1_000_000
    assert fetch(release.artifact_url) == data
    first, second = stub.recorded("storage")
    assert "range" not in first.headers
    # Resumed where the bytes stopped (less the chunk in flight), not from the start.
    start = int(second.headers["range"][len("bytes="):-1])
    assert 900_000 <= start <= 1_000_000 and second.headers["range"].endswith("-")
    assert second.status == 206 and not stub.storage_auth_violations()


@pytest.mark.parametrize("tag_in_url", ["v1.0.0+blue", "v1.0.0%2Bblue"])
def test_artifact_url_as_dewy_writes_it_is_looked_up_by_tag(stub, tag_in_url):
    stub.publish("acme", "app", "v1.0.0+blue", {"site.tar.gz": b"by tag"})
    assert fetch("ghr://acme/app/tag/%s/site.tar.gz" % tag_in_url) == b"by tag"
    (lookup,) = stub.recorded("api", "GET", "/releases/tags/")
    assert lookup.path == "/repos/acme/app/releases/tags/v1.0.0+blue"


def test_artifact_errors(stub):
    stub.publish("acme", "app", "v1.0.0", {"a.tar.gz": b"a"})
    with pytest.raises(ArtifactError, match="no such asset"):
        fetch("ghr://acme/app/tag/v1.0.0/b.tar.gz")
    with pytest.raises(ArtifactError, match="no release tagged v9"):
        fetch("ghr://acme/app/tag/v9/b.tar.gz")
    for bad in ("ghr://acme/app/v1.0.0/a.tar.gz", "ghr://acme/app/tag/v1.0.0"):
        with pytest.raises(ValueError, match="ghr://OWNER/REPO/tag/TAG/ASSET"):
            artifact.validate_url(bad)


# ------------------------------------------------------------------------------------------ report
def _shipped(release, error=None):
    return audit.Shipped(host="web-1", mode="server", time_ns=1_764_139_812_123_456_789, version=release.version,
                         tag=release.tag, previous_version="0.9.0", error=error)


def test_report_uploads_the_shipped_to_asset(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    reg = ghr()
    release = reg.latest()
    shipped = _shipped(release)
    reg.report(release, shipped)
    (upload,) = stub.recorded("uploads", "POST")
    assert upload.path == "/repos/acme/app/releases/%d/assets" % stub.release("acme", "app", "v1.0.0")["id"]
    assert upload.query == {"name": shipped.filename()} and upload.headers["content-type"] == "text/plain"
    assert upload.headers["authorization"] == "Bearer " + TOKEN
    assert shipped.filename() == "shipped_to_web-1_server_at_20251126T065012.123456789Z.txt"
    assert stub.asset_bytes("acme", "app", "v1.0.0", shipped.filename()).decode() == shipped.text()
    # The record is an asset now; it is not an artifact, and the release is still the same.
    assert reg.latest().artifact_name == NATIVE


def test_report_sends_the_token_to_no_other_host_than_the_apis(stub):
    """A release whose upload_url names another host (here `localhost`, the same stub under another name):
    the token is not sent there, and the error says why."""
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    rel = stub.release("acme", "app", "v1.0.0")
    rel["upload_url"] = rel["upload_url"].replace("127.0.0.1", "localhost")
    reg = ghr()
    release = reg.latest()
    with pytest.raises(RegistryError, match="upload_url is on localhost:[0-9]+, not on the API's uploads host"):
        reg.report(release, _shipped(release))
    assert not stub.recorded("uploads")


def test_uploads_host_is_the_apis_host_or_githubs_uploads_host():
    com = github.Client("https://api.github.com", github.Auth())
    assert com.uploads_host("https://uploads.github.com/repos/a/b/releases/1/assets")
    assert not com.uploads_host("http://uploads.github.com/repos/a/b/releases/1/assets")
    assert not com.uploads_host("https://uploads.github.com.evil.example/x")
    ghe = github.Client("https://ghe.example.com/api/v3", github.Auth())
    assert ghe.uploads_host("https://ghe.example.com/api/uploads/repos/a/b/releases/1/assets")
    assert not ghe.uploads_host("https://uploads.github.com/repos/a/b/releases/1/assets")


def test_report_of_a_failed_deploy_uploads_nothing(stub):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    reg = ghr()
    release = reg.latest()
    reg.report(release, _shipped(release, error="did not start"))
    assert not stub.recorded("uploads")


def test_report_looks_up_the_release_when_it_was_not_listed_and_says_why_it_fails(stub, clean_env):
    stub.publish("acme", "app", "v1.0.0", {NATIVE: b"a"})
    release = ghr().latest()
    fresh = ghr()  # e.g. a poller restarted between deploy and report
    fresh.report(release, _shipped(release))
    assert stub.recorded("api", "GET", "/releases/tags/v1.0.0")
    with pytest.raises(RegistryError, match="already_exists|422"):
        fresh.report(release, _shipped(release))  # the same name twice: GitHub's 422
    clean_env.delenv("GITHUB_TOKEN")
    forget_github_clients()
    with pytest.raises(RegistryError, match="without GitHub credentials"):
        ghr().report(release, _shipped(release))
