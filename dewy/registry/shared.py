"""The shared registry answer: one upstream registry call per `registry-ttl` for a whole fleet.

`wrap(registry, cache)` puts a `SharedRegistry` around any Registry when the cache is shared (Redis,
Consul) and its URL has `?registry-ttl=`; otherwise the registry comes back unchanged.

The answer to `latest(exclude)` is kept in the shared cache under
`registry/<hash of (normalised registry URL, slot, OS, arch, refused versions)>` as a small JSON entry:

    {"v": 1, "checked": <unix time the registry was last asked>, "answered": <unix time of the answer>,
     "release": {Release fields} | null, "waiting": <NotYetPublished message> | null,
     "nothing": <NothingDeployable message: no version qualifies> (absent otherwise),
     "error": <why the last refresh failed> | null, "by": <host that asked>}

- Younger than the TTL (`checked`): used without calling the registry.
- Stale: one host takes the lock `<entry key>/lock` (`Cache.add`: Redis `SET NX PX`, S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`, Consul `?cas=0`)
  for LOCK seconds, asks the registry, writes the entry and releases the lock. The others poll the entry
  until it changes (single flight); when the lock holder dies its lock expires and one of them takes over,
  so nobody waits longer than the lock's expiry.
- A failed refresh keeps the last answer (stale but usable), records the error and stamps `checked`, so
  the fleet asks the registry again once per TTL, not once per host per poll; the host that saw the
  outage start logs it (once for the fleet) and the one that sees it end says so.
- A cache server that cannot be reached: the registry is asked directly (the cache logs its outage once).

Refused versions are part of the key, so hosts that refused the same versions share an answer and a host
that refused one alone gets its own; what a host runs is never shared.

An entry is a hint, never an authority (SECURITY.md, "The shared cache"): whoever can write the cache (any
host of the fleet, or whatever has its credentials) must not decide where a host fetches from nor which
bytes it accepts. So a release read from an entry is used as it is only when the cache authenticated the
value (`DEWY_CACHE_KEY`: an HMAC over each value, dewy/cache/remote.py) and its artifact URL lies in the
registry's own store (`Registry.owns`). Otherwise this host asks the registry itself once for that answer
(`_vouch`) and deploys what the registry says, with the registry's checksum: an entry naming a release the
registry does not publish as its newest is ignored (logged once). Without a key this costs one registry
call per host per new release, not one per poll.
"""

import dataclasses
import hashlib
import json
import logging
import os
import platform
import socket
import time
import urllib.parse
from typing import Iterable

from dewy.clock import utc_iso
from dewy.log import redact, redact_text
from dewy.registry.base import NothingDeployable, NotYetPublished, RegistryError, Release, shown

log = logging.getLogger("dewy.registry.shared")

FORMAT = 1             # the entry's "v"; an entry of another format is ignored (refreshed)
KEEP = 7 * 86400.0     # seconds an entry outlives its freshness: the last answer kept through an outage
LOCK_MIN, LOCK_MAX = 2.0, 15.0  # the lock expires after the TTL clamped to these bounds
WAIT_STEP = 0.05       # seconds between two looks at the entry while another host refreshes it
MAX_VOUCHED = 64       # answers this host remembers having checked with the registry (one per entry key)

_RELEASE_FIELDS = frozenset(f.name for f in dataclasses.fields(Release))


def normalised_url(url: str) -> str:
    """url without credentials, fragment or a trailing slash, scheme and host in lower case, query sorted.

    Two hosts naming the same registry with different tokens or key order get the same string.
    """
    parts = urllib.parse.urlsplit((url or "").strip())
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host  # IPv6 literal
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (":%d" % port if port else "")
    query = urllib.parse.urlencode(sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), query, ""))


def url_id(url: str, size: int = 16) -> str:
    """A short stable hex id of the normalised URL (names an app's keys in a shared cache)."""
    return hashlib.sha256(normalised_url(url).encode()).hexdigest()[:size]


def lock_seconds(ttl: float) -> float:
    """How long a refresh lock lives: the TTL, but at least LOCK_MIN (a slow registry) and at most LOCK_MAX."""
    return min(max(ttl, LOCK_MIN), LOCK_MAX)


def wrap(registry, cache):
    """registry wrapped in a SharedRegistry when cache shares values and has a registry-ttl; else registry."""
    ttl = getattr(cache, "registry_ttl", None)
    if ttl is None or not getattr(cache, "shared", False):
        return registry
    return SharedRegistry(registry, cache, ttl)


