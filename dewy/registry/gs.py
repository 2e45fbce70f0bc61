"""`gs://<bucket>/<prefix>?artifact=&pre-release=&calver=`: releases in Google Cloud Storage.

The layout (`<prefix>/<tag>/<artifact>`, shipped_to records) is dewy/registry/bucket.py's. Versions
are the prefixes of `list_blobs(prefix=..., delimiter="/")` over every page. Application-default
credentials, anonymous against an emulator (`STORAGE_EMULATOR_HOST`); dewy/artifact/gs.py makes the client.
"""

from dewy import urls
from dewy.artifact import gs as gs_artifact
from dewy.registry.bucket import BucketRegistry, normal_prefix

EXAMPLE = "gs://my-bucket/releases?artifact=app_linux_amd64.tar.gz"


class GCSRegistry(BucketRegistry):
    """A registry in a GCS bucket."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a missing or bad bucket, or a bad common query value."""
        gs_artifact.split_url(parsed, "registry", EXAMPLE)
        super().validate(parsed)

    def __init__(self, url: str, cache=None, slot: str = ""):
        super().__init__(url, cache=cache, slot=slot)
        self.bucket, rest = gs_artifact.split_url(self.parsed, "registry", EXAMPLE)
        self.prefix = normal_prefix(rest)
        self.where = "gs://%s/%s" % (self.bucket, self.prefix)

    def make_client(self):
        """A google-cloud-storage client."""
        return gs_artifact.make_client()

    def list_dir(self, prefix: str) -> tuple:
        """(sub-"directory" names, {object name: blob}) directly under prefix, over every page."""
        # retry=None: a failed listing is a failed poll; the poller backs off instead of us sleeping here.
        blobs = self.client().list_blobs(self.bucket, prefix=prefix, delimiter="/", page_size=self.page_size,
                                         timeout=self.timeout, retry=None)
        dirs, objects = [], {}
        for page in blobs.pages:
            objects.update((blob.name[len(prefix):], blob) for blob in page)
            dirs.extend(p[len(prefix):].rstrip("/") for p in page.prefixes)
        objects.pop("", None)  # a console's "directory" marker
        return [d for d in dict.fromkeys(dirs) if d], objects  # an emulator repeats prefixes on every page

    def read_head(self, key: str, handle, limit: int) -> bytes:
        """At most limit bytes of the blob (no range for a small one: an empty object has none)."""
        end = limit - 1 if (handle.size or 0) > limit else None
        return handle.download_as_bytes(end=end, timeout=self.timeout, retry=None)

    def put_empty(self, key: str) -> None:
        """Upload an empty text/plain object."""
        self.client().bucket(self.bucket).blob(key).upload_from_string(
            b"", content_type="text/plain", timeout=self.timeout, retry=None)

    def object_url(self, key: str) -> str:
        """Dewy's `gs://<bucket>/<object>`."""
        return gs_artifact.artifact_url(self.bucket, key)

    def describe(self, exc: BaseException) -> str:
        """google-cloud-storage's failure in one line."""
        return gs_artifact.describe(exc)
