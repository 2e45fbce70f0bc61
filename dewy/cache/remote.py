"""What the shared caches (redis.py, consul.py, s3.py, gs.py) have in common: a two-tier cache that survives its server.

- Two tiers: blobs (artifacts: `open_write`, `open_read`, `path`) stay in the local file cache
  (`$DEWY_CACHEDIR`, else `<workdir>/.dewy/cache`), because artifacts are large and every host unpacks
  its own copy; small values (`get`, `set`, `add`, `discard`) live on the server, where the fleet sees
  them. `delete` removes a key from both.
- Namespacing: every value's key on the server is `<prefix>/<app>/<key>`. The prefix is the URL's
  (`consul://host/prefix`, `redis://...?prefix=`; default `dewy`); the app is `?app=`, else a hash of
  the normalised registry URL (the same for every host deploying that registry, different per app),
  else `default`.
- Outages: the first failure is logged once (error), then the server is left alone for RETRY seconds
  (calls fail at once instead of waiting for timeouts at every poll) and its return is logged once.
  Meanwhile `get` misses and `set`/`delete` do nothing, so deploys go on; `add`/`discard` raise
  CacheUnavailable and the shared registry answer asks the registry directly.
- Authentication (optional): with `DEWY_CACHE_KEY` in the environment (the fleet's `cache-key`; never in the
  ini), every value is written as `dewy-hmac-sha256:<hex HMAC of server key + value>` + newline + value, and
  a value read back that does not carry a valid HMAC is ignored (a miss; logged once per key), so only a
  holder of the key can write what the fleet trusts (`authenticated`). Without the key every value is a
  hint (dewy/registry/shared.py checks the registry answer with the registry; SECURITY.md).
"""

import hashlib
import hmac
import logging
import os
import re
import time

from dewy import urls
from dewy.cache.base import Cache, CacheRefused, CacheUnavailable
from dewy.cache.file import FileCache
from dewy.log import redact, redact_text

log = logging.getLogger("dewy.cache")

RETRY = 5.0               # seconds a server found down is not asked again
DEFAULT_PREFIX = "dewy"
_NAME = re.compile(r"[A-Za-z0-9_.@-]+(?:/[A-Za-z0-9_.@-]+)*")  # app and prefix: plain path segments
SHARED_KEYS = frozenset({"registry-ttl", "app"})  # query keys every shared cache understands
KEY_ENV = "DEWY_CACHE_KEY"  # the fleet's cache-key: HMAC over every shared value
SEAL = b"dewy-hmac-sha256:"
MAX_WARNED = 1000  # keys remembered as having been warned about (a long-lived poller keeps the set)


