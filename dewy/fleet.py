"""Fleet rollouts: the hosts of one app that share a cache take each new version in waves.

With `rollout-waves` (and a shared cache: Redis, Consul, S3 or GCS), every host keeps three kinds of small
values in the cache, under the app's namespace (dewy/cache/remote.py):

- `fleet/hosts/<host id>`: its heartbeat, rewritten at every poll with a TTL of a few poll intervals:
  {host, version, state, since, seen, target, why, instance}. A host whose heartbeat expired has vanished:
  it blocks no wave.
- `fleet/rollout/<version>`: written once, by the first host that sees the version (a create-only `add`, so
  the fleet agrees on one): {version, started, by, hosts, waves}. `hosts` are the hosts alive then, ordered
  by a hash of (host id, version), so a different share of hosts goes first each time; `waves` are the
  cumulative host counts of each wave (`10%, 50%` of 20 hosts: [2, 10, 20]). A host that joined later
  belongs to the last wave.
- `fleet/refused/<version>`: a version that failed on some host (refused, or rolled back by its master):
  {version, host, reason, at}. Every host refuses it from then on; hosts already running it go back.

Every entry is written by some host of the fleet, so it is data, never an instruction: `_entries` escapes
control characters in its strings, shortens them and bounds lists and counts (`dewy fleet` prints them on
an operator's terminal), and a rollout whose hosts or waves are malformed is not followed. What another
host writes can hold this host back (a refusal, a wave), never make it deploy something (SECURITY.md).

A host may deploy a version when it is in the first wave, or when every host of the earlier waves that is
still alive has served that version for `rollout-soak`. Times are Unix seconds (hosts compare them, so not
a monotonic clock).
"""

import hashlib
import json
import math
import os
import socket
import time

HOSTS = "fleet/hosts/"
ROLLOUTS = "fleet/rollout/"
REFUSED = "fleet/refused/"
KEEP = 30 * 86400.0  # seconds a rollout or a fleet-wide refusal is remembered
MAX_TEXT = 300       # characters of a string another host wrote that are kept (reasons, states, names)
MAX_LIST = 10000     # items of a list (a rollout's hosts) and entries of one kind kept from the cache

# Heartbeat states.
SERVING, WAITING, DEPLOYING, IDLE = "serving", "waiting", "deploying", "idle"


def host_order(hosts, version: str) -> list:
    """hosts sorted by a hash of (host, version): a stable order per version, a different one for each."""
    return sorted(set(hosts), key=lambda host: (hashlib.sha256(("%s\0%s" % (host, version)).encode()).hexdigest(),
                                                host))


def waves(percentages, count: int) -> list:
    """[(cumulative host count, share label)] of each wave for count hosts: every percentage rounded up (at
    least one host more than the wave before, while hosts remain; shares that add nobody merge into the next),
    then everyone (`100%`)."""
    out = []
    for share in percentages:
        size = min(count, max(math.ceil(count * float(share) / 100.0 - 1e-9), (out[-1][0] if out else 0) + 1))
        if size >= count:
            break
        if not out or size > out[-1][0]:
            out.append((size, "%g%%" % float(share)))
    out.append((count, "100%"))
    return out


def wave_of(rollout: dict, host: str) -> int:
    """The wave (0-based) of host in a rollout; a host the rollout did not know (it joined later) comes after
    every wave of it."""
    hosts, sizes = rollout.get("hosts") or [], rollout.get("waves") or [0]
    if host not in hosts:
        return len(sizes)
    position = hosts.index(host)
    return next(i for i, size in enumerate(sizes) if position < size)


