"""`ghr://owner/repo/tag/<tag>/<asset>` (Dewy's form): a release asset on GitHub Releases.

The asset's id comes from the ghr:// registry's listing when it made the URL (same process), else from
`GET /repos/{o}/{r}/releases/tags/{tag}`. The bytes come from `GET /repos/{o}/{r}/releases/assets/{id}`
with `Accept: application/octet-stream`, which redirects to a storage host; dewy.github follows that
redirect without the GitHub token. A broken download resumes with a Range request.
"""

import urllib.parse
from typing import BinaryIO

from dewy import github, urls
from dewy.artifact.base import Artifact, ArtifactError, copy_resuming

# requests hands out a chunk only once it is complete: a connection that breaks loses the partial chunk,
# so smaller chunks than the 1 MiB default mean less to fetch again on resume.
READ_CHUNK = 64 * 1024
USAGE = "ghr://OWNER/REPO/tag/TAG/ASSET (e.g. ghr://linyows/dewy/tag/v1.2.3/dewy_linux_amd64.tar.gz)"


def parse_asset_url(url: str) -> tuple:
    """(owner, repo, tag, asset name) of a ghr:// artifact URL; ValueError naming the expected form.

    Segments are percent-decoded one by one, so a tag written raw (`v1.2.3+blue`, as Dewy does) or
    quoted (`v1.2.3%2Bblue`) both work.
    """
    parts = urllib.parse.urlsplit((url or "").strip())
    segments = [urllib.parse.unquote(s) for s in parts.path.split("/")[1:]]
    if parts.scheme.lower() != "ghr" or not parts.netloc or len(segments) < 4 or segments[1] != "tag":
        raise ValueError("ghr:// artifact URL must be " + USAGE)
    owner, repo, tag, name = parts.netloc, segments[0], "/".join(segments[2:-1]), segments[-1]
    if not repo or not tag or not name:
        raise ValueError("ghr:// artifact URL must be " + USAGE)
    return owner, repo, tag, name


class GitHubArtifact(Artifact):
    """Streams one release asset to a file object, resuming with Range after a broken connection."""

    resumable = True  # also from `start`; validator: the asset's id (an asset uploaded again gets a new one)

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError unless the URL has Dewy's form and the GitHub environment is usable."""
        path = "/".join(urllib.parse.quote(p, safe="") for p in parsed.path.split("/"))
        parse_asset_url("ghr://%s%s" % (parsed.netloc, path))
        github.check_api_url(github.api_url_from_env())
        github.check_auth_env()

    def __init__(self, url: str):
        super().__init__(url)
        self.owner, self.repo, self.tag, self.name = parse_asset_url(url)
        self.client = github.client_from_env()

    @property
    def what(self) -> str:
        """The asset in words, for messages."""
        return "GitHub asset %s of release %s of %s/%s" % (self.name, self.tag, self.owner, self.repo)

    def asset_id(self):
        """The asset's id: from the registry's listing when it has one, else looked up by tag."""
        asset = github.known_asset(self.client.api_url, self.owner, self.repo, self.tag, self.name)
        if asset is not None and asset.get("id") is not None:
            return asset["id"]
        url = self.client.url("/repos/%s/%s/releases/tags/%s" % tuple(
            urllib.parse.quote(p, safe="") for p in (self.owner, self.repo, self.tag)))
        try:
            release, _, _ = self.client.get_json(url, "release %s of %s/%s" % (self.tag, self.owner, self.repo),
                                                 conditional=False)
        except github.GitHubError as exc:
            if exc.status == 404:
                raise ArtifactError("%s: no release tagged %s" % (self.what, self.tag)) from None
            raise ArtifactError(str(exc)) from None
        for asset in release.get("assets") or []:
            if isinstance(asset, dict) and asset.get("name") == self.name:
                github.remember_asset(self.client.api_url, self.owner, self.repo, self.tag, asset)
                return asset.get("id")
        raise ArtifactError("%s: the release has no such asset" % self.what)

    def fetch(self, out: BinaryIO) -> None:
        """Stream the asset into out in 64 KiB chunks; resume with Range if the connection breaks."""
        asset_id = self.asset_id()
        if self.start and self.validator != str(asset_id):
            raise ArtifactError("%s: uploaded again since its first %d bytes were downloaded: cannot resume"
                                % (self.what, self.start))
        self.validator = str(asset_id)

        def open_at(offset: int):
            response = github.open_asset(self.client, self.owner, self.repo, asset_id, offset)
            if response is not None and not offset and response.headers.get("Content-Length", "").isdigit():
                self.total = int(response.headers["Content-Length"])  # for download progress
            elif response is not None and offset == self.start:
                whole = response.headers.get("Content-Range", "").rpartition("/")[2]
                self.total = int(whole) if whole.isdigit() else None
            return None if response is None else response.iter_content(READ_CHUNK)

        try:
            copy_resuming(open_at, out, self.what, start=self.start)
        except github.GitHubError as exc:
            raise ArtifactError("%s: %s" % (self.what, exc)) from None
