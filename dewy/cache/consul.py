"""`consul://host:port/prefix`: Consul's KV store shared by a fleet, over its HTTP API with requests.

The address may come from the environment like Consul's own CLI: `consul:///prefix` (no host) uses
`CONSUL_HTTP_ADDR` (`host:port` or `http(s)://host:port`, default 127.0.0.1:8500); `CONSUL_HTTP_SSL=true`
switches to https (`CONSUL_CACERT` names a CA bundle, `CONSUL_HTTP_SSL_VERIFY=false` skips the check);
`CONSUL_HTTP_TOKEN` (or the file named by `CONSUL_HTTP_TOKEN_FILE`) is sent as `X-Consul-Token`.

Values live under `<prefix>/<app>/<key>` (prefix: the URL's path, default `dewy`); artifacts stay in the
local file cache (Consul caps a value at 512 KiB). Consul KV has no expiry of its own, so a value set
with a TTL carries its expiry time (Unix milliseconds) in the key's `Flags` and reads after it count as
misses. The lock is `PUT ?cas=0` (create only if absent); an expired one is taken over with
`?cas=<its ModifyIndex>`, so exactly one host wins; it is released with `DELETE ?cas=<ModifyIndex>`
after checking that it still holds our token.
"""

import base64
import os
import time
import urllib.parse

from dewy import urls
from dewy.cache.base import CacheError, CacheRefused, CacheUnavailable
from dewy.cache.remote import DEFAULT_PREFIX, RemoteCache, check_name, log
from dewy.log import redact_text

TIMEOUT = (2.0, 5.0)      # (connect, read) seconds: a Consul agent that is down must not hold up a poll
MAX_VALUE = 512 * 1024    # Consul's default kv_max_value_size
MAX_ANSWER = 64 << 20     # bytes of one answer read (a listing of the fleet's values), never more
DEFAULT_ADDR = "127.0.0.1:8500"
_TRUE = ("1", "true", "yes", "on")


def _now_ms() -> int:
    return int(time.time() * 1000)


