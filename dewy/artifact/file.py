"""`file:///abs/path/to/artifact`: an artifact on the local file system."""

import os
from typing import BinaryIO

from dewy import urls
from dewy.artifact.base import CHUNK, Artifact, ArtifactError


class FileArtifact(Artifact):
    """Copies a local file in 1 MiB chunks."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError unless the URL names an absolute path."""
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise ValueError("file:// artifact needs an absolute path, e.g. file:///srv/releases/v1.0.0/app.tar.gz")

    def __init__(self, url: str):
        super().__init__(url)
        parsed = urls.parse(url)
        self.validate(parsed)
        self.path = parsed.path
        self._fetched = None  # (size, mtime_ns) of the file when fetch() opened it

    def fetch(self, out: BinaryIO) -> None:
        """Copy the file into out chunk by chunk (out gets views of one reused buffer: it must not keep them)."""
        try:
            src = open(self.path, "rb", buffering=0)
        except OSError as exc:
            raise ArtifactError("cannot read artifact %s: %s" % (self.path, exc.strerror)) from None
        with src:
            st = os.fstat(src.fileno())
            self._fetched = (st.st_size, st.st_mtime_ns)
            self.total = st.st_size
            # One buffer for the whole copy: a fresh 1 MiB bytes object per chunk cost 1.3-4x the CPU (page
            # faults, copies) of reading into the same memory again (bench/downloads.py, figure 6).
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            while True:
                n = src.readinto(buffer)
                if not n:
                    break
                out.write(view[:n])

    def changing(self) -> bool:
        """True when the file changed since fetch() read it: a `cp` into the registry still in progress.

        (A copy that ends between our read and this check is missed: publish by renaming a finished
        version directory into place to be safe — see the README.)
        """
        if self._fetched is None:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return True  # replaced or removed under us: not the copy we judged
        return (st.st_size, st.st_mtime_ns) != self._fetched
