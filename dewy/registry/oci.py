"""`img://REGISTRY/REPO[:TAG]` registry: the OCI distribution API of a container registry (Dewy's container mode).

The versions are the repository's tags (`GET /v2/<repo>/tags/list`, following `Link: <...>; rel="next"`
pages), chosen by the shared rules (semver, `calver=`, `pre-release=`, refused versions). The chosen tag
is pinned by its manifest digest (`HEAD /v2/<repo>/manifests/<tag>` -> `Docker-Content-Digest`), and the
digest is part of the release's version (`1.2.0+sha256.0123456789ab`): a tag pushed again with other
content is a new release, deployed at the next poll, and refusing one digest does not refuse a fixed
re-push of the same tag. A `:TAG` in the URL follows that one tag (`:latest`) instead of the newest.

Auth as `docker login`-less hosts do it (and as Dewy reads it): `DOCKER_USERNAME` / `DOCKER_PASSWORD`;
on ghcr.io `GITHUB_TOKEN`, on ECR `AWS_ECR_PASSWORD`, on gcr.io / *-docker.pkg.dev `GCR_TOKEN`. A 401
with `WWW-Authenticate: Bearer realm=...` fetches a token from the realm (with those credentials, if
any); `Basic` sends them directly. Credentials never appear in messages.

Plain HTTP is used only for a registry marked insecure the way podman and docker mark one: a loopback
host (docker's default), an `insecure = true` entry in registries.conf (`$CONTAINERS_REGISTRIES_CONF`,
else /etc/containers/registries.conf), docker's daemon.json `insecure-registries`, or `?insecure=true`.
"""

import base64
import hashlib
import json
import logging
import os
import re
from typing import Iterable

from dewy import urls
from dewy.registry.base import NothingDeployable, Registry, RegistryError, Release, shown

log = logging.getLogger("dewy.registry")

KEYS = frozenset({"pre-release", "calver", "insecure", "constraint"})
IMAGE_FILE = "image.json"  # the release's one file: which image (by digest) to run
MAX_PAGES = 100
MAX_BODY = 10 << 20
DIGEST_IN_VERSION = 12  # hex digits of the digest kept in the version's build metadata
MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PARAM = re.compile(r'(\w+)="([^"]*)"')


def split_reference(parsed: urls.ParsedURL) -> tuple:
    """(registry host[:port], repository, tag or "") of a parsed img:// URL; ValueError when malformed.

    Docker Hub is named as docker does it: `docker.io/nginx` is `registry-1.docker.io`, `library/nginx`."""
    host = parsed.netloc
    path = parsed.path.strip("/")
    if not host or not path or "@" in host:
        raise ValueError("img:// needs a registry host and a repository, e.g. img://ghcr.io/owner/app")
    tag = ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG.match(tag):
            raise ValueError("bad tag %r in img:// URL" % shown(tag))
    if not _REPO.match(path):
        raise ValueError("bad repository %r in img:// URL (lower-case letters, digits, . _ - and /)" % shown(path))
    if host in ("docker.io", "index.docker.io"):
        host = "registry-1.docker.io"
        if "/" not in path:
            path = "library/" + path
    return host, path, tag


def credentials(host: str, environ=os.environ) -> tuple:
    """(user, password) for host from the environment variables Dewy reads, or (None, None)."""
    if "ghcr.io" in host and environ.get("GITHUB_TOKEN"):
        return "token", environ["GITHUB_TOKEN"]
    if ".ecr." in host and host.endswith(".amazonaws.com") and environ.get("AWS_ECR_PASSWORD"):
        return "AWS", environ["AWS_ECR_PASSWORD"]
    if ("gcr.io" in host or "-docker.pkg.dev" in host) and environ.get("GCR_TOKEN"):
        return "_json_key", environ["GCR_TOKEN"]
    if environ.get("DOCKER_USERNAME"):
        return environ["DOCKER_USERNAME"], environ.get("DOCKER_PASSWORD", "")
    return None, None


