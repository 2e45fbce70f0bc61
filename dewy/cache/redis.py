"""`redis://[user:password@]host:port/db`, `rediss://...` (TLS), `unix:///path/redis.sock?db=N`: a Redis
(or Valkey) server shared by a fleet, through redis-py (imported only when such a cache is built).

Values live on the server under `<prefix>/<app>/<key>` (`?prefix=`, default `dewy`; `?app=`, see
dewy/cache/remote.py); artifacts stay in the local file cache. Expiry is Redis's own (`SET ... PX`),
the lock is `SET key token NX PX ms`, and it is released by a script that deletes the key only while
it still holds our token. `?ca=/path/ca.pem` names the CA bundle for `rediss://`.
"""

import re
import urllib.parse

from dewy import urls
from dewy.cache.base import CacheError, CacheRefused, CacheUnavailable
from dewy.cache.remote import RemoteCache, check_name
from dewy.log import redact_text

CONNECT_TIMEOUT = 2.0  # seconds: a server that is down must not hold up a poll
IO_TIMEOUT = 5.0
# Delete KEYS[1] only while it holds ARGV[1]: releasing a lock that expired and was taken by another host
# must not free theirs.
_DISCARD = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# How a Redis/Valkey server says it wants a password we did not send, or refuses the one we sent.
_AUTH_NEEDED = re.compile(r"NOAUTH|must be called with the client already authenticated|Authentication required",
                          re.IGNORECASE)
_AUTH_REFUSED = re.compile(r"WRONGPASS|invalid username-password|invalid password", re.IGNORECASE)
# Query keys dewy reads itself; any other allowed key (db, password on unix://) goes to redis-py.
_OWN_KEYS = ("registry-ttl", "app", "prefix", "ca")


class RedisCache(RemoteCache):
    """Shared values on a Redis/Valkey server; blobs on local disk."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a URL without a host (or socket path) or a bad db, prefix, app or TTL."""
        super().validate(parsed)
        if parsed.scheme == "unix":
            if parsed.netloc or not parsed.path.startswith("/"):
                raise ValueError("unix:// cache needs the absolute path of the Redis socket, e.g. "
                                 "unix:///run/redis/redis.sock")
            db = parsed.query.get("db", "0")
        else:
            if not parsed.hostname:
                raise ValueError("%s:// cache needs a host, e.g. %s://cache.internal:6379/0" % (
                    parsed.scheme, parsed.scheme))
            try:
                parsed.port
            except ValueError:
                raise ValueError("bad port in the %s:// cache URL; expected a number" % parsed.scheme) from None
            db = parsed.path.strip("/") or "0"
        if not db.isdigit():
            raise ValueError('bad Redis database "%s" in the %s:// cache URL; expected a number such as 0'
                             % (db, parsed.scheme))
        if "prefix" in parsed.query:
            check_name(parsed, 'query key "prefix"', parsed.query["prefix"])

    def __init__(self, url: str, workdir: str = ".", registry: str = ""):
        super().__init__(url, workdir, registry)
        import redis  # only now: the master validates cache URLs without loading redis-py

        self._errors = redis.exceptions.RedisError
        self._auth_errors = redis.exceptions.AuthenticationError
        parsed = self.parsed
        query = {k: v for k, v in parsed.query.items() if k not in _OWN_KEYS}
        base = url.split("?", 1)[0]
        driver_url = base + ("?" + urllib.parse.urlencode(query) if query else "")
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One immediate retry (a pooled connection the server closed), not redis-py's three with backoff:
        # an outage must be noticed quickly, and RemoteCache then leaves the server alone for a while.
        options = {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": IO_TIMEOUT,
                   "retry": Retry(NoBackoff(), 1)}
        if parsed.scheme == "rediss" and parsed.query.get("ca"):
            options["ssl_ca_certs"] = parsed.query["ca"]
        try:
            self.client = redis.Redis.from_url(driver_url, **options)
        except (ValueError, redis.exceptions.RedisError) as exc:
            # redis-py's own complaint about the URL; it never contains the password, but be sure.
            raise CacheError("bad %s:// cache URL: %s" % (parsed.scheme, _message(exc))) from None
        self._discard_script = self.client.register_script(_DISCARD)

    def prefix_of(self, parsed: urls.ParsedURL) -> str:
        """`?prefix=`, default `dewy`."""
        return parsed.query.get("prefix", "dewy")

    def _run(self, what: str, method, *args):
        try:
            return method(*args)
        except self._errors as exc:
            message = _message(exc)
            if _AUTH_NEEDED.search(message):
                raise CacheRefused("redis %s failed: the server requires a password and the cache URL gives none"
                                   % what) from None
            if isinstance(exc, self._auth_errors) or _AUTH_REFUSED.search(message):
                raise CacheRefused("redis %s failed: the server refused the password or user of the cache URL (%s)"
                                   % (what, message)) from None
            raise CacheUnavailable("redis %s failed: %s" % (what, message)) from None

    def _get(self, key: str) -> bytes | None:
        return self._run("GET", self.client.get, key)

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        if ttl is None:
            self._run("SET", self.client.set, key, value)
        else:
            self._run("SET", lambda: self.client.set(key, value, px=max(1, int(ttl * 1000))))

    def _add(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(self._run("SET NX", lambda: self.client.set(key, value, nx=True, px=max(1, int(ttl * 1000)))))

    def _discard(self, key: str, value: bytes) -> bool:
        return self._run("EVALSHA", lambda: self._discard_script(keys=[key], args=[value])) == 1

    def _delete(self, key: str) -> None:
        self._run("DEL", self.client.delete, key)

    def _scan(self, prefix: str) -> dict:
        def scan():
            # SCAN, not KEYS: it never blocks a busy server. Keys are plain segments (check_name), but
            # escape the glob characters anyway.
            pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
            keys = sorted(set(self.client.scan_iter(match=pattern, count=500)))
            values = self.client.mget(keys) if keys else []
            return {key.decode(): value for key, value in zip(keys, values) if value is not None}
        return self._run("SCAN", scan)


def _message(exc: BaseException) -> str:
    """An exception's message with any URL credentials redacted, or its type when it has none."""
    return redact_text(str(exc)) or type(exc).__name__
