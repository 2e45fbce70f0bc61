"""What the object-store caches (s3.py, gs.py) have in common: values as objects, expiry and the lock.

An object store has no expiry of its own (lifecycle rules work in days) and no compare-and-delete
command, but it has conditional writes, and that is enough:

- A value is one object `<prefix>/<app>/<key>`; one set with a TTL carries its expiry time (Unix
  milliseconds) in the object's metadata (`EXPIRES`), and reads after it count as misses.
- The lock (`add`) is a create-only write (S3 `PutObject` with `If-None-Match: *`, GCS
  `ifGenerationMatch=0`): of hosts racing for it the store lets exactly one through. An expired lock is
  taken over with a write conditional on the version just read (S3 `If-Match: <ETag>`, GCS
  `ifGenerationMatch=<generation>`), so again exactly one host wins.
- Releasing it (`discard`) reads it, checks it still holds our token and deletes it only while it is
  that version (S3 `DeleteObject` with `If-Match`, GCS `ifGenerationMatch`): a lock that expired and was
  taken by another host is never freed by us.

A subclass implements `_read`, `_write` and `_remove` with its SDK (imported inside them); failures of
the store become CacheUnavailable, which dewy/cache/remote.py logs once per outage.
"""

import time
from typing import NamedTuple

from dewy.cache.remote import RemoteCache

EXPIRES = "dewy-expires"  # object metadata: when the value expires, Unix milliseconds
ABSENT = object()         # `match` of a write that must only create the object


class Entry(NamedTuple):
    """An object as read: its bytes, its expiry (Unix ms, 0 = never) and its version (ETag / generation)."""

    value: bytes
    expires: int
    version: object


def now_ms() -> int:
    """The wall clock in Unix milliseconds (hosts of a fleet share expiry times, so not a monotonic clock)."""
    return int(time.time() * 1000)


def expiry_of(ttl: float | None) -> int:
    """The EXPIRES value of a value stored now for ttl seconds (0: never expires)."""
    return 0 if ttl is None else now_ms() + max(1, int(ttl * 1000))


def parse_expiry(raw: str | None) -> int:
    """The EXPIRES metadata value as an int (0 when absent or not a number: written by someone else)."""
    try:
        return max(0, int(raw or 0))
    except ValueError:
        return 0


class BucketCache(RemoteCache):
    """Shared values as objects in a bucket; blobs on local disk (RemoteCache)."""

    # --- what a store implements ------------------------------------------------------------------

    def _read(self, key: str) -> Entry | None:
        """The object key, or None when there is none."""
        raise NotImplementedError

    def _write(self, key: str, value: bytes, expires: int, match=None) -> bool:
        """Write the object; `match`: None unconditionally, ABSENT only if there is none, else only while
        it is that version. False when the condition failed (another host wrote first)."""
        raise NotImplementedError

    def _remove(self, key: str, match=None) -> bool:
        """Delete the object (only while it is version `match`, when given); False when it was not deleted."""
        raise NotImplementedError

    def _list(self, prefix: str) -> list:
        """The names of the objects whose name starts with prefix."""
        raise NotImplementedError

    # --- RemoteCache's operations on full keys ----------------------------------------------------

    @staticmethod
    def _expired(entry: Entry) -> bool:
        return 0 < entry.expires <= now_ms()

    def _get(self, key: str) -> bytes | None:
        entry = self._read(key)
        if entry is None or self._expired(entry):
            return None
        return entry.value

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._write(key, value, expiry_of(ttl))

    def _add(self, key: str, value: bytes, ttl: float) -> bool:
        for _ in range(3):  # the object may vanish between two requests: look again, a little
            if self._write(key, value, expiry_of(ttl), ABSENT):
                return True
            entry = self._read(key)
            if entry is None:
                continue  # released meanwhile: try to create it again
            if not self._expired(entry):
                return False
            # Expired (its holder died): take it over only if nobody changed it since we looked.
            return self._write(key, value, expiry_of(ttl), entry.version)
        return False

    def _discard(self, key: str, value: bytes) -> bool:
        entry = self._read(key)
        if entry is None or entry.value != value:
            return False
        return self._remove(key, entry.version)

    def _delete(self, key: str) -> None:
        self._remove(key)

    def _scan(self, prefix: str) -> dict:
        found = {}
        for key in self._list(prefix):
            value = self._get(key)  # one read each: values are few (the hosts of one app) and small
            if value is not None:
                found[key] = value
        return found
