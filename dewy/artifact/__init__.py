"""Artifact stores: fetch the bytes a Release.artifact_url names. One module per URL scheme."""

from dewy import urls
from dewy.artifact.base import Artifact, ArtifactError

# scheme -> (module, class, allowed query keys); the module is imported only when used.
SCHEMES = {
    "file": ("dewy.artifact.file", "FileArtifact", frozenset()),
    "ghr": ("dewy.artifact.ghr", "GitHubArtifact", frozenset()),
    "s3": ("dewy.artifact.s3", "S3Artifact", frozenset({"endpoint", "region"})),
    "gs": ("dewy.artifact.gs", "GCSArtifact", frozenset()),
    "https": ("dewy.artifact.http", "HTTPArtifact", None),  # any query: presigned URLs carry their own
    "http": ("dewy.artifact.http", "HTTPArtifact", None),   # loopback hosts only (checked by the class)
    "img": ("dewy.artifact.img", "ImageArtifact", frozenset()),  # an image pinned by digest (container mode)
}

__all__ = ["SCHEMES", "Artifact", "ArtifactError", "validate_url", "from_url"]


def validate_url(url: str) -> None:
    """Raise ValueError (one line, listing what is supported) unless url is a usable artifact URL."""
    urls.validate(url, SCHEMES, "artifact")


def from_url(url: str) -> Artifact:
    """Build the artifact fetcher for url."""
    parsed = urls.validate(url, SCHEMES, "artifact")
    return urls.load_class(SCHEMES, parsed.scheme)(url)