def _read_registries_conf(path: str) -> dict:
    """registries.conf as a dict: tomllib where Python has it (3.11+), else the few keys dewy needs."""
    with open(path, "rb") as fh:
        raw = fh.read(1 << 20)
    try:
        import tomllib
    except ImportError:  # Python 3.10: [[registry]] tables with location/prefix/insecure, nothing else
        data, entry = {"registry": []}, None
        for line in raw.decode("utf-8", "replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line == "[[registry]]":
                entry = {}
                data["registry"].append(entry)
            elif line.startswith("["):
                entry = None
            elif entry is not None and "=" in line:
                key, _, value = (part.strip() for part in line.partition("="))
                entry[key] = value == "true" if value in ("true", "false") else value.strip("\"'")
        return data
    return tomllib.loads(raw.decode("utf-8", "replace"))


def _registries_conf_insecure(host: str, environ=os.environ) -> bool:
    """Whether podman's registries.conf marks host (a `location` equal to it, or a prefix of it) insecure."""
    path = environ.get("CONTAINERS_REGISTRIES_CONF") or "/etc/containers/registries.conf"
    try:
        data = _read_registries_conf(path)
    except (OSError, ValueError):
        return False
    for entry in data.get("registry", []) if isinstance(data.get("registry"), list) else []:
        if not isinstance(entry, dict):
            continue
        location = str(entry.get("location") or entry.get("prefix") or "")
        if location and (host == location or host.startswith(location.rstrip("/") + "/")) \
                and entry.get("insecure") is True:
            return True
    # registries.conf v1: [registries.insecure] registries = [...]
    old = data.get("registries", {}).get("insecure", {}) if isinstance(data.get("registries"), dict) else {}
    return isinstance(old, dict) and host in (old.get("registries") or [])


def _docker_insecure(host: str) -> bool:
    """Whether docker's daemon.json lists host under insecure-registries."""
    try:
        with open("/etc/docker/daemon.json", encoding="utf-8") as fh:
            listed = json.load(fh).get("insecure-registries") or []
    except (OSError, ValueError, AttributeError):
        return False
    return host in listed


def is_insecure(host: str, parsed: urls.ParsedURL | None = None, environ=os.environ) -> bool:
    """Whether host may be spoken to over plain HTTP (see the module docstring for the rules)."""
    if parsed is not None and urls.query_bool(parsed, "insecure"):
        return True
    name = urls.parse("img://" + host).hostname
    return urls.is_loopback(name) or _registries_conf_insecure(host, environ) or _docker_insecure(host)


_PARTIAL = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?$")
_OPERATORS = (">=", "<=", "!=", ">", "<", "=", "^", "~")
_BELOW_PRE = "\0"  # a bound's pre-release marker: just below every pre-release of that version (2.0.0-rc.1 is not <2)


def _bounds(op: str, text: str) -> list:
    """One constraint term as [(comparison, (major, minor, patch, pre-release))]; ValueError when malformed."""
    match = _PARTIAL.match(text)
    if match is None:
        raise ValueError("bad version %r in constraint" % shown(text, 40))
    parts = [None if g is None or g in "xX*" else int(g) for g in match.groups()[:3]]
    known = next((i for i, p in enumerate(parts) if p is None), 3)  # 1.2.x: 2 numbers known
    if any(p is not None for p in parts[known:]):
        raise ValueError("bad version %r in constraint (a wildcard before a number)" % shown(text, 40))
    low = tuple(p or 0 for p in parts) + (match.group(4) or "",)

    def past(numbers: int) -> tuple:  # the first version past the first `numbers` numbers
        head = [p or 0 for p in parts[:numbers]]
        head[-1] += 1
        return tuple(head + [0] * (3 - numbers)) + (_BELOW_PRE,)

    if known == 0:  # *, x, ^*, >=x: any version
        return []
    if op == "^":  # up to the next change of the first non-zero number: ^1.2 <2, ^0.2 <0.3, ^0.0.3 <0.0.4
        nonzero = next((i + 1 for i, p in enumerate(parts[:known]) if p), known)
        return [(">=", low), ("<", past(nonzero))]
    if op == "~":  # patch changes (or minor ones when only the major is given): ~1.2.3 <1.3, ~1 <2
        return [(">=", low), ("<", past(min(2, known)))]
    if known < 3 and op in ("", "="):  # 1.2 / 1.2.x: that whole prefix
        return [(">=", low), ("<", past(known))]
    if known < 3 and op in (">", "<="):  # >1.2 is >=1.3.0; <=1.2 is <1.3.0
        return [(">=" if op == ">" else "<", past(known))]
    if op == "<" and not low[3]:  # <2 and <2.0.0 leave out 2.0.0's pre-releases too, as ^1 does
        return [("<", low[:3] + (_BELOW_PRE,))]
    return [(op or "=", low)]


def parse_constraint(text: str) -> list:
    """`>=1.2 <2`, `^1.4`, `~1.2.3`, `1.x`, `1.2 || ^2`: alternatives (`||`) of terms (space or comma) that must
    all hold, each a list of (comparison, bound); ValueError naming what is malformed."""
    alternatives = []
    for alternative in text.split("||"):
        terms, pending = [], ""
        for token in alternative.replace(",", " ").split():
            if token in _OPERATORS:  # ">= 1.2": the operator apart from its version
                if pending:
                    raise ValueError("bad constraint %r" % shown(text, 60))
                pending = token
                continue
            token, pending = pending + token, ""
            op = next((o for o in _OPERATORS if token.startswith(o)), "")
            terms.extend(_bounds(op, token[len(op):]))
        if pending or not alternative.split():
            raise ValueError("bad constraint %r" % shown(text, 60))
        alternatives.append(terms)
    return alternatives


def _order(bound: tuple) -> tuple:
    major, minor, patch, pre = bound
    if pre == _BELOW_PRE:
        return (major, minor, patch, 0, ())
    # A release sorts above its pre-releases; pre-release identifiers compare numerically or lexically (semver).
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if pre else ()
    return (major, minor, patch, 0 if pre else 1, ids)


def satisfies(version: str, constraint: list) -> bool:
    """Whether a semver version (`1.2.3`, `v1.2.3-rc.1`) meets a parse_constraint() answer."""
    from dewy import versions

    parsed = versions.parse(version)
    if parsed is None:
        return False
    here = _order((parsed.major, parsed.minor, parsed.patch, parsed.prerelease or ""))
    compare = {">=": here.__ge__, ">": here.__gt__, "<=": here.__le__, "<": here.__lt__, "=": here.__eq__,
               "!=": here.__ne__}
    return any(all(compare[op](_order(bound)) for op, bound in terms) for terms in constraint)


def digest_version(version: str, digest: str) -> str:
    """The release version naming an image digest: `1.2.0` + `sha256:0123...` -> `1.2.0+sha256.0123456789ab`."""
    return "%s+sha256.%s" % (version, digest.split(":", 1)[1][:DIGEST_IN_VERSION])


class OCIRegistry(Registry):
    """A container registry speaking the OCI distribution API (Docker Registry HTTP API v2)."""

    page_size = 1000  # tags asked per page (`?n=`); the registry may give fewer and a Link to the next

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a malformed reference or a bad query value."""
        split_reference(parsed)
        urls.query_bool(parsed, "insecure")
        if "constraint" in parsed.query:
            if "calver" in parsed.query:
                raise ValueError('query key "constraint" of img:// takes semantic versions, not calver=')
            try:
                parse_constraint(parsed.query["constraint"])
            except ValueError as exc:
                raise ValueError('bad value for query key "constraint" of img://: %s (e.g. ^1.2, ~1.2.3, '
                                 '">=1.2 <2")' % exc) from None
        super().validate(parsed)

    def __init__(self, url: str, cache=None, slot: str = ""):
        super().__init__(url, cache=cache, slot=slot)
        self.host, self.repo, self.tag = split_reference(self.parsed)
        self.scheme = "http" if is_insecure(self.host, self.parsed) else "https"
        self.user, self.password = credentials(self.host)
        text = self.parsed.query.get("constraint", "")
        self.constraint = parse_constraint(text) if text else None  # Dewy's ?constraint= (a semver range)
        self.token = None  # the Bearer token the realm gave, reused until a 401
        self._session = None

    # --- HTTP -----------------------------------------------------------------------------

    def session(self):
        """The requests Session (made on first use: constructing the registry stays cheap)."""
        if self._session is None:
            import requests
            self._session = requests.Session()
            self._session.headers["User-Agent"] = "dewy"
        return self._session

    def request(self, method: str, url: str, headers: dict | None = None):
        """One request with this registry's auth; a 401 runs the challenge (Bearer token or Basic) once."""
        import requests
        headers = dict(headers or {})
        try:
            answer = self._send(method, url, headers)
            if answer.status_code == 401:
                self._answer_challenge(answer.headers.get("WWW-Authenticate", ""))
                answer.close()
                answer = self._send(method, url, headers)
        except requests.RequestException as exc:
            raise RegistryError("registry %s: %s" % (self.host, type(exc).__name__ + _reason(exc))) from None
        if self.scheme == "https" and not answer.url.startswith("https:"):
            answer.close()  # a redirect to plain HTTP would expose the token and the answer to the network
            raise RegistryError("registry %s redirected to plain http: refused" % self.host)
        if answer.status_code == 401:
            raise RegistryError("registry %s refused our credentials for %s (401)%s" % (
                self.host, self.repo, "" if self.user else
                " (none given: set DOCKER_USERNAME and DOCKER_PASSWORD)"))
        return answer

    def _send(self, method, url, headers):
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        elif self.user is not None and getattr(self, "_basic", False):
            headers["Authorization"] = "Basic " + _basic(self.user, self.password)
        return self.session().request(method, url, headers=headers, timeout=self.timeout,
                                      allow_redirects=True, stream=True)

    def _answer_challenge(self, header: str) -> None:
        kind = header.split(" ", 1)[0].lower()
        if kind == "basic":
            if self.user is None:
                return
            self._basic = True
            return
        if kind != "bearer":
            raise RegistryError("registry %s: unsupported authentication %r" % (self.host, shown(kind, 20)))
        params = dict(_PARAM.findall(header))
        realm = params.get("realm", "")
        target = urls.parse(realm)
        if target.scheme not in ("https", "http") or not target.hostname:
            raise RegistryError("registry %s: bad token realm %r" % (self.host, shown(realm)))
        if target.scheme == "http" and not (self.scheme == "http" and is_insecure(target.netloc)):
            raise RegistryError("registry %s: refusing a plain-http token realm %s" % (self.host, shown(realm)))
        query = {k: params[k] for k in ("service", "scope") if k in params}
        query.setdefault("scope", "repository:%s:pull" % self.repo)
        headers = {"Authorization": "Basic " + _basic(self.user, self.password)} if self.user is not None else {}
        import requests
        try:
            answer = self.session().get(realm, params=query, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RegistryError("token realm of %s: %s" % (self.host, type(exc).__name__ + _reason(exc))) from None
        if answer.status_code != 200:
            raise RegistryError("token realm of %s answered %d%s" % (
                self.host, answer.status_code, " (check DOCKER_USERNAME / DOCKER_PASSWORD)"
                if answer.status_code in (401, 403) else ""))
        try:
            body = answer.json()
            self.token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            self.token = None
        if not isinstance(self.token, str) or not self.token:
            self.token = None
            raise RegistryError("token realm of %s gave no token" % self.host)

    def _json(self, answer, what: str) -> dict:
        raw = answer.raw.read(MAX_BODY + 1, decode_content=True)
        if len(raw) > MAX_BODY:
            raise RegistryError("registry %s: %s is larger than %d bytes" % (self.host, what, MAX_BODY))
        try:
            data = json.loads(raw)
        except ValueError:
            raise RegistryError("registry %s: %s is not JSON" % (self.host, what)) from None
        if not isinstance(data, dict):
            raise RegistryError("registry %s: %s is not a JSON object" % (self.host, what))
        return data

    def base(self) -> str:
        """`http(s)://host/v2/<repo>`."""
        return "%s://%s/v2/%s" % (self.scheme, self.host, self.repo)

    # --- the registry interface --------------------------------------------------------------------

    def tags(self) -> list:
        """Every tag of the repository, following the Link header's pages (at most MAX_PAGES)."""
        import urllib.parse
        url, found = self.base() + "/tags/list?n=%d" % self.page_size, []
        for _ in range(MAX_PAGES):
            answer = self.request("GET", url, {"Accept": "application/json"})
            if answer.status_code == 404:
                raise RegistryError("registry %s has no repository %s" % (self.host, self.repo))
            if answer.status_code != 200:
                raise RegistryError("registry %s: tag list of %s answered %d" % (self.host, self.repo,
                                                                                  answer.status_code))
            tags = self._json(answer, "the tag list").get("tags") or []
            found.extend(t for t in tags if isinstance(t, str))
            link = answer.headers.get("Link", "")
            match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
            if not match:
                return found
            url = urllib.parse.urljoin(url, match.group(1))
            if urls.parse(url).netloc != self.host:
                raise RegistryError("registry %s: tag list page on another host" % self.host)
        log.warning("registry %s: more than %d pages of tags for %s: using the first ones", self.host, MAX_PAGES,
                    self.repo)
        return found

    def digest(self, tag: str) -> str:
        """The manifest digest (`sha256:...`) the tag points to now."""
        url = "%s/manifests/%s" % (self.base(), tag)
        answer = self.request("HEAD", url, {"Accept": MANIFEST_TYPES})
        if answer.status_code == 404:
            raise NothingDeployable("registry %s: tag %s of %s has no manifest" % (self.host, shown(tag), self.repo))
        if answer.status_code != 200:
            raise RegistryError("registry %s: manifest of %s:%s answered %d" % (self.host, self.repo, shown(tag),
                                                                               answer.status_code))
        digest = answer.headers.get("Docker-Content-Digest", "")
        if not _DIGEST.match(digest):  # not every registry sends it on HEAD: hash the manifest itself
            answer = self.request("GET", url, {"Accept": MANIFEST_TYPES})
            raw = answer.raw.read(MAX_BODY + 1, decode_content=True)
            if answer.status_code != 200 or len(raw) > MAX_BODY:
                raise RegistryError("registry %s: cannot read the manifest of %s:%s" % (self.host, self.repo,
                                                                                        shown(tag)))
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        return digest

    def latest(self, exclude: Iterable[str] = ()) -> Release:
        """The newest tag whose (version, digest) is not excluded, pinned by its digest."""
        exclude = set(exclude)
        if self.tag:
            tags = [self.tag]
            digest = self.digest(self.tag)
            version = digest_version(versions_or_tag(self.tag, self.calver), digest)
            if version in exclude:
                raise NothingDeployable("%s:%s (%s) is refused; push a new image to that tag"
                                        % (self.repo, self.tag, digest))
            return self._release(version, self.tag, digest)
        tags = self.tags()
        if self.constraint is not None:
            inside = [t for t in tags if satisfies(t, self.constraint)]
            if tags and not inside:
                raise NothingDeployable("no tag of %s/%s meets constraint %s (%d tags)" % (
                    self.host, self.repo, shown(self.parsed.query["constraint"], 60), len(tags)))
            tags = inside
        plain = {v.split("+sha256.", 1)[0] for v in exclude}
        skipped = set()
        while True:
            tag = self.newest_tag(tags, skipped, where="%s/%s" % (self.host, self.repo))
            version = self.version_of(tag)
            digest = self.digest(tag)
            full = digest_version(version, digest)
            if full not in exclude:
                return self._release(full, tag, digest)
            if version not in plain:  # cannot happen; guards the loop
                raise NothingDeployable("%s is refused" % full)
            skipped.add(version)

    def _release(self, version: str, tag: str, digest: str) -> Release:
        from dewy.artifact.img import ImageArtifact

        url = "img://%s/%s@%s" % (self.host, self.repo, digest)
        # The record names the image by its digest, which podman/docker verify on pull: its checksum is known
        # here, so verify-checksum = required holds for container releases too.
        record = hashlib.sha256(ImageArtifact(url).record()).hexdigest()
        return Release(version=version, tag=tag, artifact_name=IMAGE_FILE, artifact_url=url, sha256=record,
                       checksum_source="the image's manifest digest")

    def owns(self, url: str) -> bool:
        """Whether url names an image of this repository pinned by digest (`img://host/repo@sha256:<hex>`)."""
        head = "img://%s/%s@" % (self.host, self.repo)
        return isinstance(url, str) and url.startswith(head) and bool(_DIGEST.match(url[len(head):]))

    def report(self, release: Release, shipped) -> None:
        """Nothing is written to a container registry (Dewy writes no shipped_to record there either)."""


def versions_or_tag(tag: str, calver: str | None) -> str:
    """The normalised version of a followed tag, or the tag itself when it is no version (`latest`)."""
    from dewy import versions
    return versions.normalise_or_none(tag, calver) or tag


def _basic(user, password) -> str:
    return base64.b64encode(("%s:%s" % (user, password or "")).encode()).decode("ascii")


def _reason(exc) -> str:
    # requests' messages can be long and carry the URL; its class name and the innermost reason suffice.
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = re.sub(r"https?://\S+", "<url>", text)
    return ": " + text[:160] if text else ""
