"""The artifact interface: stream a release's bytes into a file object."""

from typing import BinaryIO

CHUNK = 1 << 20  # 1 MiB: large enough to be fast, small enough never to matter in memory


class ArtifactError(Exception):
    """The artifact could not be fetched (one-line message)."""


class Artifact:
    """Base class of the artifact stores; constructed by dewy.artifact.from_url(url)."""

    def __init__(self, url: str):
        self.url = url

    def fetch(self, out: BinaryIO) -> None:
        """Stream the artifact's bytes into out, chunk by chunk (never whole in memory)."""
        raise NotImplementedError

    def changing(self) -> bool:
        """Whether the artifact changed since fetch() read it (a copy still in progress), so a bad read
        must not be held against the release. Stores whose uploads are atomic (S3, GCS, GitHub) keep this False."""
        return False
