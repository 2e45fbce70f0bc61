"""`file:///abs/path` registry: versions are the directories `<path>/<tag>/` holding artifact files.

The same layout as the S3/GCS registries (`<prefix>/<semver>/<artifact>`), so a directory on a
shared disk, an rsync target or a test fixture all work as a registry.
Query keys: `pre-release=true` (also consider pre-releases), `artifact=NAME` (the file to deploy).
"""

import logging
import os
import tempfile
import time
import urllib.parse
from typing import Iterable

from dewy import checksums, urls
from dewy.registry.base import Registry, RegistryError, Release, inside

log = logging.getLogger("dewy.registry")

# An artifact written this recently that does not unpack (or match its checksum) may be a copy still under way:
# retried, not refused (publish by renaming a finished directory into place to avoid the wait).
YOUNG_SECONDS = 60.0

# Kept for callers that parsed checksum files through this module.
parse_sha256sums = checksums.parse_sha256sums


def _registry_path(parsed: urls.ParsedURL) -> str:
    """The absolute directory a parsed file:// URL names; ValueError for a relative one."""
    # file://relative/path puts "relative" into netloc: refuse it rather than guess a base directory.
    if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
        raise ValueError("file:// registry needs an absolute path, e.g. file:///srv/releases")
    return os.path.normpath(parsed.path)


class FileRegistry(Registry):
    """A registry that is a directory of version directories on the local file system."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a relative path or a bad query value."""
        _registry_path(parsed)
        super().validate(parsed)

    def __init__(self, url: str, cache=None, slot: str = ""):
        super().__init__(url, cache=cache, slot=slot)
        self.path = _registry_path(self.parsed)

    def latest(self, exclude: Iterable[str] = ()) -> Release:
        """The newest version directory (not excluded) and the artifact to deploy from it."""
        try:
            entries = sorted(os.listdir(self.path))
        except FileNotFoundError:
            raise RegistryError("registry directory %s does not exist" % self.path) from None
        except OSError as exc:
            raise RegistryError("cannot read registry directory %s: %s" % (self.path, exc.strerror)) from None
        tags = [name for name in entries if os.path.isdir(os.path.join(self.path, name))]
        tag = self.newest_tag(tags, exclude, where=self.path)
        version = self.version_of(tag)
        version_dir = os.path.join(self.path, tag)
        try:
            files = sorted(name for name in os.listdir(version_dir)
                           if not name.startswith(".") and os.path.isfile(os.path.join(version_dir, name)))
            # The directory's last change: a copy still under way keeps it young (the poller waits quietly).
            changed = os.stat(version_dir).st_mtime
        except OSError as exc:
            raise RegistryError("cannot read %s: %s" % (version_dir, exc.strerror)) from None
        name = self.pick_artifact(version, files, since=changed)

        def read(candidate):
            with open(os.path.join(version_dir, candidate), encoding="utf-8", errors="replace") as fh:
                return fh.read(checksums.MAX_CHECKSUM_FILE)

        sha256, source = self.find_checksum(name, files, read)
        return Release(
            version=version,
            tag=tag,
            artifact_name=name,
            artifact_url="file://" + urllib.parse.quote(os.path.join(version_dir, name)),
            sha256=sha256,
            checksum_source=source,
        )

    def unfinished(self, release: Release) -> str | None:
        """Why release's artifact may still be being copied into the registry (publishing without the atomic
        rename: `cp` straight into `v1.1.0/`, paused between writes), else None: it was written within the
        last YOUNG_SECONDS. The poller then retries a corrupt or mismatching artifact instead of refusing a good
        release for good (one still growing while read is caught by the artifact: FileArtifact.changing)."""
        if not release.artifact_url.startswith("file://"):
            return None
        path = urllib.parse.unquote(release.artifact_url[len("file://"):])
        try:
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            return None
        if age < YOUNG_SECONDS:
            return "%s was written %ds ago, it may still be being copied" % (path, max(0, round(age)))
        return None

    def owns(self, url: str) -> bool:
        """Whether url is a file:// URL of a file under this registry's directory."""
        return inside(url, "file://" + urllib.parse.quote(self.path.rstrip("/") + "/"))

    def report(self, release: Release, shipped) -> None:
        """Write `<path>/<tag>/<shipped_to file>` (atomically) so the team sees where the release was shipped."""
        filename = self.record_name(shipped)
        if filename is None:
            return
        version_dir = os.path.join(self.path, release.tag)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".report.", dir=version_dir)
        except OSError as exc:
            raise RegistryError("cannot write report in %s: %s" % (version_dir, exc.strerror)) from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(shipped.text())
            os.chmod(tmp, 0o644)
            os.replace(tmp, os.path.join(version_dir, filename))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
