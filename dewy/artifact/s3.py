"""`s3://<region>/<bucket>/<key>?endpoint=URL`: an object in Amazon S3 or an S3-compatible store.

The URL form is Dewy's (what its S3 registry hands out). The endpoint comes from `?endpoint=`, else
`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`; with an endpoint, requests use path-style addressing
(MinIO, moto, Ceph...). Credentials come from boto3's standard chain (environment, profile, instance
role). boto3 is imported only when a client is made, so importing this module stays cheap; the S3
registry (dewy/registry/s3.py) shares the client factory and the error wording defined here.
"""

import os
import re
import urllib.parse
from typing import BinaryIO

from dewy import urls
from dewy.artifact.base import CHUNK, Artifact, ArtifactError, copy_resuming
from dewy.log import redact, redact_text

# Region names are plain words ("eu-west-1"; a compatible store may use "auto" or "us-east-1").
_REGION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# What boto3 accepts as a bucket (S3's rules, plus the legacy upper case and underscore of us-east-1).
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$")

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
READ_TIMEOUT = 60.0     # seconds without a byte before a request (or a download's stream) fails


def split_url(parsed: urls.ParsedURL, kind: str, example: str) -> tuple:
    """(region, bucket, rest of the path) of an s3:// URL; ValueError naming what is missing or bad.

    Dewy's split: the host is the region, the first path segment the bucket, the rest the prefix/key; as in
    Dewy (registry/s3.go decodes the query after the host), `?region=` overrides the host's region.
    """
    region = parsed.query.get("region") or parsed.netloc
    if not region:
        raise ValueError("s3:// %s needs a region as its host, e.g. %s" % (kind, example))
    if "@" in region:  # never echo what may be a key and secret
        raise ValueError("bad region in s3:// %s: credentials in the URL are not supported (boto3's chain: "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE...), e.g. %s" % (kind, example))
    if not _REGION.match(region):
        raise ValueError('bad region "%s" in s3:// %s; expected a region name such as eu-west-1, e.g. %s'
                         % (region, kind, example))
    bucket, _, rest = parsed.path.lstrip("/").partition("/")
    if not bucket:
        raise ValueError("s3:// %s needs a bucket after the region, e.g. %s" % (kind, example))
    if not _BUCKET.match(bucket):
        raise ValueError('bad bucket name "%s" in s3:// %s; expected 3 or more letters, digits, dots or hyphens'
                         % (bucket, kind))
    return region, bucket, rest


def check_endpoint(parsed: urls.ParsedURL) -> str | None:
    """The `endpoint` query value, checked to be an http(s) URL with a host; ValueError otherwise."""
    endpoint = parsed.query.get("endpoint")
    if endpoint is None:
        return None
    parts = urllib.parse.urlsplit(endpoint)
    try:
        parts.port  # noqa: B018 - raises ValueError for a non-numeric port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError('bad value "%s" for query key "endpoint" of s3://; expected an http(s) URL such as '
                         "http://127.0.0.1:9000" % redact(endpoint))
    return endpoint


def resolve_endpoint(endpoint: str | None) -> str | None:
    """The endpoint to use: the URL's, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else None (AWS itself)."""
    return endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(region: str, endpoint: str | None, attempts: int = 1,
                connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT):
    """A boto3 S3 client for region; path-style addressing against an explicit or environment endpoint.

    `attempts` bounds botocore's own retries: the registry uses 1 (the next poll is the retry, and a
    poll must not sleep in backoff), downloads a few. The timeouts are seconds; the S3 cache uses short
    ones (a bucket that does not answer must not hold up a poll). Creating a client is slow: callers keep theirs.
    """
    import boto3
    from botocore.config import Config

    endpoint = resolve_endpoint(endpoint)
    config = Config(
        region_name=region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": attempts},
        # Compatible servers rarely have per-bucket DNS names: address them as <endpoint>/<bucket>/<key>.
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return boto3.session.Session(botocore_session=_botocore_session()).client("s3", endpoint_url=endpoint,
                                                                            config=config)


_LOADER = None  # botocore's data loader, shared: it caches the S3 service model it read


def _botocore_session():
    """A fresh botocore session (credentials and environment read anew) sharing one data loader: without it
    every client re-reads and re-parses the S3 service model (150-700 ms of a deploy under load, bench figure 4)."""
    import botocore.session

    global _LOADER
    session = botocore.session.get_session()
    if _LOADER is None:
        _LOADER = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _LOADER)
    return session