def clean(value, limit: int = MAX_TEXT):
    """A value another host wrote, made safe to show and use: strings with control characters escaped
    (`\\x1b`) and cut to limit, lists cut to MAX_LIST items, objects cleaned one level down (their keys too);
    numbers, booleans and None as they are, anything else as short text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        if any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in value):
            value = "".join(c if not (ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0) else "\\x%02x" % ord(c)
                            for c in value)
        return value if len(value) <= limit else value[:limit - 3] + "..."
    if isinstance(value, list):
        return [clean(v, limit) if not isinstance(v, (list, dict)) else clean(str(v), limit)
                for v in value[:MAX_LIST]]
    if isinstance(value, dict):
        return {clean(str(k), 80): clean(v, limit) if not isinstance(v, dict) else clean(str(v), limit)
                for k, v in list(value.items())[:100]}
    return clean(str(value), limit)


def _decode(raw) -> dict | None:
    """A JSON object from a cache value (cleaned: another host wrote it), or None when it is not one."""
    try:
        value = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        return None
    return clean(value) if isinstance(value, dict) else None


def _plan_ok(rollout) -> bool:
    """Whether a rollout read from the cache can be followed: a list of host ids and increasing wave sizes."""
    hosts, sizes = rollout.get("hosts"), rollout.get("waves")
    return (isinstance(hosts, list) and isinstance(sizes, list) and bool(sizes)
            and all(isinstance(h, str) for h in hosts)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes)
            and sizes == sorted(sizes))


def span(seconds: float) -> str:
    """seconds as a short duration for messages: 45s, 3m05s, 2h10m."""
    seconds = max(0, int(math.ceil(seconds)))
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % divmod(seconds, 60)
    return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)


class Fleet:
    """One host's view of the fleet in a shared cache: its heartbeat, the rollouts and fleet-wide refusals.

    Cache calls may raise dewy.cache.CacheUnavailable (scan, add); the poller goes without the rollout then.
    """

    def __init__(self, cache, host: str, waves, soak: float, clock=time.time):
        self.cache = cache
        self.host = host
        self.waves = tuple(float(w) for w in waves)
        self.soak = float(soak)
        self.clock = clock
        self.instance = os.urandom(6).hex()  # tells this poller from another host using the same host id
        self._written = False
        self._twin = None  # the instance of another dewy seen writing under our host id (warned about once)

    # --- heartbeats ---------------------------------------------------------------------------------

    def heartbeat(self, version: str | None, state: str, since: float | None, ttl: float,
                  target: str | None = None, why: str | None = None) -> str | None:
        """Write this host's heartbeat (expiring after ttl seconds). Returns a warning when another live host
        wrote under the same host id since our last heartbeat, else None."""
        key = HOSTS + self.host
        warning = None
        if self._written:
            other = _decode(self.cache.get(key))
            if other and other.get("instance") not in (None, self.instance, self._twin):
                self._twin = other.get("instance")  # said once per other dewy, not at every poll
                warning = ("another dewy (on %s, pid %s) uses host id %s: give each host its own host-id"
                           % (other.get("hostname") or "?", other.get("pid"), self.host))
        now = self.clock()
        beat = {"host": self.host, "version": version, "state": state, "since": since, "seen": now,
                "expires": now + ttl, "target": target, "why": why, "instance": self.instance, "pid": os.getpid(),
                "hostname": socket.gethostname()}
        self.cache.set(key, json.dumps(beat, sort_keys=True).encode(), ttl=ttl)
        self._written = True
        return warning

    def own_heartbeat(self) -> dict | None:
        """The heartbeat stored under this host id (a previous poller's, right after a restart)."""
        return _decode(self.cache.get(HOSTS + self.host))

    def hosts(self) -> dict:
        """host id -> heartbeat of every host alive (heartbeat not expired)."""
        return _entries(self.cache.scan(HOSTS), "host")

    def refusals(self) -> dict:
        """version -> {version, host, reason, at} of every version refused fleet-wide."""
        return _entries(self.cache.scan(REFUSED), "version")

    def rollouts(self) -> dict:
        """version -> rollout of every rollout remembered."""
        return {v: r for v, r in _entries(self.cache.scan(ROLLOUTS), "version").items() if _plan_ok(r)}

    # --- decisions ------------------------------------------------------------------------------------

    def refuse(self, version: str, reason: str) -> bool:
        """Refuse version fleet-wide; True when this host is the first to (it then tells the fleet)."""
        entry = {"version": version, "host": self.host, "reason": reason, "at": self.clock()}
        return self.cache.add(REFUSED + version, json.dumps(entry, sort_keys=True).encode(), KEEP)

    def rollout(self, version: str, alive: dict | None = None) -> dict:
        """The rollout of version, started now (with the hosts alive now) unless another host started it."""
        key = ROLLOUTS + version
        for _ in range(3):
            existing = _decode(self.cache.get(key))
            if existing and _plan_ok(existing):
                return existing
            alive = self.hosts() if alive is None else alive
            hosts = host_order(set(alive) | {self.host}, version)
            planned = waves(self.waves, len(hosts))
            entry = {"version": version, "started": self.clock(), "by": self.host, "hosts": hosts,
                     "waves": [size for size, _ in planned], "labels": [label for _, label in planned],
                     "soak": self.soak}
            if self.cache.add(key, json.dumps(entry, sort_keys=True).encode(), KEEP):
                return entry
        return entry  # the cache lost what it accepted twice: go by our own view

    def gate(self, version: str) -> tuple:
        """(may this host deploy version now, why not / which wave it is in)."""
        alive = self.hosts()
        rollout = self.rollout(version, alive)
        wave = wave_of(rollout, self.host)
        total = max(len(rollout["waves"]), wave + 1)
        if wave == 0:
            return True, "wave 1 of %d" % total
        waiting = blockers(rollout, alive, wave, rollout_soak(rollout, self.soak), self.clock())
        if waiting:
            more = " (and %d more)" % (len(waiting) - 1) if len(waiting) > 1 else ""
            return False, "wave %d of %d waits for %s%s" % (wave + 1, total, waiting[0][1], more)
        return True, "wave %d of %d" % (wave + 1, total)


def rollout_soak(rollout: dict, default: float) -> float:
    """The soak of a rollout: the one its first host recorded (every host gates alike), else default."""
    soak = rollout.get("soak")
    return float(soak) if isinstance(soak, (int, float)) else float(default)


def soak_left(beat: dict, soak: float) -> float:
    """Seconds a host still has to serve its version: counted up to its last heartbeat, so a host that died
    never finishes its soak (it stops counting when its heartbeat expires)."""
    since, seen = beat.get("since"), beat.get("seen")
    if not isinstance(since, (int, float)) or not isinstance(seen, (int, float)):
        return soak
    return soak - (seen - since)


def blockers(rollout: dict, alive: dict, wave: int, soak: float, now: float) -> list:
    """[(host, why)] of the hosts of the waves before `wave` that keep it waiting: alive, and not yet serving
    the rollout's version for `soak` seconds (as their heartbeats tell). Vanished hosts (no heartbeat)
    block nothing."""
    version = rollout["version"]
    sizes = rollout["waves"]
    earlier = rollout["hosts"][:sizes[min(wave, len(sizes)) - 1]] if wave > 0 else []
    waiting = []
    for host in earlier:
        beat = alive.get(host)
        if beat is None:
            continue
        if beat.get("version") != version:
            waiting.append((host, "%s to deploy %s (it is %s)" % (host, version, describe(beat))))
            continue
        left = soak_left(beat, soak)
        if left > 0:
            waiting.append((host, "%s to serve %s for %s more (rollout-soak)" % (host, version, span(left))))
    return waiting


def describe(beat: dict) -> str:
    """What a heartbeat says a host does: `serving 1.2.0`, `waiting (running 1.2.0)`, `idle (running nothing)`."""
    state, version = beat.get("state") or "alive", beat.get("version")
    if state == SERVING and version:
        return "serving %s" % version
    return "%s (running %s)" % (state, version or "nothing")


def _entries(values: dict, field: str) -> dict:
    """{entry[field]: entry} of the JSON objects among scanned values (others are skipped)."""
    out = {}
    for raw in values.values():
        entry = _decode(raw)
        if entry and isinstance(entry.get(field), str):
            out[entry[field]] = entry
            if len(out) >= MAX_LIST:
                break
    return out
