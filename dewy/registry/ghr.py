"""`ghr://owner/repo?artifact=NAME&pre-release=true&calver=FMT`: releases published on GitHub Releases.

The newest release is chosen by its tag's version (never GitHub's "latest" flag); drafts are ignored,
and pre-releases (GitHub's `prerelease` flag or a semver pre-release tag) count only with
`pre-release=true`. The release list is polled conditionally (ETag / If-None-Match): an unchanged
list is a 304, which GitHub does not count against the rate limit, and re-uses the kept answer.
Auth, Enterprise endpoints and rate limits live in dewy.github (shared with the ghr:// artifact store).
"""

import logging
import os
import re
import urllib.parse
from typing import Iterable

from dewy import checksums, github, urls
from dewy.registry.base import NothingDeployable, NotYetPublished, Registry, RegistryError, Release, inside

log = logging.getLogger("dewy.registry")

PER_PAGE = 100              # the most GitHub gives per page
MAX_PAGES = 50              # 5000 releases: past that, something else is wrong
DIGEST = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,99})$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def owner_repo(parsed: urls.ParsedURL) -> tuple:
    """(owner, repo) of a parsed ghr://owner/repo URL; ValueError naming what is wrong."""
    owner, repo = parsed.netloc, parsed.path.strip("/")
    if not owner or not repo or "/" in repo or not _OWNER.match(owner) or not _REPO.match(repo) \
            or repo in (".", ".."):
        raise ValueError("ghr:// registry URL must be ghr://OWNER/REPO (e.g. ghr://linyows/dewy), got "
                         "owner %r and repo %r" % (owner, repo))
    return owner, repo


def check_environment() -> None:
    """Raise ValueError for a bad GITHUB_API_URL or incomplete GitHub App variables."""
    github.check_api_url(github.api_url_from_env())
    github.check_auth_env()


