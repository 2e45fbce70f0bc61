"""The cache interface: streamed blobs (artifacts) and small values with a TTL (registry answers).

Blobs (`open_write`, `open_read`, `path`) always live on this host's disk: the shared caches (Redis,
Consul) keep them in the local file cache and hold only the small values (`get`, `set`, `add`,
`discard`) on their server, where other hosts see them. `delete` removes both.
"""

import hashlib
import re
from contextlib import AbstractContextManager
from typing import BinaryIO

# Bytes that may stay as they are in a file name; everything else is %XX-escaped.
_SAFE = re.compile(rb"[A-Za-z0-9_.+=,@-]")
_MAX_NAME = 200  # well under NAME_MAX (255) once a temp prefix is added


class CacheError(Exception):
    """The cache could not be used (one-line message)."""


class CacheUnavailable(CacheError):
    """A shared cache's server cannot be reached or refuses us: the caller goes without it (asks the registry)."""


class CacheRefused(CacheUnavailable):
    """The server answers but refuses our credentials (a wrong password, token or key): a configuration
    problem that lasts, not an outage. Fleet rollouts hold deploys on it instead of going without the cache."""


def safe_name(key: str) -> str:
    """Turn a cache key into one file name: injective %XX escaping, never hidden, never a path.

    "1.2.3/app.tar.gz" -> "1.2.3%2Fapp.tar.gz"; "../x" -> "%2E.%2Fx". Over-long keys are shortened
    with a hash of the whole key so that distinct keys stay distinct.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("cache key must be a non-empty string")
    raw = key.encode("utf-8")
    name = "".join(chr(b) if _SAFE.fullmatch(bytes([b])) else "%%%02X" % b for b in raw)
    if name.startswith("."):
        # A leading dot would hide the file and "." / ".." are directories: escape it.
        name = "%2E" + name[1:]
    if len(name) > _MAX_NAME:
        name = name[:_MAX_NAME - 65] + "~" + hashlib.sha256(raw).hexdigest()
    return name


class Cache:
    """Base class of the caches; constructed by dewy.cache.from_url(url, workdir, registry).

    `get`/`set`/`delete` never fail because a shared server is down (a miss, a no-op; the outage is
    logged once by the cache): a cache outage must never stop a deploy. `add` and `discard`, used for
    locks, raise CacheUnavailable instead, because "not taken" and "cannot tell" differ there.
    """

    # True when values are seen by other hosts (Redis, Consul): only then can registry answers be shared.
    shared = False
    # Seconds a shared registry answer stays fresh (`?registry-ttl=`), or None: every host asks the registry.
    registry_ttl: float | None = None

    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A writable binary file whose content becomes `key` atomically on a clean exit (discarded on error)."""
        raise NotImplementedError

    def open_read(self, key: str) -> BinaryIO | None:
        """A readable binary file with the content of key, or None when absent (or expired)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove key (no error when it is absent)."""
        raise NotImplementedError

    def get(self, key: str) -> bytes | None:
        """The value of key, or None when absent or expired."""
        raise NotImplementedError

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store value under key, expiring after ttl seconds when ttl is given."""
        raise NotImplementedError

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store value under key only if key is absent (or expired), atomically; True when this call stored it.

        The value expires after ttl seconds, so a lock taken by a host that dies frees itself.
        """
        raise NotImplementedError

    def discard(self, key: str, value: bytes) -> bool:
        """Delete key only while it still holds value (atomically); True when it did (releases a lock we hold)."""
        raise NotImplementedError

    def path(self, key: str) -> str | None:
        """A local file holding key's content when the cache has one (lets unpacking skip a copy), else None."""
        return None

    def scan(self, prefix: str) -> dict:
        """{key: value} of every live value whose key starts with prefix (fleet rollouts list hosts with it)."""
        raise CacheError("%s cannot list its values" % type(self).__name__)
