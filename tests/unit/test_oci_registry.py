"""The img:// registry (dewy/registry/oci.py) against a real docker-registry (tests/containers.py), and a
stand-in speaking the distribution API's Bearer token flow (docker-registry needs an external token server)."""

import base64
import hashlib
import io
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dewy import artifact as artifact_pkg
from dewy import registry as registry_pkg
from dewy.registry import oci
from dewy.registry.base import NothingDeployable, RegistryError


def test_tags_are_listed_across_link_pages_and_the_newest_is_pinned_by_digest(oci_world):
    digests = {tag: oci_world.push("pages", tag) for tag in ("1.0.0", "1.2.0", "1.10.0", "2.0.0-rc.1", "latest")}
    reg = registry_pkg.from_url(oci_world.url("pages"))
    reg.page_size = 2  # docker-registry then answers 2 tags and a Link header per page
    assert sorted(reg.tags()) == sorted(digests)
    release = reg.latest()
    assert release.tag == "1.10.0"
    assert release.version == "1.10.0+sha256.%s" % digests["1.10.0"][7:19]
    assert release.artifact_url == "img://%s/pages@%s" % (oci_world.registry.host, digests["1.10.0"])
    assert release.artifact_name == "image.json"
    record = io.BytesIO()
    artifact_pkg.from_url(release.artifact_url).fetch(record)  # what the release directory will hold
    assert json.loads(record.getvalue())["image"] == "%s/pages@%s" % (oci_world.registry.host, digests["1.10.0"])
    assert release.sha256 == hashlib.sha256(record.getvalue()).hexdigest()  # verify-checksum = required holds
    # A shared-cache entry may name only this repository's images, by digest (dewy/registry/shared.py).
    assert reg.owns(release.artifact_url)
    assert not reg.owns(release.artifact_url.replace("/pages@", "/other@"))
    assert not reg.owns(release.artifact_url.split("@")[0] + ":1.10.0")
    # pre-release=true takes 2.0.0-rc.1; a :TAG follows that one tag.
    assert registry_pkg.from_url(oci_world.url("pages") + "?pre-release=true").latest().tag == "2.0.0-rc.1"
    # Dewy's ?constraint= (a semver range) keeps the newest inside it.
    assert registry_pkg.from_url(oci_world.url("pages") + "?constraint=~1.2").latest().tag == "1.2.0"
    assert registry_pkg.from_url(oci_world.url("pages") + "?constraint=%3C1.10").latest().tag == "1.2.0"
    with pytest.raises(NothingDeployable, match="no tag of .* meets constraint \\^3"):
        registry_pkg.from_url(oci_world.url("pages") + "?constraint=^3").latest()
    followed = registry_pkg.from_url(oci_world.url("pages") + ":latest").latest()
    assert followed.version == "latest+sha256.%s" % digests["latest"][7:19]


def test_refusing_a_digest_falls_back_to_the_next_version_but_a_re_push_is_new(oci_world):
    oci_world.push("refuse", "1.0.0")
    bad = oci_world.push("refuse", "1.1.0", content="bad build")
    reg = registry_pkg.from_url(oci_world.url("refuse"))
    refused = reg.latest().version
    assert refused == "1.1.0+sha256.%s" % bad[7:19]
    older = reg.latest(exclude={refused})
    assert older.tag == "1.0.0"
    fixed = oci_world.push("refuse", "1.1.0", content="fixed build")
    again = reg.latest(exclude={refused})
    assert again.version == "1.1.0+sha256.%s" % fixed[7:19]
    with pytest.raises(NothingDeployable):
        reg.latest(exclude={refused, older.version, again.version})


def test_htpasswd_auth_with_docker_username_and_password(oci_world, monkeypatch):
    from containers import PASSWORD, USER

    oci_world.push("private", "3.0.0", auth=True)
    monkeypatch.delenv("DOCKER_USERNAME", raising=False)
    with pytest.raises(RegistryError) as err:
        registry_pkg.from_url(oci_world.url("private", auth=True)).latest()
    assert "401" in str(err.value) and "DOCKER_USERNAME" in str(err.value)
    monkeypatch.setenv("DOCKER_USERNAME", USER)
    monkeypatch.setenv("DOCKER_PASSWORD", "wrong")
    with pytest.raises(RegistryError) as err:
        registry_pkg.from_url(oci_world.url("private", auth=True)).latest()
    assert "refused our credentials" in str(err.value) and "wrong" not in str(err.value)
    monkeypatch.setenv("DOCKER_PASSWORD", PASSWORD)
    assert registry_pkg.from_url(oci_world.url("private", auth=True)).latest().tag == "3.0.0"


class TokenRegistry(BaseHTTPRequestHandler):
    """The distribution API's token flow: /v2/... wants `Bearer t0k`, /token gives it for Basic user:pw."""

    seen = []

    def log_message(self, *args):
        pass

    def _send(self, code, body=b"", headers=None):
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        host = "127.0.0.1:%d" % self.server.server_port
        if self.path.startswith("/token"):
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"u:pw").decode():
                return self._send(401)
            return self._send(200, json.dumps({"token": "t0k"}).encode())
        if self.headers.get("Authorization") != "Bearer t0k":
            return self._send(401, headers={"WWW-Authenticate": 'Bearer realm="http://%s/token",service="reg",'
                                            'scope="repository:team/app:pull"' % host})
        if self.path.startswith("/v2/team/app/tags/list"):
            return self._send(200, json.dumps({"name": "team/app", "tags": ["0.9.0", "1.0.0"]}).encode())
        if self.path == "/v2/team/app/manifests/1.0.0":
            return self._send(200, b"{}", {"Docker-Content-Digest": "sha256:" + "ab" * 32})
        return self._send(404)

    do_HEAD = do_GET


