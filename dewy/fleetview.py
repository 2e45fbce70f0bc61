"""`dewy fleet -c dewy.ini [--json]`: every host that shares this app's cache, and the rollout under way.

Reads what the pollers write into the shared cache (dewy/fleet.py): heartbeats, rollouts, fleet-wide
refusals. Needs only the ini's cache, registry (it names the app's keys) and rollout settings; creates
nothing anywhere.
"""

import json
import sys
import time

from dewy import fleet
from dewy.clock import utc_iso
from dewy.config import ConfigError, load_ini
from dewy.log import redact, redact_text

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2

USAGE = "dewy fleet -c INI [--json]"
OPTIONS = """Fleet options:
  -c INI, --config INI  The ini file of any host of the fleet (its cache, registry and rollout settings).
  --json                Print the hosts, the rollout and the refusals as one JSON object.
"""


def _ago(seconds: float) -> str:
    """`12s ago`, `3m ago`, `2h ago`."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return "%ds ago" % seconds
    if seconds < 7200:
        return "%dm ago" % (seconds // 60)
    return "%dh ago" % (seconds // 3600)


def _iso(when) -> str | None:
    return utc_iso(when) if isinstance(when, (int, float)) else None


def host_rows(hosts: dict) -> list:
    """The hosts as plain dicts, sorted by host id (times as ISO 8601)."""
    rows = []
    for host in sorted(hosts):
        beat = hosts[host]
        rows.append({"host": host, "version": beat.get("version"), "state": beat.get("state"),
                     "since": _iso(beat.get("since")), "last_seen": _iso(beat.get("seen")),
                     "expires": _iso(beat.get("expires")), "hostname": beat.get("hostname"),
                     "target": beat.get("target"), "why": beat.get("why"), "seen_unix": beat.get("seen"),
                     "expires_unix": beat.get("expires")})
    return rows


def rollout_view(rollout: dict, alive: dict, refusals: dict, soak: float, now: float) -> dict:
    """A rollout as `dewy fleet` shows it: state (done: every host alive serves the version; in progress;
    stopped: refused fleet-wide) and, per wave, its hosts and what each wave waits for. The soak is the one
    the rollout recorded (soak: the ini's, for a rollout that recorded none)."""
    version = rollout["version"]
    soak = fleet.rollout_soak(rollout, soak)
    sizes = rollout["waves"]
    labels = list(rollout.get("labels") or [])
    late = sorted(set(alive) - set(rollout["hosts"]))  # joined after the rollout started: after every wave
    groups = [rollout["hosts"][start:size] for start, size in zip([0] + sizes, sizes)] + ([late] if late else [])
    waves = []
    done = True
    for index, members in enumerate(groups):
        hosts = []
        for host in members:
            beat = alive.get(host)
            if beat is None:
                status = "vanished"
            elif beat.get("version") != version:
                status = fleet.describe(beat)
                done = False
            else:
                left = fleet.soak_left(beat, soak)
                status = "soaked" if left <= 0 else "soaking (%s left)" % fleet.span(left)
            hosts.append({"host": host, "status": status})
        waiting = [why for _, why in fleet.blockers(rollout, alive, index, soak, now)] if index else []
        label = labels[index] if index < len(labels) else "joined later" if index >= len(sizes) else "?"
        waves.append({"wave": index + 1, "share": label, "hosts": hosts, "waiting_for": waiting})
    state = "stopped" if version in refusals else "done" if done else "in progress"
    return {"version": version, "state": state, "started": _iso(rollout.get("started")), "by": rollout.get("by"),
            "soak_seconds": soak, "waves": waves, "refused": refusals.get(version)}


def gather(config, now: float | None = None) -> dict:
    """What the shared cache holds about the fleet of config's app (CacheUnavailable when it cannot answer)."""
    from dewy import cache as cache_pkg

    cache = cache_pkg.from_url(config.cache, config.workdir, registry=config.registry)
    if not cache.shared:
        raise ConfigError("%s: cache = %s is this host's alone: there is no fleet to show (a fleet shares "
                          "redis://, consul://, s3:// or gs://)" % (config.source, redact(config.cache)))
    view = fleet.Fleet(cache, config.host_id or "-", config.rollout_waves, config.rollout_soak)
    now = time.time() if now is None else now
    hosts, rollouts, refusals = view.hosts(), view.rollouts(), view.refusals()
    latest = max(rollouts.values(), key=lambda r: r.get("started") or 0, default=None)
    return {
        "cache": redact(config.cache), "app": getattr(cache, "app", None),
        "hosts": host_rows(hosts),
        "rollout": rollout_view(latest, hosts, refusals, config.rollout_soak, now) if latest else None,
        "refused": [dict(refusals[v], at=_iso(refusals[v].get("at")), key=cache.key(fleet.REFUSED + v))
            for v in sorted(refusals, key=lambda v: refusals[v].get("at") or 0)],
        "rollout_waves": ["%g%%" % w for w in config.rollout_waves],
    }


def render(data: dict, now: float) -> str:
    """The text `dewy fleet` prints."""
    lines = ["fleet of app %s in %s: %d host%s" % (data["app"], data["cache"], len(data["hosts"]),
                                                   "" if len(data["hosts"]) == 1 else "s")]
    if not data["rollout_waves"]:
        lines.append("(rollout-waves is off in this ini: every host deploys a release as soon as it sees it)")
    table = [("HOST", "VERSION", "STATE", "SINCE", "LAST SEEN", "")]
    for row in data["hosts"]:
        note = "%s: %s" % (row["target"], row["why"]) if row["why"] else row["target"] or ""
        seen = _ago(now - row["seen_unix"]) if isinstance(row["seen_unix"], (int, float)) else "-"
        expires = row.get("expires_unix")
        if isinstance(row["seen_unix"], (int, float)) and isinstance(expires, (int, float)) \
                and now - row["seen_unix"] > max(15.0, (expires - row["seen_unix"]) / 3):
            # Silent for longer than a live host ever is: say when it stops counting.
            seen += " (silent: stops counting in %s)" % fleet.span(expires - now)
        table.append((row["host"], row["version"] or "-", row["state"] or "-", row["since"] or "-", seen, note))
    widths = [max(len(str(r[i])) for r in table) for i in range(5)]
    lines += ["  ".join(str(cell).ljust(widths[i]) if i < 5 else str(cell) for i, cell in enumerate(r)).rstrip()
              for r in table]
    rollout = data["rollout"]
    if rollout:
        lines.append("")
        lines.append("rollout of %s: %s (started %s by %s, soak %s)" % (
            rollout["version"], rollout["state"], rollout["started"] or "?", rollout["by"] or "?",
            fleet.span(rollout["soak_seconds"])))
        for wave in rollout["waves"]:
            members = ", ".join("%s %s" % (h["host"], h["status"]) for h in wave["hosts"]) or "no hosts"
            lines.append("  wave %d (%s): %s" % (wave["wave"], wave["share"], members))
            if wave["waiting_for"] and rollout["state"] == "in progress":
                shown = wave["waiting_for"][:3]
                more = len(wave["waiting_for"]) - len(shown)
                lines.append("    waiting for %s%s" % ("; ".join(shown), " (and %d more)" % more if more else ""))
    if data["refused"]:
        lines.append("")
        lines.append("refused fleet-wide (no host deploys these; to allow one again, delete its key from the cache: "
                     "every host then forgets the refusal at its next poll):")
        for entry in data["refused"]:
            lines.append("  %s: failed on %s at %s: %s" % (entry.get("version"), entry.get("host"), entry.get("at"),
                                                          entry.get("reason")))
            lines.append("    key %s" % entry.get("key"))
    if not data["hosts"]:
        lines.append("")
        lines.append("No host has written a heartbeat here. Hosts share a fleet when they run with rollout-waves and "
                     "the same cache URL and app: ?app=NAME on the cache URL, else the same registry URL "
                     "(this ini's app key is %s)." % data["app"])
    return "\n".join(lines)


def main(args: dict) -> int:
    """Run `dewy fleet`; 0 shown, 1 the cache cannot answer, 2 bad input."""
    import logging

    from dewy.cache.base import CacheError

    logging.basicConfig(level=logging.WARNING, format="dewy: %(message)s", stream=sys.stderr)
    logging.getLogger("dewy.cache").setLevel(logging.CRITICAL)  # an outage is this command's one-line answer
    try:
        config = load_ini(args["--config"])
        now = time.time()
        data = gather(config, now)
    except ConfigError as exc:
        print("dewy: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except CacheError as exc:
        print("dewy: cache %s: %s" % (redact(config.cache), redact_text(str(exc))), file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.get("--json"):
        for row in data["hosts"]:
            row.pop("seen_unix", None)
            row.pop("expires_unix", None)
        print(json.dumps(data, sort_keys=True))
    else:
        print(render(data, now))
    return EXIT_OK
