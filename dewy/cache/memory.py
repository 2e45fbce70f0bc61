"""`memory` / `memory://`: a cache inside this process (lost on restart; artifacts held in RAM)."""

import io
import time
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from dewy import urls
from dewy.cache.base import Cache, safe_name


class MemoryCache(Cache):
    """A dict of key -> (bytes, expiry or None)."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError when the URL carries a host or path (memory:// takes none)."""
        if parsed.netloc or parsed.path:
            raise ValueError("memory cache takes no host or path: use memory://")

    def __init__(self, url: str = "memory", workdir: str = "."):
        self.validate(urls.parse(url))
        self._data: dict = {}
        self._keys: dict = {}  # file-safe name -> the key set() stored (scan lists keys, not names)

    def _live(self, key: str):
        name = safe_name(key)  # same key rules as the file cache
        item = self._data.get(name)
        if item is not None and item[1] is not None and item[1] <= time.monotonic():
            del self._data[name]
            return None
        return item

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """A BytesIO whose content becomes key when the block exits cleanly."""
        name = safe_name(key)
        buf = io.BytesIO()
        yield buf  # on an exception nothing is stored
        self._data[name] = (buf.getvalue(), None)

    def open_read(self, key: str) -> BinaryIO | None:
        """A BytesIO over key's bytes, or None."""
        item = self._live(key)
        return None if item is None else io.BytesIO(item[0])

    def delete(self, key: str) -> None:
        """Remove key."""
        self._data.pop(safe_name(key), None)

    def get(self, key: str) -> bytes | None:
        """The value of key, or None when absent or expired."""
        item = self._live(key)
        return None if item is None else item[0]

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store value, expiring after ttl seconds when given."""
        self._data[safe_name(key)] = (bytes(value), None if ttl is None else time.monotonic() + ttl)
        self._keys[safe_name(key)] = key

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store value unless key holds a live one; True when stored."""
        if self._live(key) is not None:
            return False
        self.set(key, value, ttl)
        return True

    def discard(self, key: str, value: bytes) -> bool:
        """Delete key while it holds value; True when it did."""
        item = self._live(key)
        if item is None or item[0] != value:
            return False
        self.delete(key)
        return True

    def scan(self, prefix: str) -> dict:
        """{key: value} of the live values whose key starts with prefix."""
        found = {}
        for name, key in list(self._keys.items()):
            if key.startswith(prefix):
                item = self._live(key)
                if item is not None:
                    found[key] = item[0]
        return found