def parse_registry_ttl(parsed: urls.ParsedURL) -> float | None:
    """The `registry-ttl` query value in seconds (None when absent); ValueError naming the key when bad."""
    raw = parsed.query.get("registry-ttl")
    if raw is None:
        return None
    from dewy.values import parse_duration

    try:
        seconds = parse_duration(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError('bad value "%s" for query key "registry-ttl" of %s://; allowed: a duration above 0 '
                         'such as 30s, 1m or plain seconds' % (raw, parsed.scheme))
    return seconds


def check_name(parsed: urls.ParsedURL, key: str, value: str) -> str:
    """value when it is a usable key segment (letters, digits, `_.@-`, `/` between parts); ValueError otherwise."""
    if not _NAME.fullmatch(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError('bad value "%s" for %s of %s://; allowed: letters, digits, "_.@-" and "/" between parts'
                         % (value, key, parsed.scheme))
    return value


class RemoteCache(Cache):
    """Base of the shared caches: local blobs, server values, key namespacing, outage handling.

    A subclass implements `_get`, `_set`, `_add`, `_discard`, `_delete` on full server keys, raising
    CacheUnavailable (a one-line message without credentials) when the server cannot answer.
    """

    shared = True

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a bad `registry-ttl` or `app` value."""
        parse_registry_ttl(parsed)
        if "app" in parsed.query:
            check_name(parsed, 'query key "app"', parsed.query["app"])

    def __init__(self, url: str, workdir: str = ".", registry: str = ""):
        parsed = urls.parse(url)
        self.validate(parsed)
        self.parsed = parsed
        self.where = redact(url)  # for messages: never the password
        self.registry_ttl = parse_registry_ttl(parsed)
        if parsed.query.get("app"):
            self.app = parsed.query["app"]
        elif registry:
            from dewy.registry.shared import url_id  # stdlib-only module

            self.app = url_id(registry)
        else:
            self.app = "default"
        self.prefix = self.prefix_of(parsed)
        self.workdir = workdir
        self._local = None
        self._down_until = 0.0
        self._outage = None  # the error that started the current outage
        self._refused = False  # ... and whether it was our credentials the server refused
        secret = os.environ.get(KEY_ENV, "")
        self._mac_key = secret.encode() if secret else None
        self.authenticated = self._mac_key is not None  # every value get() returns carries our HMAC
        self._forged = set()  # server keys whose unauthenticated values were logged (once each)

    @property
    def local(self) -> FileCache:
        """The local file cache of the blobs (made on first use: `dewy fleet` reads values only, and must not
        create directories in the workdir as whoever runs it)."""
        if self._local is None:
            self._local = FileCache("file", self.workdir)
        return self._local

    def prefix_of(self, parsed: urls.ParsedURL) -> str:
        """The key prefix the URL names (default DEFAULT_PREFIX)."""
        return DEFAULT_PREFIX

    def key(self, key: str) -> str:
        """The server key of a cache key: `<prefix>/<app>/<key>`."""
        if not isinstance(key, str) or not key:
            raise ValueError("cache key must be a non-empty string")
        return "%s/%s/%s" % (self.prefix, self.app, key) if self.prefix else "%s/%s" % (self.app, key)

    # --- outages --------------------------------------------------------------------------------

    def _call(self, method, *args):
        """Run a server operation; CacheUnavailable at once while a recent outage lasts."""
        if self._outage is not None and time.monotonic() < self._down_until:
            raise (CacheRefused if self._refused else CacheUnavailable)(self._outage)
        try:
            result = method(*args)
        except CacheUnavailable as exc:
            message = redact_text(str(exc))
            if self._outage is None:
                log.error("cache %s: %s (going without it: registry answers are not shared until it is back)",
                          self.where, message)
            else:
                log.debug("cache %s still unavailable: %s", self.where, message)
            self._outage = message
            self._down_until = time.monotonic() + RETRY
            self._refused = isinstance(exc, CacheRefused)
            raise type(exc)(message) from None
        if self._outage is not None:
            log.info("cache %s answers again", self.where)
            self._outage = None
        return result

    # --- authentication (DEWY_CACHE_KEY) --------------------------------------------------------

    def _mac(self, full: str, value: bytes) -> bytes:
        return hmac.new(self._mac_key, full.encode() + b"\0" + value, hashlib.sha256).hexdigest().encode()

    def _seal(self, full: str, value: bytes) -> bytes:
        """value as stored on the server: with the fleet key, prefixed by its HMAC (bound to the key name)."""
        value = bytes(value)
        if self._mac_key is None:
            return value
        return SEAL + self._mac(full, value) + b"\n" + value

    def _unseal(self, full: str, raw) -> bytes | None:
        """The value a server value holds, or None when the fleet key is set and its HMAC is missing or wrong
        (logged once per key). Without a key, sealed and plain values are both taken (as hints)."""
        if raw is None:
            return None
        raw = bytes(raw)
        mac = None
        if raw.startswith(SEAL):
            mac, _, raw = raw[len(SEAL):].partition(b"\n")
        if self._mac_key is None:
            return raw
        if mac is not None and hmac.compare_digest(mac, self._mac(full, raw)):
            return raw
        if full not in self._forged:
            if len(self._forged) >= MAX_WARNED:
                self._forged.clear()
            self._forged.add(full)
            log.warning("cache %s: the value of %s is not authenticated by the cache key (%s): ignored",
                        self.where, full.encode("unicode_escape").decode("ascii")[:200], KEY_ENV)
        return None

    # --- values: on the server ------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The shared value of key, or None when absent, expired, not authenticated by the fleet key (when
        one is set) or the server is unavailable."""
        full = self.key(key)
        try:
            return self._unseal(full, self._call(self._get, full))
        except CacheUnavailable:
            return None

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store a shared value (expiring after ttl seconds when given); nothing happens while the server is down."""
        try:
            if ttl is not None and ttl <= 0:
                self._call(self._delete, self.key(key))
            else:
                self._call(self._set, self.key(key), self._seal(self.key(key), value), ttl)
        except CacheUnavailable:
            pass

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store value only if key is absent or expired (atomically on the server); CacheUnavailable when down."""
        return bool(self._call(self._add, self.key(key), self._seal(self.key(key), value), float(ttl)))

    def discard(self, key: str, value: bytes) -> bool:
        """Delete key while it still holds value (atomically on the server); CacheUnavailable when down."""
        return bool(self._call(self._discard, self.key(key), self._seal(self.key(key), value)))

    def scan(self, prefix: str) -> dict:
        """{key: value} of the live shared values whose key starts with prefix; CacheUnavailable when down."""
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("scan prefix must be a non-empty string")
        full = self.key(prefix)
        strip = len(full) - len(prefix)
        found = {key: self._unseal(key, value) for key, value in self._call(self._scan, full).items()}
        return {key[strip:]: value for key, value in found.items() if value is not None}

    def delete(self, key: str) -> None:
        """Remove key: the local blob and the shared value (the latter skipped while the server is down)."""
        self.local.delete(key)
        try:
            self._call(self._delete, self.key(key))
        except CacheUnavailable:
            pass

    # --- blobs: on this host's disk -------------------------------------------------------------

    def open_write(self, key: str):
        """Write a blob into the local file cache (atomically visible on a clean exit)."""
        return self.local.open_write(key)

    def open_read(self, key: str):
        """The local blob of key, or None."""
        return self.local.open_read(key)

    def path(self, key: str) -> str | None:
        """The local file holding key's blob, or None."""
        return self.local.path(key)

    # --- the server (subclasses) ----------------------------------------------------------------

    def _get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        raise NotImplementedError

    def _add(self, key: str, value: bytes, ttl: float) -> bool:
        raise NotImplementedError

    def _discard(self, key: str, value: bytes) -> bool:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    def _scan(self, prefix: str) -> dict:
        """{full key: value} of the live values under a full key prefix."""
        raise NotImplementedError
