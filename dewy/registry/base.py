"""The registry interface: `latest()` names the release to run, `report()` leaves an audit record."""

from dataclasses import dataclass
from typing import Iterable


class RegistryError(Exception):
    """The registry could not be read, or holds nothing deployable (one-line message)."""


@dataclass(frozen=True)
class Release:
    """One deployable release as a registry publishes it."""

    version: str                # normalised semver, no "v": "1.2.3-rc.1+blue"
    tag: str                    # as published: "v1.2.3-rc.1+blue"
    artifact_name: str          # "app_linux_amd64.tar.gz"
    artifact_url: str           # what dewy.artifact.from_url() fetches
    sha256: str | None = None   # expected checksum when the release publishes one


class Registry:
    """Base class of the registries; constructed by dewy.registry.from_url(url, cache, slot)."""

    def __init__(self, url: str, cache=None, slot: str = ""):
        self.url = url
        self.cache = cache
        self.slot = slot

    def latest(self, exclude: Iterable[str] = ()) -> Release:
        """The newest deployable release whose version is not in exclude; RegistryError if none."""
        raise NotImplementedError

    def report(self, release: Release, filename: str, text: str) -> None:
        """Store an audit record (`filename`, `text`) next to the release's artifacts."""
        raise NotImplementedError
