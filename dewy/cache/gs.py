"""`gs://<bucket>/<prefix>`: a Google Cloud Storage bucket shared by a fleet.

Values are objects `<prefix>/<app>/<key>` (prefix: the URL's path, default `dewy`; `?app=`, see
dewy/cache/remote.py); artifacts stay in the local file cache. Expiry and the lock are
dewy/cache/bucket.py's: the lock is an upload with `ifGenerationMatch=0` (create only), an expired one
is taken over with `ifGenerationMatch=<its generation>`, and it is released with a delete conditional on
its generation.

The client is dewy/artifact/gs.py's (application-default credentials; anonymous against an emulator
named by `STORAGE_EMULATOR_HOST`). Every request is made once with short timeouts: a bucket that does
not answer is an outage (logged once), not a slow poll.
"""

from dewy import urls
from dewy.artifact import gs as gs_artifact
from dewy.cache.base import CacheRefused, CacheUnavailable
from dewy.cache.bucket import ABSENT, EXPIRES, BucketCache, Entry, parse_expiry
from dewy.cache.remote import DEFAULT_PREFIX, check_name

EXAMPLE = "gs://my-bucket/dewy?registry-ttl=30s"
TIMEOUT = (2.0, 5.0)  # (connect, read) seconds of every request


class GCSCache(BucketCache):
    """Shared values as objects in a GCS bucket; blobs on local disk."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a missing or bad bucket, or a bad prefix, app or TTL."""
        super().validate(parsed)
        _, rest = gs_artifact.split_url(parsed, "cache", EXAMPLE)
        if rest.strip("/"):
            check_name(parsed, "the key prefix (the URL's path)", rest.strip("/"))

    def __init__(self, url: str, workdir: str = ".", registry: str = ""):
        super().__init__(url, workdir, registry)
        self.bucket, _ = gs_artifact.split_url(self.parsed, "cache", EXAMPLE)
        self._bucket = None

    def prefix_of(self, parsed: urls.ParsedURL) -> str:
        """The URL's path, default `dewy`."""
        return parsed.path.strip("/") or DEFAULT_PREFIX

    def handle(self):
        """The library's Bucket object (its client made on first use, then kept: making one is slow)."""
        if self._bucket is None:
            self._bucket = gs_artifact.make_client().bucket(self.bucket)
        return self._bucket

    def _run(self, what: str, key: str, call, lost: tuple = ()):
        """One request; an HTTP status in `lost` comes back as None, any other failure is CacheUnavailable
        naming the operation and the object (never credentials)."""
        from google.api_core import exceptions as gex

        refused = False
        try:
            return call()
        except gex.GoogleAPICallError as exc:
            if exc.code in lost:
                return None
            reason = gs_artifact.describe(exc)
            refused = exc.code in (401, 403)  # our credentials, refused: a configuration problem
        except Exception as exc:  # noqa: BLE001 - requests', google-auth's errors share no useful base
            reason = gs_artifact.describe(exc)
        raise (CacheRefused if refused else CacheUnavailable)(
            "gcs %s gs://%s/%s failed: %s" % (what, self.bucket, key, reason))

    def _read(self, key: str) -> Entry | None:
        for _ in range(3):  # the object may be replaced between reading its metadata and its bytes
            blob = self._run("get", key, lambda: self.handle().get_blob(key, timeout=TIMEOUT, retry=None))
            if blob is None:
                return None
            # Taken before the download, which updates blob.generation from its response headers.
            generation, expires = blob.generation, parse_expiry((blob.metadata or {}).get(EXPIRES))
            # The bytes of exactly that generation (412 when it was replaced meanwhile). fake-gcs-server ignores
            # the condition here and may serve newer bytes: the version we report is still the one whose expiry
            # we read, so a takeover based on it loses its conditional write, as it should.
            value = self._run("download", key, lambda: blob.download_as_bytes(
                if_generation_match=generation, timeout=TIMEOUT, retry=None), lost=(404, 412))
            if value is not None:
                return Entry(value, expires, generation)
        return None

    def _write(self, key: str, value: bytes, expires: int, match=None) -> bool:
        blob = self.handle().blob(key)
        blob.metadata = {EXPIRES: str(expires)}
        condition = {} if match is None else {"if_generation_match": 0 if match is ABSENT else match}

        def upload():
            blob.upload_from_string(value, content_type="application/octet-stream", timeout=TIMEOUT, retry=None,
                                    **condition)
            return True
        # 412: the condition failed (created or replaced by another host first).
        return bool(self._run("upload", key, upload, (412,) if match is not None else ()))

    def _remove(self, key: str, match=None) -> bool:
        def delete():
            self.handle().delete_blob(key, timeout=TIMEOUT, retry=None,
                                      **({} if match is None else {"if_generation_match": match}))
            return True
        # 404: already gone; 412: replaced by another host (a lock it took over): not ours to delete.
        return bool(self._run("delete", key, delete, (404, 412)))

    def _list(self, prefix: str) -> list:
        return self._run("list", prefix, lambda: [blob.name for blob in self.handle().list_blobs(
            prefix=prefix, timeout=TIMEOUT, retry=None)])
