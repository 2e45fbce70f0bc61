"""`file:///abs/path` registry: versions are the directories `<path>/<tag>/` holding artifact files.

The same layout as the S3/GCS registries (`<prefix>/<semver>/<artifact>`), so a directory on a
shared disk, an rsync target or a test fixture all work as a registry.
Query keys: `pre-release=true` (also consider pre-releases), `artifact=NAME` (the file to deploy).
"""

import os
import re
import tempfile
import urllib.parse
from typing import Iterable

from dewy import urls, versions
from dewy.registry.base import Registry, RegistryError, Release

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _registry_path(parsed: urls.ParsedURL) -> str:
    """The absolute directory a parsed file:// URL names; ValueError for a relative one."""
    # file://relative/path puts "relative" into netloc: refuse it rather than guess a base directory.
    if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
        raise ValueError("file:// registry needs an absolute path, e.g. file:///srv/releases")
    return os.path.normpath(parsed.path)


def parse_sha256sums(text: str) -> dict:
    """Parse sha256sum output (`<hex>  <name>` or `<hex> *<name>` lines) into name -> hex."""
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not _HEX64.match(parts[0]):
            continue
        name = parts[1].strip()
        if name.startswith("*"):  # binary-mode marker
            name = name[1:]
        sums[os.path.basename(name)] = parts[0].lower()
    return sums


class FileRegistry(Registry):
    """A registry that is a directory of version directories on the local file system."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a relative path or a bad `pre-release` value."""
        _registry_path(parsed)
        urls.query_bool(parsed, "pre-release")
        if "artifact" in parsed.query and not _plain_name(parsed.query["artifact"]):
            raise ValueError('bad value "%s" for query key "artifact" of file://; allowed: a file name'
                             % parsed.query["artifact"])

    def __init__(self, url: str, cache=None, slot: str = ""):
        super().__init__(url, cache=cache, slot=slot)
        parsed = urls.parse(url)
        self.validate(parsed)
        self.path = _registry_path(parsed)
        self.pre_release = urls.query_bool(parsed, "pre-release")
        self.artifact = parsed.query.get("artifact") or None

    def latest(self, exclude: Iterable[str] = ()) -> Release:
        """The newest version directory (not excluded) and the artifact to deploy from it."""
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            raise RegistryError("registry directory %s does not exist" % self.path) from None
        except OSError as exc:
            raise RegistryError("cannot read registry directory %s: %s" % (self.path, exc.strerror)) from None
        tags = [name for name in entries
                if versions.parse(name) is not None and os.path.isdir(os.path.join(self.path, name))]
        tag = versions.select_newest(tags, pre_release=self.pre_release, slot=self.slot,
                                     exclude=tuple(exclude))
        if tag is None:
            raise RegistryError("no deployable version in %s (%d version directories%s%s)" % (
                self.path, len(tags), ", pre-releases ignored" if not self.pre_release else "",
                ', slot "%s"' % self.slot if self.slot else ""))
        version = versions.normalise(tag)
        version_dir = os.path.join(self.path, tag)
        try:
            files = sorted(name for name in os.listdir(version_dir)
                           if not name.startswith(".") and os.path.isfile(os.path.join(version_dir, name)))
        except OSError as exc:
            raise RegistryError("cannot read %s: %s" % (version_dir, exc.strerror)) from None
        name = self._pick_artifact(version, files)
        return Release(
            version=version,
            tag=tag,
            artifact_name=name,
            artifact_url="file://" + urllib.parse.quote(os.path.join(version_dir, name)),
            sha256=self._checksum(version_dir, name, files),
        )

    def _pick_artifact(self, version: str, files: list) -> str:
        """The artifact named by ?artifact=, else the one matching this OS/arch."""
        if self.artifact is not None:
            if self.artifact not in files:
                raise RegistryError('version %s has no artifact "%s"; files: %s'
                                    % (version, self.artifact, ", ".join(files) or "none"))
            return self.artifact
        name = versions.match_artifact([f for f in files if versions.is_artifact_name(f)])
        if name is None:
            raise RegistryError("version %s has no artifact for this OS/arch; files: %s "
                                "(name one with ?artifact=)" % (version, ", ".join(files) or "none"))
        return name

    @staticmethod
    def _checksum_files(name: str, files: list) -> list:
        """The files of a version that may publish the artifact's checksum, in order of preference."""
        candidates = [name + ".sha256", "SHA256SUMS"] + [f for f in files if f.endswith("checksums.txt")]
        return [f for f in candidates if f in files]

    def _checksum(self, version_dir: str, name: str, files: list) -> str | None:
        """The published SHA-256 of the artifact, from `<name>.sha256`, SHA256SUMS or *checksums.txt."""
        found = {}
        for candidate in self._checksum_files(name, files):
            try:
                with open(os.path.join(version_dir, candidate), encoding="utf-8", errors="replace") as fh:
                    text = fh.read(1 << 20)
            except OSError:
                continue
            sums = parse_sha256sums(text)
            if candidate == name + ".sha256" and not sums and _HEX64.match(text.strip()):
                sums = {name: text.strip().lower()}  # a bare digest, as `sha256sum | cut -d' ' -f1` writes
            if name in sums:
                found[candidate] = sums[name]
        if len(set(found.values())) > 1:
            # Two files disagree: deploying either would be a guess.
            raise RegistryError("conflicting checksums for %s in %s: %s" % (
                name, version_dir, ", ".join(sorted(found))))
        return next(iter(found.values()), None)

    def report(self, release: Release, filename: str, text: str) -> None:
        """Write `<path>/<tag>/<filename>` (atomically) so the team sees where the release was shipped."""
        if not _plain_name(filename):
            raise RegistryError("bad report file name %r" % filename)
        version_dir = os.path.join(self.path, release.tag)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".report.", dir=version_dir)
        except OSError as exc:
            raise RegistryError("cannot write report in %s: %s" % (version_dir, exc.strerror)) from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, os.path.join(version_dir, filename))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _plain_name(name: str) -> bool:
    """True for a file name without directory parts (no traversal out of a version directory)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name
