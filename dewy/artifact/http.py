"""`https://host/path?...`: an artifact at a plain URL (a presigned S3/GCS URL a gRPC registry hands out,
an internal file server). `http://` only for loopback hosts: over a network, plaintext would let anyone
on the path swap the release. TLS certificates are verified (requests' default, with its CA bundle or
$REQUESTS_CA_BUNDLE).

The body is streamed in chunks; a connection that breaks is resumed with `Range: bytes=N-` when the
server answers ranged requests (206), else the download fails rather than start over into a
half-written file.
"""

import logging
from typing import BinaryIO

from dewy import __version__, urls
from dewy.artifact.base import CHUNK, Artifact, ArtifactError, copy_resuming
from dewy.log import redact

log = logging.getLogger("dewy.artifact")

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # between two chunks, not for the whole download


class HTTPArtifact(Artifact):
    """Streams an https:// (or loopback http://) URL, resuming a broken download with a Range request."""

    resumable = True  # also from `start` (validator: the ETag / Last-Modified, sent as If-Range)

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a URL without a host, or plaintext http:// to anything but loopback."""
        urls.check_web_url(parsed, "artifact")

    def __init__(self, url: str):
        super().__init__(url)
        self.validate(urls.parse(url))
        self.shown = redact(url)  # what messages may quote: signatures and tokens masked

    def fetch(self, out: BinaryIO) -> None:
        """Stream the URL's body into out, resuming where a broken connection left off."""
        import requests

        session = _Session()
        session.headers["User-Agent"] = "dewy/%s" % __version__
        state = {"validator": self.validator}

        def open_at(offset: int):
            headers = {}
            if offset:
                headers["Range"] = "bytes=%d-" % offset
                if state["validator"]:
                    headers["If-Range"] = state["validator"]  # never splice two different files
            try:
                response = session.get(self.url, headers=headers, stream=True,
                                       timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            except requests.RequestException as exc:
                raise ArtifactError("cannot download %s: %s" % (self.shown, _reason(exc))) from None
            if offset and response.status_code != 206:
                response.close()
                return None  # the server ignores ranges (or the file changed): cannot resume
            if response.status_code not in (200, 206):
                response.close()
                raise ArtifactError("cannot download %s: HTTP %d %s" % (self.shown, response.status_code,
                                                                        response.reason or ""))
            state["validator"] = self.validator = (response.headers.get("ETag")
                                                   or response.headers.get("Last-Modified"))
            length = response.headers.get("Content-Length", "")
            if response.status_code == 200 and length.isdigit():
                self.total = int(length)  # the whole size (a 206's length is only the rest)
            elif response.status_code == 206 and offset == self.start:
                whole = response.headers.get("Content-Range", "").rpartition("/")[2]
                self.total = int(whole) if whole.isdigit() else None
            return _chunks(response)

        try:
            copy_resuming(open_at, out, self.shown,
                          retry_on=(requests.ConnectionError, requests.Timeout,
                                    requests.exceptions.ChunkedEncodingError), start=self.start)
        finally:
            session.close()


def _session_class():
    import requests

    class Session(requests.Session):
        """requests' Session that refuses a redirect breaking the web URL rule (https -> http off loopback)."""

        def get_redirect_target(self, resp):
            target = super().get_redirect_target(resp)
            if target:
                import urllib.parse

                try:
                    urls.check_redirect(resp.url, urllib.parse.urljoin(resp.url, target), "artifact")
                except ValueError as exc:
                    resp.close()
                    raise ArtifactError("cannot download %s: %s" % (redact(resp.url), exc)) from None
            return target

    return Session


def _Session():
    """A requests Session for artifacts (redirects checked)."""
    return _session_class()()


def _chunks(response):
    """The response body in CHUNK-sized pieces; closes the response when done or abandoned."""
    with response:
        yield from response.iter_content(CHUNK)


def _reason(exc) -> str:
    """A one-line reason for a requests error, without the URL (which may carry a signature)."""
    text = type(exc).__name__
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", None)
    if reason is not None:
        text += ": %s" % (str(reason).split(": ", 1)[-1])
    return redact(text)