class SharedRegistry:
    """A Registry whose `latest()` answers come from the shared cache, refreshed by one host per TTL.

    Everything else (`report`, `url`, `slot`...) is the wrapped registry's.
    """

    def __init__(self, registry, cache, ttl: float, lock_ttl: float | None = None):
        self.registry = registry
        self.cache = cache
        self.ttl = float(ttl)
        self.lock_ttl = lock_seconds(self.ttl) if lock_ttl is None else float(lock_ttl)
        self.host = socket.gethostname()
        self._base = "\0".join((normalised_url(registry.url), getattr(registry, "slot", "") or "",
                                platform.system().lower(), platform.machine().lower()))
        # entry key -> (release an entry named, what the registry itself answered for it): checked once each.
        self._vouched = {}
        self._ignored = set()  # releases of entries already logged as not the registry's (said once each)

    def __getattr__(self, name):
        return getattr(self.registry, name)  # report(), url, slot, parsed...: the wrapped registry's

    def key(self, exclude: Iterable[str] = ()) -> str:
        """The cache key of the answer for these refused versions."""
        material = self._base + "\0" + "\0".join(sorted(set(exclude)))
        return "registry/" + hashlib.sha256(material.encode()).hexdigest()[:32]

    # --- the answer ---------------------------------------------------------------------------

    def latest(self, exclude: Iterable[str] = ()) -> Release:
        """The newest release not in exclude, from the shared answer while it is fresh."""
        exclude = tuple(exclude)
        key = self.key(exclude)
        lock = key + "/lock"
        seen = self._read(key)
        if seen is not None and self._fresh(seen):
            return self._answer(seen, key, exclude)
        deadline = time.monotonic() + self.lock_ttl + WAIT_STEP
        while True:
            token = ("%s:%d:%s" % (self.host, os.getpid(), os.urandom(8).hex())).encode()
            try:
                locked = self.cache.add(lock, token, self.lock_ttl)
            except Exception as exc:  # noqa: BLE001 - CacheUnavailable (logged once by the cache), or a bug there
                log.debug("shared answer unavailable (%s): asking the registry", redact_text(str(exc)))
                return self.registry.latest(exclude=exclude)
            if locked:
                # Another host may have refreshed between our read and our lock: check again, or two
                # hosts would ask the registry within one TTL.
                current = self._read(key)
                if current is not None and self._fresh(current):
                    self._unlock(lock, token)
                    return self._answer(current, key, exclude)
                return self._refresh(key, lock, token, exclude, current if current is not None else seen)
            # Another host is refreshing: wait for its result, no longer than its lock can live.
            time.sleep(WAIT_STEP)
            now = self._read(key)
            if now is not None and (seen is None or now.get("checked") != seen.get("checked")):
                return self._answer(now, key, exclude)
            if time.monotonic() >= deadline:
                break
        # The holder neither finished nor let its lock expire in time (clocks, a slow cache): go without.
        if seen is not None and self._has_answer(seen):
            log.debug("no fresh shared answer in %.1fs: using the last one", self.lock_ttl)
            return self._answer(seen, key, exclude)
        return self.registry.latest(exclude=exclude)

    def _refresh(self, key: str, lock: str, token: bytes, exclude: tuple, previous: dict | None) -> Release:
        """Ask the registry (we hold the lock), store the entry, release the lock; keep the last answer on failure."""
        where = redact(self.registry.url)
        now = time.time()
        try:
            release = self.registry.latest(exclude=exclude)
            entry = {"release": dataclasses.asdict(release), "waiting": None}
        except NotYetPublished as exc:
            release, entry = None, {"release": None, "waiting": redact_text(str(exc))}
        except NothingDeployable as exc:  # an answer too (no version qualifies): shared, never an outage
            release, entry = None, {"release": None, "waiting": None, "nothing": redact_text(str(exc))}
        except Exception as exc:  # noqa: BLE001 - any failure of the registry: keep the last answer
            error = redact_text(str(exc)) or type(exc).__name__
            entry = dict(previous or {"release": None, "waiting": None}, v=FORMAT, checked=now, error=error,
                         by=self.host)
            if (previous or {}).get("error") is None:
                log.warning("registry %s: %s (the fleet keeps the last answer%s; asked again every %gs)", where,
                            error, "" if self._has_answer(previous) else ", there is none", self.ttl)
            elif previous.get("error") != error:
                log.warning("registry %s: %s", where, error)
            else:
                log.debug("registry %s still failing: %s", where, error)
            self._store(key, lock, token, entry)
            if self._has_answer(previous):
                return self._answer(previous, key, exclude)
            raise
        if previous is not None and previous.get("error") is not None:
            log.info("registry %s answers again (failing since %s)", where,
                     utc_iso(previous.get("failing_since") or now))
        entry.update(v=FORMAT, checked=now, answered=now, error=None, by=self.host)
        self._store(key, lock, token, entry)
        if release is None:
            return self._answer(entry, key, exclude)  # raises NotYetPublished or NothingDeployable
        self._remember(key, release, release)  # the registry's own answer: nothing to check
        return release

    def _store(self, key: str, lock: str, token: bytes, entry: dict) -> None:
        """Write the entry (kept KEEP seconds past its freshness), then release our lock."""
        if entry.get("error") is not None:
            entry.setdefault("failing_since", entry["checked"])
        else:
            entry.pop("failing_since", None)
        self.cache.set(key, json.dumps(entry, sort_keys=True).encode(), ttl=self.ttl + KEEP)
        self._unlock(lock, token)

    def _unlock(self, lock: str, token: bytes) -> None:
        """Release our lock (if it is still ours); a failure only means it expires by itself."""
        try:
            self.cache.discard(lock, token)
        except Exception as exc:  # noqa: BLE001 - the lock expires by itself
            log.debug("cannot release the registry lock: %s", redact_text(str(exc)))

    # --- entries --------------------------------------------------------------------------------

    def _read(self, key: str) -> dict | None:
        """The entry under key, or None when absent, unreadable or of another format."""
        raw = self.cache.get(key)
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(entry, dict) or entry.get("v") != FORMAT:
            return None
        if not isinstance(entry.get("checked"), (int, float)):
            return None
        return entry

    def _fresh(self, entry: dict) -> bool:
        """Whether the registry was asked less than a TTL ago (either way round: clocks differ a little)."""
        return abs(time.time() - entry["checked"]) < self.ttl

    @staticmethod
    def _has_answer(entry: dict | None) -> bool:
        return bool(entry) and any(entry.get(k) is not None for k in ("release", "waiting", "nothing"))

    def _answer(self, entry: dict, key: str, exclude: tuple) -> Release:
        """The Release an entry holds, as the registry vouches for it (`_vouch`); NotYetPublished /
        RegistryError for the other answers (their texts escaped and shortened: another host wrote them)."""
        data = entry.get("release")
        if isinstance(data, dict):
            try:
                release = Release(**{k: v for k, v in data.items() if k in _RELEASE_FIELDS})
            except TypeError:
                release = None  # a field missing: written by an incompatible dewy; treat as no answer
            if release is not None and all(isinstance(getattr(release, f), str) for f in ("version", "tag",
                                                                                          "artifact_name",
                                                                                          "artifact_url")):
                return self._vouch(release, key, exclude)
        if entry.get("waiting"):
            raise NotYetPublished(shown(entry["waiting"], 500))
        if entry.get("nothing"):
            raise NothingDeployable(shown(entry["nothing"], 500))
        raise RegistryError(shown(entry.get("error") or "the shared registry answer holds no release", 500))

    def _vouch(self, release: Release, key: str, exclude: tuple) -> Release:
        """The release to deploy for a release an entry names: the entry's own when the cache authenticated
        it (fleet key) and its artifact lies in the registry's store; else what the registry itself answers,
        asked once per distinct entry release (its artifact URL and checksum come from the registry's side)."""
        owns = getattr(self.registry, "owns", None)
        if getattr(self.cache, "authenticated", False) and owns is not None and owns(release.artifact_url):
            return release
        known = self._vouched.get(key)
        if known is not None and release in known:
            # Ours already, or another host's entry caught up with what the registry told us.
            self._remember(key, release, known[1])
            return known[1]
        direct = self.registry.latest(exclude=exclude)  # raises like the registry: an ordinary failed poll
        self._remember(key, release, direct)
        if (release.version, release.artifact_url) != (direct.version, direct.artifact_url) \
                and not self._older(release.version, direct.version) and release not in self._ignored:
            # Not a stale answer (the registry published a newer one since): another version, or the same one
            # at another place, than the registry publishes. Said once per such entry.
            if len(self._ignored) >= MAX_VOUCHED:
                self._ignored.clear()
            self._ignored.add(release)
            log.warning("the shared registry answer names %s at %s, which the registry %s does not publish as "
                        "its newest (%s): ignored, using the registry's answer", shown(release.version, 60),
                        shown(redact(release.artifact_url), 200), redact(self.registry.url), shown(direct.version, 60))
        elif release.version == direct.version and release.sha256 != direct.sha256 and release not in self._ignored:
            self._ignored.add(release)
            log.warning("the shared registry answer for %s carries another checksum than the registry %s publishes:"
                        " using the registry's", shown(direct.version, 60), redact(self.registry.url))
        return direct

    def _older(self, version: str, than: str) -> bool:
        """Whether version is older than `than` under the registry's scheme (False when either is no version)."""
        from dewy import versions  # semver: only once an entry is checked

        try:
            return versions.is_older(version, than, getattr(self.registry, "calver", None))
        except Exception:  # noqa: BLE001 - a forged entry's "version" may be anything
            return False

    def _remember(self, key: str, named: Release, vouched: Release) -> None:
        """Remember that an entry naming `named` stands for `vouched` (bounded: one per entry key)."""
        if key not in self._vouched and len(self._vouched) >= MAX_VOUCHED:
            self._vouched.clear()
        self._vouched[key] = (named, vouched)
