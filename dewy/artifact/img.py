"""`img://REGISTRY/REPO@sha256:...`: a container image pinned by digest (container mode).

The image itself is pulled by the container generation (dewy.container.generation) with the configured
runtime; the release directory holds only `image.json` naming it, so `current`, releases.json, rollback
and history work for containers as for any release.
"""

import json
import re

from dewy.artifact.base import Artifact, ArtifactError

_PINNED = re.compile(r"^img://([^/@]+)/([a-z0-9._/-]+)@(sha256:[0-9a-f]{64})$")


class ImageArtifact(Artifact):
    """The JSON record of one image reference pinned by digest."""

    def __init__(self, url: str):
        super().__init__(url)
        match = _PINNED.match(url)
        if match is None:
            raise ValueError("img:// artifact must be pinned by digest: img://HOST/REPO@sha256:<64 hex>")
        self.host, self.repo, self.digest = match.groups()

    def record(self) -> bytes:
        """The bytes of image.json."""
        return json.dumps({"image": "%s/%s@%s" % (self.host, self.repo, self.digest),
                           "registry": self.host, "repository": self.repo, "digest": self.digest},
                          sort_keys=True).encode() + b"\n"

    def fetch(self, out) -> None:
        """Write the image record (nothing is downloaded here: the generation pulls the image)."""
        data = self.record()
        self.total = len(data)
        try:
            out.write(data)
        except OSError as exc:
            raise ArtifactError("cannot write the image record: %s" % exc) from exc
