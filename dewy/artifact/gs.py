"""`gs://<bucket>/<object>`: an object in Google Cloud Storage (Dewy's artifact URL form).

Credentials: application-default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC, the
metadata server); with `STORAGE_EMULATOR_HOST` set (fake-gcs-server, a local emulator) the client is
anonymous. Without any credentials the client falls back to anonymous access, which reads public
buckets. google-cloud-storage is imported only when a client is made; the GCS registry
(dewy/registry/gs.py) shares the client factory and the error wording defined here.
"""

import logging
import os
import re
import urllib.parse
from typing import BinaryIO

from dewy import urls
from dewy.artifact.base import Artifact, ArtifactError, copy_resuming
from dewy.log import redact_text

log = logging.getLogger("dewy.artifact")

# GCS bucket names: lower-case letters, digits, dots, hyphens and underscores, 3 to 222 characters.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")

_REQUEST_PREFIX = re.compile(r"^[A-Z]+ \S+: ")
TIMEOUT = (10.0, 60.0)   # (connect, read) seconds of every request
STREAM_CHUNK = 64 * 1024  # bytes per read of a download stream
DOWNLOAD_RETRY_SECONDS = 30.0  # how long the library retries the object's metadata request before a download


def split_url(parsed: urls.ParsedURL, kind: str, example: str) -> tuple:
    """(bucket, rest of the path) of a gs:// URL; ValueError naming what is missing or bad."""
    bucket = parsed.netloc
    if not bucket:
        raise ValueError("gs:// %s needs a bucket as its host, e.g. %s" % (kind, example))
    if "@" in bucket:  # never echo what may be a secret
        raise ValueError("bad bucket in gs:// %s: credentials in the URL are not supported (application-default "
                         "credentials: GOOGLE_APPLICATION_CREDENTIALS...), e.g. %s" % (kind, example))
    if not _BUCKET.match(bucket):
        raise ValueError('bad bucket name "%s" in gs:// %s; expected 3 or more lower-case letters, digits, '
                         "dots, hyphens or underscores" % (bucket, kind))
    return bucket, parsed.path.lstrip("/")


_warned_anonymous = False  # the no-credentials warning is logged once per process


def make_client():
    """A google-cloud-storage client: anonymous against an emulator, else application-default credentials.

    With no credentials at all it falls back to an anonymous client (public buckets), with one warning.
    No project is needed: dewy only reads and writes objects in a named bucket.
    """
    global _warned_anonymous
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        # The library reads STORAGE_EMULATOR_HOST itself; an emulator wants no token.
        return storage.Client(project=None, credentials=AnonymousCredentials())
    import google.auth.exceptions

    try:
        return storage.Client(project=None)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        if not _warned_anonymous:
            _warned_anonymous = True
            reason = (str(exc).strip().splitlines() or ["none found"])[0]
            log.warning("no Google application-default credentials (%s; GOOGLE_APPLICATION_CREDENTIALS, gcloud auth "
                        "application-default login, a service account): reading GCS anonymously (public buckets "
                        "only)", redact_text(reason))
        return storage.Client(project=None, credentials=AnonymousCredentials())


def describe(exc: BaseException) -> str:
    """A one-line reason for a google-cloud-storage failure (never credentials)."""
    from google.api_core import exceptions as gex

    if isinstance(exc, gex.GoogleAPICallError):
        message = (exc.message or "").strip().splitlines()
        # The library prefixes "GET <request URL>: "; the registry's own name already says where.
        text = _REQUEST_PREFIX.sub("", message[0]) if message else ""
        return "HTTP %s%s" % (exc.code, ": " + redact_text(text) if text else "")
    try:
        import requests

        if isinstance(exc, requests.exceptions.ConnectionError):
            request = getattr(exc, "request", None)
            where = urllib.parse.urlsplit(request.url).netloc if request is not None and request.url else ""
            return "cannot connect to %s" % (where or "the storage server")
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return "the connection broke in the middle of an answer (a body cut short of its length)"
    except ImportError:  # pragma: no cover - a dependency of google-cloud-storage
        pass
    text = str(exc).strip().splitlines()
    if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError)):
        # Bad JSON (a ValueError) or JSON of the wrong shape: the server's answer, not a bug of ours.
        return "a malformed answer from the storage server (%s: %s)" % (
            type(exc).__name__, redact_text(text[0] if text else "?"))
    return redact_text(text[0] if text else type(exc).__name__)


