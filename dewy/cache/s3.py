"""`s3://<region>/<bucket>/<prefix>?endpoint=URL`: an S3 bucket (or an S3-compatible store) shared by a fleet.

Dewy's URL form: the host is the region, the first path segment the bucket, the rest the key prefix
(default `dewy`). Values are objects `<prefix>/<app>/<key>` (`?app=`, see dewy/cache/remote.py);
artifacts stay in the local file cache. Expiry and the lock are dewy/cache/bucket.py's: the lock is
`PutObject` with `If-None-Match: *`, an expired one is taken over with `If-Match: <its ETag>`, and it is
released with `DeleteObject` `If-Match: <its ETag>` (S3's conditional writes and deletes).

The client is dewy/artifact/s3.py's (boto3's credential chain; `?endpoint=`, else `AWS_ENDPOINT_URL_S3`
/ `AWS_ENDPOINT_URL`, with path-style addressing), with one attempt and short timeouts: a bucket that
does not answer is an outage (logged once), not a slow poll.
"""

from dewy import urls
from dewy.artifact import s3 as s3_artifact
from dewy.cache.base import CacheRefused, CacheUnavailable
from dewy.cache.bucket import ABSENT, EXPIRES, BucketCache, Entry, parse_expiry
from dewy.cache.remote import DEFAULT_PREFIX, check_name

EXAMPLE = "s3://eu-west-1/my-bucket/dewy?registry-ttl=30s"
CONNECT_TIMEOUT = 2.0  # seconds: a store that is down must not hold up a poll
READ_TIMEOUT = 5.0
# What S3 answers when a conditional write loses: 412 (the condition failed), 409 (a concurrent
# conditional write to the same key is in flight), NoSuchKey (If-Match on an object deleted meanwhile).
# (By code, not status: a missing bucket is a 404 too, and that is an outage.)
# Our credentials, refused: a configuration problem (CacheRefused), not an outage.
_REFUSED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken")
_LOST = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409")


class S3Cache(BucketCache):
    """Shared values as objects in an S3 bucket; blobs on local disk."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a missing region or bucket, a bad endpoint, or a bad prefix, app or TTL."""
        super().validate(parsed)
        _, _, rest = s3_artifact.split_url(parsed, "cache", EXAMPLE)
        s3_artifact.check_endpoint(parsed)
        if rest.strip("/"):
            check_name(parsed, "the key prefix (the path after the bucket)", rest.strip("/"))

    def __init__(self, url: str, workdir: str = ".", registry: str = ""):
        super().__init__(url, workdir, registry)
        self.region, self.bucket, _ = s3_artifact.split_url(self.parsed, "cache", EXAMPLE)
        self.endpoint = s3_artifact.check_endpoint(self.parsed)
        self._client = None

    def prefix_of(self, parsed: urls.ParsedURL) -> str:
        """The path after the bucket, default `dewy`."""
        return parsed.path.lstrip("/").partition("/")[2].strip("/") or DEFAULT_PREFIX

    def client(self):
        """The boto3 client (made on first use, then kept: making one is slow)."""
        if self._client is None:
            self._client = s3_artifact.make_client(self.region, self.endpoint, attempts=1,
                                                   connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT)
        return self._client

    def _run(self, what: str, key: str, method, lost: tuple = (), **args):
        """One S3 call; a ClientError whose code is in `lost` comes back as None, any other failure is
        CacheUnavailable naming the operation and the object (never credentials)."""
        from botocore.exceptions import ClientError

        refused = False
        try:
            return method(Bucket=self.bucket, Key=key, **args)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if error.get("Code") in lost or status in lost:
                return None
            reason = s3_artifact.describe(exc)
            refused = status in ("401", "403") or error.get("Code") in _REFUSED
        except Exception as exc:  # noqa: BLE001 - botocore's other errors (connection, credentials) share no base
            reason = s3_artifact.describe(exc)
        raise (CacheRefused if refused else CacheUnavailable)(
            "s3 %s s3://%s/%s failed: %s" % (what, self.bucket, key, reason))

    def _read(self, key: str) -> Entry | None:
        response = self._run("GetObject", key, self.client().get_object, lost=("NoSuchKey",))
        if response is None:
            return None
        try:
            with response["Body"] as body:
                value = body.read()
        except Exception as exc:  # noqa: BLE001 - a stream broken half-way
            raise CacheUnavailable("s3 GetObject s3://%s/%s failed: %s"
                                   % (self.bucket, key, s3_artifact.describe(exc))) from None
        return Entry(value, parse_expiry((response.get("Metadata") or {}).get(EXPIRES)), response.get("ETag"))

    def _write(self, key: str, value: bytes, expires: int, match=None) -> bool:
        args = {"Body": value, "ContentType": "application/octet-stream", "Metadata": {EXPIRES: str(expires)}}
        if match is ABSENT:
            args["IfNoneMatch"] = "*"
        elif match is not None:
            args["IfMatch"] = match
        return self._run("PutObject", key, self.client().put_object, _LOST if match is not None else (),
                         **args) is not None

    def _remove(self, key: str, match=None) -> bool:
        if match is None:
            self._run("DeleteObject", key, self.client().delete_object)
            return True
        return self._run("DeleteObject", key, self.client().delete_object, _LOST, IfMatch=match) is not None

    def _list(self, prefix: str) -> list:
        def list_all(Bucket, Key):
            names, token = [], None
            while True:
                page = self.client().list_objects_v2(Bucket=Bucket, Prefix=Key,
                                                     **({"ContinuationToken": token} if token else {}))
                names += [item["Key"] for item in page.get("Contents") or ()]
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    return names
        return self._run("ListObjectsV2", prefix, list_all)