@pytest.fixture
def token_registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    TokenRegistry.seen = []
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_bearer_token_from_the_realm_with_basic_credentials(token_registry, monkeypatch):
    monkeypatch.setenv("DOCKER_USERNAME", "u")
    monkeypatch.setenv("DOCKER_PASSWORD", "pw")
    reg = registry_pkg.from_url("img://127.0.0.1:%d/team/app" % token_registry.server_port)
    release = reg.latest()
    assert release.version == "1.0.0+sha256." + "ab" * 6
    token_calls = [p for p, _ in TokenRegistry.seen if p.startswith("/token")]
    assert token_calls == ["/token?service=reg&scope=repository%3Ateam%2Fapp%3Apull"]  # once: the token is reused
    monkeypatch.setenv("DOCKER_PASSWORD", "bad")
    with pytest.raises(RegistryError, match="token realm .* answered 401"):
        registry_pkg.from_url("img://127.0.0.1:%d/team/app" % token_registry.server_port).latest()


def test_plain_http_only_for_registries_marked_insecure(tmp_path, monkeypatch):
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "registry.lan:5000"\ninsecure = true\n'
                    '[[registry]]\nlocation = "secure.lan"\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    assert registry_pkg.from_url("img://registry.lan:5000/app").scheme == "http"
    assert registry_pkg.from_url("img://secure.lan/app").scheme == "https"
    assert registry_pkg.from_url("img://ghcr.io/owner/app").scheme == "https"
    assert registry_pkg.from_url("img://localhost:5000/app").scheme == "http"  # loopback: docker's default
    assert registry_pkg.from_url("img://ghcr.io/owner/app?insecure=true").scheme == "http"
    monkeypatch.setitem(sys.modules, "tomllib", None)  # Python 3.10: no tomllib, the small reader instead
    assert registry_pkg.from_url("img://registry.lan:5000/app").scheme == "http"
    assert registry_pkg.from_url("img://secure.lan/app").scheme == "https"


def test_references_credentials_and_bad_urls(monkeypatch):
    assert oci.split_reference(oci.urls.parse("img://docker.io/nginx")) == ("registry-1.docker.io", "library/nginx", "")
    assert oci.split_reference(oci.urls.parse("img://ghcr.io/o/app:v1")) == ("ghcr.io", "o/app", "v1")
    for bad in ("img://ghcr.io", "img://ghcr.io/Owner/App", "img://h/app:bad tag", "img://h/app?insecure=maybe"):
        with pytest.raises(ValueError):
            registry_pkg.validate_url(bad)
    env = {"GITHUB_TOKEN": "gh", "DOCKER_USERNAME": "d", "DOCKER_PASSWORD": "p", "AWS_ECR_PASSWORD": "ecr"}
    assert oci.credentials("ghcr.io", env) == ("token", "gh")
    assert oci.credentials("1.dkr.ecr.eu-west-1.amazonaws.com", env) == ("AWS", "ecr")
    assert oci.credentials("quay.io", env) == ("d", "p")
    assert oci.credentials("quay.io", {}) == (None, None)


CONSTRAINTS = {
    "^1.2": (["1.2.0", "1.9.9"], ["1.1.9", "2.0.0", "2.0.0-rc.1", "1.2.0-rc.1"]),
    "^0.2.3": (["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
    "^0.0.3": (["0.0.3"], ["0.0.4"]),
    "~1.2.3": (["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
    "~1": (["1.0.0", "1.9.0"], ["2.0.0"]),
    ">=1.2 <2": (["1.2.0", "1.99.0", "v1.5.0"], ["2.0.0", "1.1.0", "2.0.0-rc.1"]),
    ">= 1.2, < 2": (["1.2.0"], ["2.0.0"]),
    "1.x": (["1.0.0", "1.5.2"], ["2.0.0", "0.9.0"]),
    "1.2 || 3.x": (["1.2.5", "3.1.0"], ["2.0.0", "1.3.0"]),
    "*": (["0.0.1", "9.9.9"], ["latest"]),
    ">1.2": (["1.3.0"], ["1.2.9"]),
    "<=1.2": (["1.2.9"], ["1.3.0"]),
    "=1.2.3": (["1.2.3"], ["1.2.4"]),
    "!=1.2.3": (["1.2.4"], ["1.2.3"]),
    ">=2.0.0-rc.1": (["2.0.0-rc.1", "2.0.0-rc.2", "2.0.0"], ["2.0.0-beta.1", "1.9.0"]),
}


@pytest.mark.parametrize("text", sorted(CONSTRAINTS))
def test_constraints_are_semver_ranges(text):
    parsed = oci.parse_constraint(text)
    inside, outside = CONSTRAINTS[text]
    assert [v for v in inside if not oci.satisfies(v, parsed)] == []
    assert [v for v in outside if oci.satisfies(v, parsed)] == []


@pytest.mark.parametrize("url", ["img://h/app?constraint=", "img://h/app?constraint=%3E%3D", "img://h/app?constraint=1.x.2",
                                 "img://h/app?constraint=abc", "img://h/app?constraint=1%20%7C%7C",
                                 "img://h/app?constraint=^1&calver=YYYY.0M"])
def test_a_bad_constraint_is_refused_with_the_url(url):
    with pytest.raises(ValueError, match="constraint"):
        registry_pkg.validate_url(url)
