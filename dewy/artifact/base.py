"""The artifact interface: stream a release's bytes into a file object."""

from typing import BinaryIO

CHUNK = 1 << 20  # 1 MiB: large enough to be fast, small enough never to matter in memory


class ArtifactError(Exception):
    """The artifact could not be fetched (one-line message, without control characters: a store's text)."""

    def __init__(self, message="", *args):
        from dewy.urls import plain_text

        super().__init__(plain_text(message), *args)


class Artifact:
    """Base class of the artifact stores; constructed by dewy.artifact.from_url(url)."""

    # Whether fetch() can begin at `start` (a download a previous poller left half done, resumed after a restart
    # or a USR2) and sets `validator` (what names this exact file: an ETag, an asset id) so that a resumed
    # download never splices two different files. Stores without it always start at byte 0.
    resumable = False

    def __init__(self, url: str):
        self.url = url
        self.total = None  # the size in bytes, once fetch() learned it from the store (see size())
        self.start = 0  # resumable stores: the byte to begin at (the caller has the bytes before it)
        self.validator = None  # resumable stores: set by fetch(); given back with `start` to resume

    def fetch(self, out: BinaryIO) -> None:
        """Stream the artifact's bytes into out, chunk by chunk (never whole in memory)."""
        raise NotImplementedError

    def size(self) -> int | None:
        """The artifact's size in bytes when the store told it (known once fetch() has started), else None.

        Used for download progress (percent, ETA); stores that cannot tell keep None."""
        return getattr(self, "total", None)

    def changing(self) -> bool:
        """Whether the artifact changed since fetch() read it (a copy still in progress), so a bad read
        must not be held against the release. Stores whose uploads are atomic (S3, GCS, GitHub) keep this False."""
        return False


RESUME_ATTEMPTS = 4  # tries of one download, each resuming where the last one broke off


def copy_resuming(open_at, out: BinaryIO, what: str, retry_on: tuple = (OSError,),
                  attempts: int = RESUME_ATTEMPTS, start: int = 0) -> int:
    """Stream a download into out, resuming with a ranged request when the connection breaks.

    `open_at(offset)` starts the transfer at byte `offset` (a `Range: bytes=offset-` request, S3's
    `Range=`, GCS's `start=`) and returns an iterator of byte chunks; it may return None when the store
    cannot resume, and the download then fails rather than start over into a half-written out.
    Errors in `retry_on` raised while streaming are retried; the rest propagate. start: the bytes out holds
    already (a download resumed after a poller restart). Returns the byte count, start included.
    """
    written = start
    for attempt in range(1, attempts + 1):
        chunks = open_at(written)
        if chunks is None:
            raise ArtifactError("%s: the connection broke after %d bytes and the store cannot resume"
                                % (what, written))
        try:
            for chunk in chunks:
                if chunk:
                    out.write(chunk)
                    written += len(chunk)
            return written
        except retry_on as exc:
            if attempt == attempts:
                raise ArtifactError("%s: download broke off after %d bytes, %d times: %s"
                                    % (what, written, attempts, exc)) from exc
            import logging

            logging.getLogger("dewy.artifact").warning(
                "%s: download broke off after %d bytes (%s); resuming", what, written, exc)
    return written
