"""A download from a resumable store (Artifact.resumable: https://) kept across a poller restart.

A poller stopped mid-download (a USR2 starts a new one, a crash, a wedge kill) leaves
`.dewy/download.partial` (mode 0600) and `.dewy/download.json` ({key, source: sha256 of the artifact URL —
never the URL, which may carry a signature —, validator, size}); the next poller downloading the same key
from the same URL hashes the bytes it has and asks the store for the rest (`Range: bytes=N-` with
`If-Range: <validator>`): when the file changed meanwhile the store answers the whole file and the download
starts again from byte 0. One partial per workdir: another download replaces it. When complete the file
goes into the cache (renamed into a file cache on the same file system, else copied through
`cache.open_write`) and both files go.
"""

import hashlib
import os
import shutil

from dewy.statefiles import StateFileError, read_state, write_json_atomic
from dewy.workdir import state_path

PARTIAL_FILE = "download.partial"
META_FILE = "download.json"
_CHUNK = 1 << 20


class Partial:
    """The kept part of one artifact's download (key: its cache key; url: where it comes from)."""

    def __init__(self, workdir: str, key: str, url: str):
        self.path = state_path(workdir, PARTIAL_FILE)
        self.meta_path = state_path(workdir, META_FILE)
        self.key = key
        self.source = hashlib.sha256(url.encode()).hexdigest()

    def resume_point(self) -> tuple:
        """(bytes held, validator) of a kept download of this key from this URL; else (0, None), and any other
        kept download is removed."""
        try:
            meta = read_state(self.meta_path, "partial download") or {}
        except StateFileError:
            meta = {}  # not worth resuming: downloaded again whole
        try:
            size = os.path.getsize(self.path)
        except OSError:
            size = 0
        if isinstance(meta, dict) and meta.get("key") == self.key and meta.get("source") == self.source \
                and isinstance(meta.get("validator"), str) and meta.get("validator") and size > 0 \
                and meta.get("size") == size:
            return size, meta["validator"]
        self.discard()
        return 0, None

    def open(self, start: int):
        """The file to write to, positioned at start (bytes before it kept, after it cut)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fh = os.fdopen(fd, "r+b")
        fh.truncate(start)
        fh.seek(start)
        return fh

    def hash_into(self, sha, start: int) -> None:
        """Feed the first start bytes held into sha (the digest covers the whole file)."""
        with open(self.path, "rb") as fh:
            left = start
            while left:
                chunk = fh.read(min(_CHUNK, left))
                if not chunk:
                    raise OSError("the kept download %s is shorter than %d bytes" % (self.path, start))
                sha.update(chunk)
                left -= len(chunk)

    def keep(self, fh, validator: str | None) -> None:
        """The download stops here (a stop, a failure): keep what arrived for the next attempt, when the store
        named the file (validator); else drop it. Never raises (the download's own error matters)."""
        try:
            fh.flush()
            size = os.fstat(fh.fileno()).st_size
            if not validator or not size:
                self.discard()
                return
            write_json_atomic(self.meta_path, {"key": self.key, "source": self.source, "validator": validator,
                                               "size": size})
        except OSError:
            self.discard()

    def into_cache(self, cache, key: str) -> None:
        """Put the complete download into the cache under key (renamed into a file cache on the same file system,
        else copied), then forget it here."""
        adopt = getattr(cache, "adopt", None)
        if adopt is None or not adopt(key, self.path):
            with open(self.path, "rb") as src, cache.open_write(key) as out:
                shutil.copyfileobj(src, out, _CHUNK)
        self.discard()

    def discard(self) -> None:
        """Remove the kept download (if any)."""
        for path in (self.meta_path, self.path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                pass