def describe(exc: BaseException) -> str:
    """A one-line reason for a boto3/botocore failure (never credentials)."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.NoCredentialsError):
        return ("no AWS credentials found (boto3's chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, ~/.aws/credentials, an instance or task role)")
    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.get("Code") or "error"
        message = error.get("Message") or ""
        if code == str(status):
            # botocore's stand-in for an answer it could not parse (S3's codes are words: InternalError).
            return "HTTP %s: %s (no S3 error document: a malformed answer or not an S3 server)" % (
                status, message or "error")
        return "%s%s (HTTP %s)" % (code, ": " + message if message and message != code else "", status)
    if isinstance(exc, bex.EndpointConnectionError):
        return "cannot connect to %s" % exc.kwargs.get("endpoint_url", "the S3 endpoint").split("?")[0]
    text = str(exc).strip().splitlines()
    return redact_text(text[0] if text else type(exc).__name__)


def stream_errors() -> tuple:
    """The exceptions a broken S3 download stream raises (retried by copy_resuming from where it broke)."""
    from botocore import exceptions as bex
    from urllib3 import exceptions as u3

    # IncompleteReadError: newer botocore checks the body's length itself and raises it at a cut.
    return (OSError, bex.ResponseStreamingError, bex.ReadTimeoutError, bex.ConnectionError, bex.IncompleteReadError,
            u3.HTTPError)


def artifact_url(region: str, bucket: str, key: str, endpoint: str | None) -> str:
    """Dewy's artifact URL for an object: `s3://<region>/<bucket>/<key>[?endpoint=URL]`."""
    url = "s3://%s/%s/%s" % (region, bucket, urllib.parse.quote(key))
    if endpoint:
        url += "?endpoint=" + urllib.parse.quote(endpoint, safe=":/")  # readable, as Dewy writes it
    return url


EXAMPLE = "s3://eu-west-1/my-bucket/releases/v1.2.3/app_linux_amd64.tar.gz"


class S3Artifact(Artifact):
    """Streams an S3 object in 1 MiB chunks, resuming a broken download with `Range: bytes=N-`."""

    DOWNLOAD_ATTEMPTS = 3  # botocore's own tries of each request (connection errors, 5xx, throttling)

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a missing region, bucket or key, or a bad endpoint."""
        _, _, key = split_url(parsed, "artifact", EXAMPLE)
        if not key:
            raise ValueError("s3:// artifact needs an object key after the bucket, e.g. %s" % EXAMPLE)
        check_endpoint(parsed)

    def __init__(self, url: str):
        super().__init__(url)
        parsed = urls.parse(url)
        self.validate(parsed)
        self.region, self.bucket, self.key = split_url(parsed, "artifact", EXAMPLE)
        self.endpoint = check_endpoint(parsed)
        self._client = None

    def client(self):
        """The boto3 client (made on first use, then kept)."""
        if self._client is None:
            self._client = make_client(self.region, self.endpoint, self.DOWNLOAD_ATTEMPTS)
        return self._client

    def fetch(self, out: BinaryIO) -> None:
        """Stream the object into out; a broken stream resumes from the last byte written."""
        what = "s3://%s/%s/%s" % (self.region, self.bucket, self.key)
        etag = []  # the first response's ETag: a resumed range must come from the same object

        def open_at(offset: int):
            args = {"Bucket": self.bucket, "Key": self.key}
            if offset:
                args["Range"] = "bytes=%d-" % offset
            if etag:
                args["IfMatch"] = etag[0]
            try:
                response = self.client().get_object(**args)
            except Exception as exc:  # noqa: BLE001 - botocore's errors have no common useful base
                raise ArtifactError("cannot download %s: %s" % (what, describe(exc))) from None
            if not etag and response.get("ETag"):
                etag.append(response["ETag"])
            if not offset and response.get("ContentLength") is not None:
                self.total = int(response["ContentLength"])  # for download progress
            return response["Body"].iter_chunks(CHUNK)

        try:
            copy_resuming(open_at, out, what, retry_on=stream_errors())
        except ArtifactError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. FlexibleChecksumError: the bytes fail S3's own checksum
            # A one-line ArtifactError (a transient failure, logged once), not a traceback every poll.
            raise ArtifactError("cannot download %s: %s" % (what, describe(exc))) from None