class GitHubRegistry(Registry):
    """Polls `GET /repos/{owner}/{repo}/releases` conditionally and picks the newest deployable tag."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a malformed owner/repo, a bad query value or a bad GitHub environment."""
        owner_repo(parsed)
        super().validate(parsed)
        check_environment()

    def __init__(self, url: str, cache=None, slot: str = ""):
        # $GITHUB_ARTIFACT is the default of ?artifact= (Dewy's variable).
        self.default_artifact = os.environ.get("GITHUB_ARTIFACT") or None
        super().__init__(url, cache=cache, slot=slot)
        self.owner, self.repo = owner_repo(self.parsed)
        self.client = github.client_from_env()
        self._memo = None       # (pages, exclude, Release): the answer of an unchanged list
        self._by_tag = {}       # tag -> release JSON of the last listing (report() needs upload_url)
        self._texts = {}        # (asset id, updated_at) -> checksum file text
        self.not_modified = False  # the last latest() was answered by 304s only (the poller's metrics count it)

    @property
    def where(self) -> str:
        """owner/repo, for messages."""
        return "%s/%s" % (self.owner, self.repo)

    # ---------------------------------------------------------------- latest
    def latest(self, exclude: Iterable[str] = ()) -> Release:
        """The newest deployable release; RegistryError (NotYetPublished while CI uploads) otherwise."""
        exclude = tuple(sorted(set(exclude)))
        try:
            return self._latest(exclude)
        except github.GitHubError as exc:
            raise RegistryError(str(exc)) from None

    def _latest(self, exclude: tuple) -> Release:
        client = self.client
        url = client.url("/repos/%s/%s/releases" % (_q(self.owner), _q(self.repo)), per_page=PER_PAGE)
        listed, pages, changed = [], [], False
        for _ in range(MAX_PAGES):
            data, link, fresh = client.get_json(url, "list releases of %s" % self.where, timeout=self.timeout)
            if not isinstance(data, list):
                raise RegistryError("GitHub API list releases of %s: expected a list, got %s"
                                    % (self.where, type(data).__name__))
            changed = changed or fresh
            pages.append(url)
            listed.extend(r for r in data if isinstance(r, dict))
            usable, ignored = self._usable(listed)
            try:
                tag = self.newest_tag(list(usable), exclude, where=self._where(len(listed), ignored))
                break
            except RegistryError:
                # Only when nothing on the pages so far is deployable is the next page worth a request.
                url = github.next_link(link)
                if url is None:
                    raise
                if not client.same_origin(url):
                    raise RegistryError("GitHub's next-page link for %s leaves the API host; not following it"
                                        % self.where) from None
        else:
            raise NothingDeployable("no deployable release in the first %d pages of %s" % (MAX_PAGES, self.where))
        memo = self._memo
        self.not_modified = not changed
        if not changed and memo is not None and memo[0] == pages and memo[1] == exclude:
            return memo[2]  # every page answered 304: the same answer as last time, nothing parsed
        self._by_tag = {r.get("tag_name"): r for r in listed if isinstance(r.get("tag_name"), str)}
        release = self._release(usable[tag], tag)
        self._memo = (pages, exclude, release)
        return release

    def _usable(self, listed: list) -> tuple:
        """(tag -> release JSON of the candidates, what was ignored as words)."""
        usable, drafts, flagged = {}, 0, 0
        for rel in listed:
            tag = rel.get("tag_name")
            if not isinstance(tag, str) or not tag:
                continue
            if rel.get("draft"):
                drafts += 1
                continue
            if rel.get("prerelease") and not self.pre_release:
                flagged += 1  # GitHub's pre-release flag counts even when the tag looks final
                continue
            usable.setdefault(tag, rel)
        ignored = []
        if drafts:
            ignored.append("%d draft%s" % (drafts, "" if drafts == 1 else "s"))
        if flagged:
            ignored.append("%d marked pre-release" % flagged)
        return usable, ignored

    def _where(self, count: int, ignored: list) -> str:
        return "%s (%d release%s%s)" % (self.where, count, "" if count == 1 else "s",
                                         ", ignored: " + ", ".join(ignored) if ignored else "")

    def _release(self, rel: dict, tag: str) -> Release:
        """The Release for one chosen GitHub release: artifact, URL, checksum."""
        version = self.version_of(tag)
        assets = rel.get("assets") if isinstance(rel.get("assets"), list) else []
        assets = [a for a in assets
                  if isinstance(a, dict) and isinstance(a.get("name"), str) and a.get("name")
                  and a.get("state", "uploaded") == "uploaded"]
        by_name = {a["name"]: a for a in assets}
        names = sorted(by_name)
        try:
            name = self.pick_artifact(version, names)
        except NotYetPublished as exc:
            # The registry answered: not an outage. `since` lets the poller warn about a release that has
            # lacked its artifact for long (and stay quiet while CI is still uploading). The message stays the
            # same from poll to poll (no "N minutes ago"): the poller says it again only when it changes.
            published = github.parse_time(rel.get("published_at") or rel.get("created_at"))
            raise NotYetPublished("%s; release %s was published %s: waiting for the upload" % (
                exc, tag, "at " + github.when(published) if published is not None else "at an unknown time"),
                since=published) from None
        asset = by_name[name]
        github.remember_asset(self.client.api_url, self.owner, self.repo, tag, asset)
        sha256, source = None, None
        match = DIGEST.match(str(asset.get("digest") or ""))
        if match:
            sha256, source = match.group(1).lower(), "GitHub asset digest"
        else:
            sha256, source = self.find_checksum(name, names, lambda n: self._read_checksum(by_name[n]))
        return Release(
            version=version,
            tag=tag,
            artifact_name=name,
            artifact_url="ghr://%s/%s/tag/%s/%s" % (self.owner, self.repo, urllib.parse.quote(tag, safe="+"),
                                                     urllib.parse.quote(name, safe="")),
            sha256=sha256,
            checksum_source=source,
        )

    def _read_checksum(self, asset: dict) -> str:
        """The text of a checksum asset (downloaded once per asset version); OSError skips a huge one."""
        key = (str(asset.get("id")), str(asset.get("updated_at")))  # a hostile answer may hold lists here
        if key not in self._texts:
            size = asset.get("size")
            if isinstance(size, (int, float)) and size > checksums.MAX_CHECKSUM_FILE:
                raise OSError("%s is too large for a checksum file" % asset.get("name"))
            while len(self._texts) >= 64:  # a few per release; a long-lived poller sees many releases
                self._texts.pop(next(iter(self._texts)))
            data = github.read_asset(self.client, self.owner, self.repo, asset.get("id"), checksums.MAX_CHECKSUM_FILE,
                                     timeout=self.timeout)
            self._texts[key] = data.decode("utf-8", errors="replace")
        return self._texts[key]

    # ---------------------------------------------------------------- report
    def owns(self, url: str) -> bool:
        """Whether url names an asset of a release of this repository (`ghr://owner/repo/tag/<tag>/<asset>`)."""
        return inside(url, "ghr://%s/%s/tag/" % (self.owner, self.repo))

    def report(self, release: Release, shipped) -> None:
        """Upload Dewy's shipped_to record as an asset of the release (successful deploys only)."""
        filename = self.record_name(shipped)
        if filename is None:
            return
        if self.client.auth.kind == "none":
            raise RegistryError("cannot upload %s to release %s of %s without GitHub credentials "
                                "(GH_TOKEN, GITHUB_TOKEN or a GitHub App)" % (filename, release.tag, self.where))
        try:
            self._upload(release.tag, filename, shipped.text().encode("utf-8"))
        except github.GitHubError as exc:
            raise RegistryError(str(exc)) from None

    def _upload(self, tag: str, filename: str, data: bytes) -> None:
        rel = self._by_tag.get(tag)
        if not rel or not rel.get("upload_url"):
            url = self.client.url("/repos/%s/%s/releases/tags/%s" % (_q(self.owner), _q(self.repo), _q(tag)))
            rel, _, _ = self.client.get_json(url, "release %s of %s" % (tag, self.where), conditional=False,
                                             timeout=self.timeout)
        if not isinstance(rel, dict):
            raise RegistryError("GitHub API release %s of %s: expected an object, got %s"
                                % (tag, self.where, type(rel).__name__))
        upload_url = re.sub(r"\{[^}]*\}$", "", str(rel.get("upload_url") or ""))
        if not upload_url.startswith(("https://", "http://")):
            raise RegistryError("release %s of %s has no upload_url" % (tag, self.where))
        if not self.client.uploads_host(upload_url):
            # The upload carries our token: never to a host the API named but does not run on.
            raise RegistryError("release %s of %s: its upload_url is on %s, not on the API's uploads host: "
                                "not sending the token there" % (tag, self.where,
                                                                 urllib.parse.urlsplit(upload_url).netloc))
        response = self.client.call("POST", upload_url, params={"name": filename},
                                    headers={"Content-Type": "text/plain"}, data=data, timeout=self.timeout)
        with response:
            if response.status_code != 201:
                raise self.client.error_for(response, "upload of %s to release %s of %s" % (filename, tag, self.where))
        log.info("uploaded %s to release %s of %s", filename, tag, self.where)


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")