def stream_errors() -> tuple:
    """The exceptions a broken GCS download raises (retried by copy_resuming from where it broke)."""
    import requests
    from google.api_core import exceptions as gex

    return (OSError, requests.exceptions.RequestException, gex.ServerError, gex.TooManyRequests)


def artifact_url(bucket: str, name: str) -> str:
    """Dewy's artifact URL for an object: `gs://<bucket>/<object>`."""
    return "gs://%s/%s" % (bucket, urllib.parse.quote(name))


EXAMPLE = "gs://my-bucket/releases/v1.2.3/app_linux_amd64.tar.gz"


class GCSArtifact(Artifact):
    """Streams a GCS object in one GET (`Range: bytes=N-`, pinned to one generation), resuming a broken download."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a missing or bad bucket, or a missing object name."""
        _, name = split_url(parsed, "artifact", EXAMPLE)
        if not name:
            raise ValueError("gs:// artifact needs an object name after the bucket, e.g. %s" % EXAMPLE)

    def __init__(self, url: str):
        super().__init__(url)
        parsed = urls.parse(url)
        self.validate(parsed)
        self.bucket, self.name = split_url(parsed, "artifact", EXAMPLE)
        self._client = None

    def client(self):
        """The storage client (made on first use, then kept)."""
        if self._client is None:
            self._client = make_client()
        return self._client

    def fetch(self, out: BinaryIO) -> None:
        """Stream the object into out from one GET of one generation; a broken stream resumes where it stopped.

        One streamed request, not the library's blob.open(): that reader asks for one ranged chunk at a time,
        holds each whole in memory and copies it about: two to three times slower, with twice the CPU, than
        the library's own download_to_filename (bench/downloads.py, figure 6).
        """
        from google.api_core import exceptions as gex
        from google.api_core.retry import Retry

        what = "gs://%s/%s" % (self.bucket, self.name)
        # Bounded: the library's default retries for 120 s, and the poller must get back to its master.
        retry = Retry(timeout=DOWNLOAD_RETRY_SECONDS)
        client = self.client()
        try:
            # Its generation pins every request (and every resume) to this one upload.
            blob = client.bucket(self.bucket).get_blob(self.name, timeout=TIMEOUT, retry=retry)
        except Exception as exc:  # noqa: BLE001 - google's and requests' errors have no common base
            raise ArtifactError("cannot download %s: %s" % (what, describe(exc))) from None
        if blob is None:
            raise ArtifactError("cannot download %s: no such object" % what)
        self.total = blob.size  # for download progress
        # Where the library itself downloads from (Blob._get_download_url): the object's mediaLink.
        url = blob.media_link or "%s/download/storage/v1%s?alt=media" % (client.api_endpoint, blob.path)
        # The client's own requests session: it adds (and refreshes) the credentials' token.
        session = client._http

        def open_at(offset: int):
            def chunks():
                # if_generation_match: a replaced object fails the download instead of mixing two uploads.
                response = session.get(url, params={"ifGenerationMatch": blob.generation},
                                       headers={"Range": "bytes=%d-" % offset}, stream=True, timeout=TIMEOUT)
                with response:
                    if response.status_code >= 400:
                        raise gex.from_http_response(response)
                    if offset and response.status_code != 206:
                        raise ArtifactError("cannot download %s: the server ignored the range request to resume at "
                                            "byte %d (HTTP %d)" % (what, offset, response.status_code))
                    # Small reads: a stream cut mid-way loses at most one of them before the resume.
                    yield from response.iter_content(STREAM_CHUNK)
            return chunks()

        try:
            copy_resuming(open_at, out, what, retry_on=stream_errors())
        except ArtifactError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. 404: the object was deleted meanwhile
            raise ArtifactError("cannot download %s: %s" % (what, describe(exc))) from None
