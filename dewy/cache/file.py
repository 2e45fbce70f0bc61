"""`file` / `file:///abs/dir`: a cache directory on the local disk (the default).

Layout: `<dir>/<safe key>` holds the bytes, `<dir>/.ttl/<safe key>` the expiry time of a value set
with a TTL, `<dir>/.tmp.*` writes in progress. Safe names never start with a dot, so neither the
TTL directory nor a temp file can collide with a key.
"""

import errno
import os
import tempfile
import time
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from dewy import urls
from dewy.cache.base import Cache, CacheError, safe_name
from dewy.workdir import nearest_existing, state_path

_STALE_TMP = 3600.0  # a temp file this old was left by a killed writer


def default_dir(workdir: str) -> str:
    """The default cache directory: $DEWY_CACHEDIR, else <workdir>/.dewy/cache."""
    return os.environ.get("DEWY_CACHEDIR") or state_path(workdir, "cache")


def dir_problem(directory: str) -> str | None:
    """Why the cache could never keep its files in directory, whoever runs it (one line), or None: a file
    where it or one of its parents should be. Nothing is created.

    Checked with the configuration, so such a cache is a config error rather than a poller failing at every
    start. Write access is not checked: commands that only read the ini (`dewy status -c`) run as other users,
    and with the `user` setting the poller writes as that user; the poller says so at its start.
    """
    directory = os.path.abspath(directory)
    existing = nearest_existing(directory)
    if not os.path.isdir(existing):
        if existing == directory:
            return "the cache directory %s exists and is not a directory" % directory
        return "cannot create the cache directory %s: %s is not a directory" % (directory, existing)
    return None


class FileCache(Cache):
    """Blobs and values as files in one directory (mode 0700)."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError unless the URL is bare `file` or names an absolute directory."""
        if parsed.netloc not in ("", "localhost") or (parsed.path and not parsed.path.startswith("/")):
            raise ValueError("file:// cache needs an absolute path, e.g. file:///var/cache/dewy")

    def __init__(self, url: str = "file", workdir: str = "."):
        parsed = urls.parse(url)
        self.validate(parsed)
        self.dir = os.path.normpath(parsed.path) if parsed.path else os.path.abspath(default_dir(workdir))
        self._ttl_dir = os.path.join(self.dir, ".ttl")
        try:
            os.makedirs(self._ttl_dir, mode=0o700, exist_ok=True)
            os.chmod(self.dir, 0o700)  # artifacts may be private: keep other users out
        except OSError as exc:
            raise CacheError("cannot create cache directory %s: %s" % (self.dir, exc.strerror)) from None
        self._remove_stale_temps()

    def _remove_stale_temps(self) -> None:
        """Delete temp files left behind by writers that were killed mid-write."""
        now = time.time()
        for name in os.listdir(self.dir):
            if name.startswith(".tmp."):
                path = os.path.join(self.dir, name)
                try:
                    if now - os.stat(path).st_mtime > _STALE_TMP:
                        os.unlink(path)
                except OSError:
                    pass

    def _paths(self, key: str) -> tuple:
        name = safe_name(key)
        return os.path.join(self.dir, name), os.path.join(self._ttl_dir, name)

    def _expired(self, ttl_path: str) -> bool:
        try:
            with open(ttl_path) as fh:
                return float(fh.read().strip() or "0") <= time.time()
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            return True  # an unreadable expiry is treated as expired: a cache may always miss

    @contextmanager
    def _atomic(self, final: str) -> Iterator[BinaryIO]:
        """A temp file in the cache directory renamed onto final on a clean exit, removed otherwise."""
        fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=self.dir)
        fh = os.fdopen(fd, "wb")
        try:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(tmp, final)
        except BaseException:
            fh.close()
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """Write key through a temp file; it replaces key only when the block exits cleanly."""
        path, ttl_path = self._paths(key)
        with self._atomic(path) as fh:
            yield fh
        self._unlink(ttl_path)  # a blob never expires

    def adopt(self, key: str, path: str) -> bool:
        """Make the complete file at path (mode 0600) key's entry by renaming it into the cache, no copy (a download
        the poller kept across a restart, dewy.poller.partial); False when it is on another file system."""
        final, ttl_path = self._paths(key)
        try:
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(path, final)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return False
            raise
        self._unlink(ttl_path)  # a blob never expires
        return True

    def open_read(self, key: str) -> BinaryIO | None:
        """The file holding key, open for reading, or None."""
        path, ttl_path = self._paths(key)
        if self._expired(ttl_path):
            self.delete(key)
            return None
        try:
            return open(path, "rb")
        except FileNotFoundError:
            return None

    def path(self, key: str) -> str | None:
        """The file holding key, or None."""
        path, ttl_path = self._paths(key)
        if self._expired(ttl_path) or not os.path.isfile(path):
            return None
        return path

    def delete(self, key: str) -> None:
        """Remove key and its expiry."""
        path, ttl_path = self._paths(key)
        self._unlink(path)
        self._unlink(ttl_path)

    def get(self, key: str) -> bytes | None:
        """The value of key, or None when absent or expired."""
        fh = self.open_read(key)
        if fh is None:
            return None
        with fh:
            return fh.read()

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store value (atomically), with its expiry time when ttl is given."""
        path, ttl_path = self._paths(key)
        if ttl is not None:
            # Expiry first: a reader racing us sees the old value a little longer, never a stale TTL on a new value.
            with self._atomic(ttl_path) as fh:
                fh.write(repr(time.time() + ttl).encode())
            # _atomic put the temp file in self.dir; the rename moved it into .ttl/ (same file system).
        with self._atomic(path) as fh:
            fh.write(value)
        if ttl is None:
            self._unlink(ttl_path)

    @staticmethod
    def _unlink(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
