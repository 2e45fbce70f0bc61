"""The poller's part in fleet rollouts (dewy/fleet.py; with `rollout-waves`): its heartbeat, the fleet's
refusals followed here and its own published, and the wave gate a newer version waits at. A mixin of
dewy.poller.worker.Poller (it uses the poller's config, cache, registry, refused versions and notifier).
"""

import logging
import re
import threading
import time

from dewy import audit, fleet
from dewy import log as dewy_log
from dewy.cache.base import CacheRefused, CacheUnavailable
from dewy.statefiles import StateFileError
from dewy.log import redact_text
from dewy.poller import states

log = logging.getLogger("dewy.poller")


class Rollouts:
    """Fleet rollouts for the Poller: heartbeat(), adopt_fleet_refusals(), fleet_refuse(), rollout_gate()."""

    def heartbeat(self) -> None:
        """Tell the fleet what this host runs and does (with `rollout-waves`; a cache outage is no error)."""
        if self.fleet is None:
            return
        with self._beat_lock:
            state, target, why = self.beat_state or (
                fleet.SERVING if self.current_version else fleet.IDLE, None, None)
            # Alive for a few polls, backoff included (during a deploy a Pulse rewrites it every interval).
            ttl = 3 * self.poll_delay() + 10
            try:
                warning = self.fleet.heartbeat(self.current_version, state, self.serving_since, ttl, target, why)
            except Exception as exc:  # noqa: BLE001 - the heartbeat is a courtesy to the fleet: never fatal
                log.debug("cannot write the fleet heartbeat: %s", redact_text(str(exc)))
                return
        if warning:
            log.warning("%s", warning)

    def adopt_fleet_refusals(self) -> None:
        """Follow the fleet's refusals: refuse here what it refused (hosts running one go back to the version
        before), allow again what it no longer refuses (an operator deleted the key), and publish our own
        refusals that could not be published before."""
        if self.fleet is None:
            return
        try:
            refusals = self.fleet.refusals()
        except CacheUnavailable:
            return  # logged once by the cache
        known = self.refused.load()
        for version, entry in known.items():
            if entry.get("fleet") == "pending":
                self.fleet_refuse(version, entry.get("reason") or "refused")
            elif entry.get("fleet") in ("adopted", "published") and version not in refusals:
                self.refused.remove(version)
                log.info("%s is no longer refused fleet-wide (its key is gone from the cache): it may deploy again",
                         version)
        for version, entry in refusals.items():
            if version in known:
                continue
            reason = "refused fleet-wide: failed on %s: %s" % (entry.get("host") or "?", entry.get("reason") or "?")
            self.refused.add(version, reason, fleet="adopted")
            try:  # in `dewy history` of every host, not only the one where it failed (no notification: that
                audit.record(self.config.workdir, {"result": "refused", "version": version, "mode": self.config.mode,
                                                   "previous_version": self.current_version
                                                   if self.current_version != version else None,
                                                   "host": audit.hostname(self.config.host_id),
                                                   "error": dewy_log.scrub(reason)})  # one went out already)
            except OSError as exc:
                log.error("cannot write the audit log: %s", exc)
            if version == self.current_version:
                log.error("%s was %s: going back to the version before it", version, reason)
            else:
                log.info("%s was %s: not deploying it", version, reason)

    def fleet_refuse(self, version: str, reason: str) -> None:
        """Refuse version fleet-wide (rollouts on); the first host to do so notifies, once for the fleet. When
        the cache cannot take it now, the next polls try again."""
        if self.fleet is None:
            return
        try:
            first = self.fleet.refuse(version, dewy_log.scrub(reason))
        except CacheUnavailable as exc:
            try:
                pending = self.refused.load().get(version, {}).get("fleet") == "pending"
            except StateFileError:
                pending = False
            if not pending:
                log.error("cannot refuse %s fleet-wide yet (%s): trying again at every poll", version, exc)
                self.refused.add(version, reason, fleet="pending")
            return
        self.refused.add(version, reason, fleet="published")
        if first:
            log.error("rollout of %s stopped fleet-wide: %s", version, reason)
            self.notifier.emit("rollout-stopped", version, error=dewy_log.scrub(reason))

    def rollout_gate(self, release):
        """The release to deploy now: release when this host's wave has come (or without rollouts), else
        None — or, on a host that runs nothing yet, the newest release no unfinished rollout holds back."""
        if self.fleet is None:
            return release
        version, level = release.version, logging.INFO
        try:
            allowed, why = self.fleet.gate(version)
            self.cache_down_since = None
        except CacheRefused as exc:
            # Our password or token is wrong: that lasts, and going on alone would skip every canary.
            allowed, why, level = False, "the shared cache refuses our credentials (%s): holding it" % exc, logging.ERROR
        except CacheUnavailable as exc:
            # A cache outage must not stop deploys, but a blip must not skip the canaries either: wait for
            # the cache up to rollout-soak, then go on alone.
            now = time.monotonic()
            self.cache_down_since = self.cache_down_since or now
            waited = now - self.cache_down_since
            allowed = waited >= self.config.rollout_soak
            level = logging.WARNING
            why = ("the shared cache is unavailable (%s): deploying without the rollout" % exc if allowed else
                   "the shared cache is unavailable (%s): waiting for it for %s more (rollout-soak), then "
                   "deploying without the rollout" % (exc, fleet.span(self.config.rollout_soak - waited)))
        self.say_rollout(version, why, level)
        if allowed:
            return release
        self.beat_state = (fleet.WAITING, version, why)
        self.state(states.WAITING_WAVE, "cache-refused" if level == logging.ERROR else "cache-unavailable"
                   if level == logging.WARNING else "rollout-wave", why, held=version, send=False)
        if self.current_version is None:
            try:
                older = self.registry.latest(exclude=self.refused.versions() | {version})
            except Exception:  # noqa: BLE001 - nothing older to run meanwhile
                older = None
            if older is not None and older.version != version:
                log.info("running %s while the rollout of %s reaches this host", older.version, version)
                return older
        return None

    def say_rollout(self, version: str, why: str, level: int = logging.INFO) -> None:
        """Log where this host stands in version's rollout, once per change (not as a soak counts down)."""
        said = (version, re.sub(r" for \S+ more", "", why))
        if self.rollout_said != said:
            self.rollout_said = said
            log.log(level, "rollout of %s: %s", version, why)


class Pulse:
    """Calls beat() every `every` seconds from a thread while the `with` block runs (the poller's one thread is
    busy with a deploy meanwhile)."""

    def __init__(self, beat, every: float):
        self.beat, self.every = beat, max(0.05, float(every))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dewy-fleet-pulse", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()

    def __enter__(self) -> "Pulse":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.every + 10)