class ConsulCache(RemoteCache):
    """Shared values in Consul KV; blobs on local disk."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for credentials in the URL, a bad port or a bad prefix, app or TTL."""
        super().validate(parsed)
        if "@" in parsed.netloc:
            raise ValueError("consul:// cache URL takes no credentials; set CONSUL_HTTP_TOKEN")
        try:
            parsed.port
        except ValueError:
            raise ValueError("bad port in the consul:// cache URL; expected a number") from None
        if parsed.path.strip("/"):
            check_name(parsed, "the key prefix (the URL's path)", parsed.path.strip("/"))

    def __init__(self, url: str, workdir: str = ".", registry: str = ""):
        super().__init__(url, workdir, registry)
        import requests  # only now: the master validates cache URLs without loading requests

        self._requests = requests
        env = os.environ
        addr = self.parsed.netloc or env.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDR
        scheme = "https" if env.get("CONSUL_HTTP_SSL", "").strip().lower() in _TRUE else "http"
        if "://" in addr:
            given, _, addr = addr.partition("://")
            if given not in ("http", "https"):
                raise CacheError("CONSUL_HTTP_ADDR: unsupported scheme %s; expected host:port or http(s)://host:port"
                                 % given)
            scheme = "https" if given == "https" else scheme
        self.base = "%s://%s/v1/kv/" % (scheme, addr.rstrip("/"))
        self.session = requests.Session()
        token = env.get("CONSUL_HTTP_TOKEN", "").strip()
        if not token and env.get("CONSUL_HTTP_TOKEN_FILE"):
            try:
                with open(env["CONSUL_HTTP_TOKEN_FILE"]) as fh:
                    token = fh.read().strip()
            except OSError as exc:
                raise CacheError("cannot read CONSUL_HTTP_TOKEN_FILE %s: %s"
                                 % (env["CONSUL_HTTP_TOKEN_FILE"], exc.strerror)) from None
        if token:
            self.session.headers["X-Consul-Token"] = token
        if scheme == "https":
            if env.get("CONSUL_HTTP_SSL_VERIFY", "").strip().lower() in ("0", "false", "no", "off"):
                self.session.verify = False
                log.warning("cache consul: CONSUL_HTTP_SSL_VERIFY=false: the TLS certificate of %s is NOT verified "
                            "(anyone on the path can read and change the cache); name a CA with CONSUL_CACERT "
                            "instead", addr)
            elif env.get("CONSUL_CACERT"):
                self.session.verify = env["CONSUL_CACERT"]
        self.server = "%s://%s" % (scheme, addr)  # for messages (never the token: it is a header)

    def prefix_of(self, parsed: urls.ParsedURL) -> str:
        """The URL's path, default `dewy`."""
        return parsed.path.strip("/") or DEFAULT_PREFIX

    # --- HTTP -----------------------------------------------------------------------------------

    def _request(self, method: str, key: str, params: dict | None = None, data: bytes | None = None):
        url = self.base + urllib.parse.quote(key, safe="/")
        try:
            response = self.session.request(method, url, params=params, data=data, timeout=TIMEOUT, stream=True)
            body = bytearray()
            with response:
                for chunk in response.iter_content(64 * 1024):
                    body += chunk
                    if len(body) > MAX_ANSWER:  # a server (or what holds its port) that never stops
                        raise CacheUnavailable("consul at %s sent more than %d bytes (the cap on a cache answer)"
                                               % (self.server, MAX_ANSWER))
            response._content = bytes(body)  # what .text and .json() read: the capped body
        except self._requests.RequestException as exc:
            raise CacheUnavailable("cannot reach consul at %s: %s" % (
                self.server, redact_text(str(exc)) or type(exc).__name__)) from None
        if response.status_code == 403:
            raise CacheRefused("consul at %s refused %s under %s/ (403 %s): set CONSUL_HTTP_TOKEN to a token "
                                   "with key read/write rights there" % (
                                       self.server, method, self.prefix, response.text.strip()[:100] or "Forbidden"))
        if response.status_code == 413:
            raise CacheError("consul refused a value of %d bytes (its limit is %d)" % (len(data or b""), MAX_VALUE))
        if response.status_code == 404 and method == "GET":
            return None
        if response.status_code != 200:
            raise CacheUnavailable("consul at %s answered %s %d: %s" % (
                self.server, method, response.status_code, response.text.strip()[:200]))
        return response

    def _entry(self, key: str) -> dict | None:
        """The KV entry of key (Key, Value base64, Flags, ModifyIndex...), or None."""
        response = self._request("GET", key)
        if response is None:
            return None
        try:
            entries = response.json()
            return entries[0] if entries else None
        except (ValueError, IndexError, KeyError, TypeError):
            raise CacheUnavailable("consul at %s sent an unreadable answer for a key" % self.server) from None

    @staticmethod
    def _expired(entry: dict) -> bool:
        flags = entry.get("Flags") or 0
        return 0 < flags <= _now_ms()

    @staticmethod
    def _value(entry: dict) -> bytes:
        return base64.b64decode(entry.get("Value") or "")

    @staticmethod
    def _flags(ttl: float | None) -> str:
        return "0" if ttl is None else str(_now_ms() + max(1, int(ttl * 1000)))

    def _put(self, key: str, value: bytes, params: dict) -> bool:
        if len(value) > MAX_VALUE:
            raise CacheError("a value of %d bytes is over Consul's limit of %d" % (len(value), MAX_VALUE))
        return self._request("PUT", key, params, value).text.strip() == "true"

    # --- operations -----------------------------------------------------------------------------

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store a shared value; one over Consul's size limit is dropped with a warning (a cache may miss)."""
        try:
            super().set(key, value, ttl)
        except CacheError as exc:
            log.warning("cache %s: not storing %s: %s", self.where, key, exc)

    def _get(self, key: str) -> bytes | None:
        entry = self._entry(key)
        if entry is None or self._expired(entry):
            return None
        return self._value(entry)

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._put(key, value, {"flags": self._flags(ttl)})

    def _add(self, key: str, value: bytes, ttl: float) -> bool:
        for _ in range(3):  # the key may vanish or expire between two requests: look again, a little
            if self._put(key, value, {"cas": "0", "flags": self._flags(ttl)}):
                return True
            entry = self._entry(key)
            if entry is None:
                continue  # deleted meanwhile: try to create it again
            if not self._expired(entry):
                return False
            # Expired: take it over only if nobody changed it since we looked.
            return self._put(key, value, {"cas": str(entry["ModifyIndex"]), "flags": self._flags(ttl)})
        return False

    def _discard(self, key: str, value: bytes) -> bool:
        entry = self._entry(key)
        if entry is None or self._value(entry) != value:
            return False
        response = self._request("DELETE", key, {"cas": str(entry["ModifyIndex"])})
        return response.text.strip() == "true"

    def _delete(self, key: str) -> None:
        self._request("DELETE", key)

    def _scan(self, prefix: str) -> dict:
        response = self._request("GET", prefix, {"recurse": "true"})
        if response is None:
            return {}
        try:
            entries = response.json()
            return {entry["Key"]: self._value(entry) for entry in entries if not self._expired(entry)}
        except (ValueError, KeyError, TypeError):
            raise CacheUnavailable("consul at %s sent an unreadable answer for a key listing" % self.server) from None
