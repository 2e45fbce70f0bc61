"""The poller process: `python -m dewy.poller --fd N`.

One loop waits on the master's pipe with the time left until the next poll as its timeout. (Helper
threads never change its state: the notifications' sender, dewy.notify.dispatch; with the `metrics`
setting prometheus-client's HTTP server; with `rollout-waves` a Pulse writing the heartbeat during a deploy.) Every `interval` (±10% jitter, so a fleet does not poll in lock
step) it asks the registry for the newest release not refused; when that version is not the one running,
deploy.Deploy runs the pipeline and asks the master to switch. While the registry fails, the interval
doubles up to `poll-backoff-max`; an outage is logged once when it starts and once when it ends (and a
poller restarted meanwhile carries it on: .dewy/outage.json). A registry that answers with nothing deployable
(no version, only refused ones, no artifact for this host) is no outage: one warning says why. The
master is the only source of truth for what runs: the `config`, `reload`, `deployed`, `rollback` and
`lost` messages set the current version. With `rollout-waves`, every poll also writes this host's heartbeat
into the shared cache, adopts the versions the fleet refused, and deploys a newer version only when this
host's wave has come (dewy/fleet.py).
"""

import argparse
import collections
import logging
import os
import random
import re
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse
from contextlib import nullcontext

from dewy import audit, backoff, fleet, hooks, pause, releases, versions
from dewy import cache as cache_pkg
from dewy import log as dewy_log
from dewy import notify as notify_pkg
from dewy import registry as registry_pkg
from dewy.cache.base import CacheError, CacheRefused, CacheUnavailable
from dewy.clock import utc_iso
from dewy.config import Config
from dewy.log import redact, redact_text
from dewy.notify.dispatch import Dispatcher
from dewy.poller.deploy import Backends, Deploy, Refused, Repeats, Transient, record_event
from dewy.poller.metrics import Metrics
from dewy.poller.trigger import Trigger
from dewy.protocol import Channel, ProtocolError
from dewy.registry import shared as shared_registry
from dewy.registry.base import NothingDeployable, NotYetPublished
from dewy.status import StateFileError, read_state, write_json_atomic
from dewy.workdir import state_path

log = logging.getLogger("dewy.poller")

JITTER = 0.10  # ± fraction of the interval
# How long a release may lack its artifact (CI still uploading) before that is worth a warning, and how often
# a lasting "nothing to deploy" is said again.
UPLOAD_GRACE = 10 * 60.0
REMIND_EVERY = 3600.0


class Stop(BaseException):
    """Leave the loop and exit 0: `stop`, EOF on the pipe, SIGTERM/SIGINT.

    A BaseException so that no `except Exception` on the way (a registry error handler, say)
    swallows it.
    """


class Poller:
    """Polls the registry and deploys on behalf of the master at the other end of `channel`."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.inbox = collections.deque()
        self.config = None
        self.registry = self.cache = None
        self.notifier = None      # a Dispatcher: the notifiers of the `notifier` setting, sent from a thread
        self.metrics = Metrics()  # served only with the `metrics` setting
        self.trigger = Trigger()  # POST /deploy, only with the `trigger` setting
        self.poll_request = None  # the id of the last `poll-now` (dewy deploy-now) read
        self.stop_reason = None   # why dewy stops, from the master's `stop` (None: only the poller goes)
        self.refused = None
        self.refused_problem = None  # why refused.json cannot be read, as last logged
        self.current_version = None
        self.current_dir = None
        self.next_poll = 0.0
        self.last_poll = None
        self.latest_version = None
        self.last_error = None
        self.repeats = Repeats()  # the last transient deploy failure, to audit a run of them once
        self.outage = None        # (first error, failed polls, since iso) while the registry fails
        self.waiting = None       # (message, first seen, logged at, warned) while nothing is deployable
        self.lost_version = None  # the version whose release dir the master lost (until redeployed)
        self.fleet = None         # a dewy.fleet.Fleet with `rollout-waves`, else None
        self.serving_since = None  # Unix time the running version started serving (the fleet's soak clock)
        self.beat_state = None    # (state, target, why) for this poll's heartbeat
        self.rollout_said = None  # the rollout line last logged ((version, why)), to log each once
        self._beat_lock = threading.Lock()  # heartbeats come from the loop and, during a deploy, from a Pulse
        self.cache_down_since = None  # monotonic time a rollout first found the cache unavailable
        self.deploy_failures = 0  # transient deploy failures in a row (disk full, a hook): they back off too
        self.unexpected_failures = 0  # deploys in a row that ended in an exception dewy did not expect

    # --- the pipe -------------------------------------------------------------------------------

    def next_message(self, timeout: float | None) -> dict | None:
        """The next message from the master, waiting up to timeout seconds (None: forever); None if none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.inbox:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.channel], [], [], left)
            if ready:
                self.inbox.extend(self.channel.receive())
                if self.channel.closed and not self.inbox:
                    log.info("the master closed the pipe; exiting")
                    raise Stop()
            elif deadline is not None and time.monotonic() >= deadline:
                return None
        return self.inbox.popleft()

    def send(self, type_: str, **fields) -> None:
        """Send a message to the master; a vanished master ends the worker."""
        try:
            self.channel.send(type_, **fields)
        except OSError as exc:
            log.info("cannot talk to the master (%s); exiting", exc)
            raise Stop() from None

    def handle(self, msg: dict) -> None:
        """Act on one message that is not the answer being waited for."""
        kind = msg.get("type")
        if kind in ("config", "reload"):
            self.apply_config(msg)
        elif kind == "stop":
            log.info("stop requested by the master")
            self.stop_reason = msg.get("reason") or None
            raise Stop()
        elif kind == "spawned":
            self.metrics.spawned(msg.get("reason") or "unknown")
            if msg.get("reason") in ("respawn", "health") and msg.get("version") == self.current_version:
                # The app crashed (or failed its health checks) and was restarted: a fleet rollout's soak
                # counts time served without that, so it starts again.
                self.serving_since = time.time()
                self.heartbeat()
        elif kind == "rollback":
            self.on_rollback(msg)
        elif kind == "lost":
            self.on_lost(msg)
        elif kind == "poll-now":
            self.next_poll = time.monotonic()  # `dewy deploy-now` / `dewy resume`
            self.poll_request = msg.get("id", self.poll_request)  # echoed in `status`: the polls after it
        elif kind == "ping":
            self.send("pong")  # liveness: the master restarts a poller that stops answering
        elif kind == "deployed":
            log.warning("ignoring an unexpected deployed message for %s", msg.get("version"))
        else:
            log.warning("ignoring unknown message type %r", kind)  # a newer master may send more

    def ask_master(self, **deploy) -> dict:
        """Send `deploy` and wait for the master's `deployed` answer for that version.

        Meanwhile `stop` still ends the worker, and `reload`/`rollback` are handled as usual.
        """
        self.send("deploy", **deploy)
        while True:
            msg = self.next_message(None)
            if msg.get("type") == "deployed" and msg.get("version") == deploy["version"]:
                if not msg.get("ok") and msg.get("retry"):
                    # Not the release's fault (the app command cannot run, say): try again, refuse nothing.
                    raise Transient("master: %s" % (msg.get("error") or "cannot start the app"))
                return msg
            self.handle(msg)

    # --- state from the master ------------------------------------------------------------------

    def apply_config(self, msg: dict) -> None:
        """Adopt a `config`/`reload` message: settings, backends, what runs now; poll soon."""
        old = self.config
        config = Config.from_json(msg["config"])
        dewy_log.setup(config.log_level, config.log_format, "dewy.poller")
        if old is None or (old.cache, old.workdir, old.registry) != (config.cache, config.workdir, config.registry):
            # The registry URL names this app's keys in a shared cache (redis://, consul://) without ?app=.
            self.cache = cache_pkg.from_url(config.cache, config.workdir, registry=config.registry)
            self.registry = None
        if old is None or self.registry is None or (old.registry, old.slot) != (config.registry, config.slot):
            # A shared cache with ?registry-ttl= makes the fleet share one registry answer per TTL.
            self.registry = shared_registry.wrap(
                registry_pkg.from_url(config.registry, cache=self.cache, slot=config.slot), self.cache)
        if old is None or old.notifier != config.notifier:
            if self.notifier is not None:
                self.notifier.close(0)  # what it still has queued goes out in the background
            self.notifier = Dispatcher(notify_pkg.from_setting(config.notifier))
        self.notifier.app = app_name(config)
        self.notifier.use_workdir(config.workdir)  # Slack threads kept in .dewy/ across restarts
        if config.host_id:
            self.notifier.host = config.host_id  # the fleet's name for this host, in every notification
        self.metrics.configure(config)  # `metrics` (Prometheus) and `otlp-endpoint` (OpenTelemetry)
        self.trigger.start(config)
        self.config = config
        self.refused = Refused(config.workdir)
        self.fleet = fleet.Fleet(self.cache, config.host_id or socket.gethostname(), config.rollout_waves,
                                 config.rollout_soak) if config.rollout_waves else None
        current = msg.get("current") or {}
        self.set_current(current.get("version"), current.get("release_dir"))
        if self.fleet is not None and self.current_version and old is None:
            # A restarted poller: the version has served since the heartbeat of the poller before us said.
            beat = self.fleet.own_heartbeat() or {}
            if beat.get("version") == self.current_version and isinstance(beat.get("since"), (int, float)):
                self.serving_since = beat["since"]
        self.heartbeat()  # known to the fleet before our first poll: a rollout started now counts us in
        self.next_poll = time.monotonic()  # a new config may name a new registry: look now
        self.deploy_failures = self.unexpected_failures = 0  # ... or fix what made deploys fail
        self.metrics.serving(self.current_version)
        log.info("%s: registry %s, every %gs, running %s", msg.get("type"), dewy_log.redact(config.registry),
                 config.interval, self.current_version or "nothing")
        if old is None:
            self.announce_start()
            self.resume_outage()

    def announce_start(self) -> None:
        """Notify "dewy started" once per master process: not again when the master only restarts its poller
        (or re-execs itself for an upgrade: same pid, same start time)."""
        master = _process_identity(os.getppid())
        path = state_path(self.config.workdir, ANNOUNCED_FILE)
        try:
            announced = read_state(path, "notification state") or {}
        except StateFileError as exc:
            log.error("%s: announcing the start again and rewriting it", exc)  # twice beats never
            announced = {}
        if master is not None and isinstance(announced, dict) and announced.get("master") == master:
            return
        self.notifier.emit("started", self.current_version, mode=self.config.mode)
        if master is not None:
            try:
                write_json_atomic(path, {"master": master})
            except OSError as exc:
                log.warning("cannot write %s: %s", path, exc)

    def resume_outage(self) -> None:
        """A poller restarted by the same master (after a crash, `dewy upgrade` / USR2) takes over the registry
        outage its predecessor was in: no second registry-unreachable, the backoff goes on."""
        master = _process_identity(os.getppid())
        try:
            saved = read_state(state_path(self.config.workdir, OUTAGE_FILE), "outage state") or {}
        except StateFileError as exc:
            log.error("%s: an outage going on is counted afresh", exc)
            saved = {"unreadable": True}  # replaced below
        saved = saved if isinstance(saved, dict) else {"unreadable": True}
        if master is None or saved.get("master") != master or saved.get("registry") != redact(self.config.registry):
            if saved:
                self.save_outage()  # a previous master's (or registry's): stale, gone
            return
        error, count, since = saved.get("error"), saved.get("count"), saved.get("since")
        if isinstance(error, str) and isinstance(count, int) and count > 0 and isinstance(since, str):
            self.outage = (error, count, since)
            log.info("registry %s still failing since %s (%d failed poll%s): %s", redact(self.config.registry),
                     since, count, "" if count == 1 else "s", error)

    def save_outage(self) -> None:
        """Remember the ongoing outage in .dewy/ for a restarted poller (none: forget it); failures are logged."""
        path = state_path(self.config.workdir, OUTAGE_FILE)
        try:
            if self.outage is None:
                if os.path.lexists(path):
                    os.unlink(path)
                return
            error, count, since = self.outage
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            write_json_atomic(path, {"master": _process_identity(os.getppid()),
                                     "registry": redact(self.config.registry),
                                     "error": error, "count": count, "since": since})
        except OSError as exc:
            log.debug("cannot write %s: %s", path, exc)

    def finish(self) -> None:
        """Leaving: notify "dewy stopped" when the master stops (not when only this poller goes), then give
        the queued notifications a bounded time to go out."""
        if self.stop_reason is None:
            try:  # SIGTERM may have beaten the `stop` message that says why: look in what is unread
                unread = list(self.inbox)
                if select.select([self.channel], [], [], 0)[0]:
                    unread += self.channel.receive()
                for msg in unread:
                    if msg.get("type") == "stop" and msg.get("reason"):
                        self.stop_reason = msg["reason"]
            except (OSError, ProtocolError):
                pass
        if self.notifier is None:
            return
        if self.stop_reason and self.config is not None:
            self.notifier.emit("stopped", self.current_version, reason=self.stop_reason, mode=self.config.mode)
        self.notifier.close()
        self.metrics.stop(otel=True)
        self.trigger.stop()

    def set_current(self, version: str | None, release_dir: str | None) -> None:
        """Remember what the master runs now (and since when, for the fleet's soak)."""
        if (version or None) != self.current_version or self.serving_since is None:
            self.serving_since = time.time() if version else None
        self.current_version = version or None
        self.current_dir = release_dir or None

    def backends(self) -> Backends:
        """The backends as they are now (a deploy keeps these even if a reload switches them meanwhile)."""
        return Backends(self.config, self.registry, self.cache, self.notifier, self.metrics)

    def on_rollback(self, msg: dict) -> None:
        """The master went back from `version` to `to_version`: refuse `version`, audit and notify.

        An operator's `dewy rollback --to` a newer version (undoing a rollback) refuses nothing; `to_version`
        serves, so it is no longer refused, whoever switched. An operator's switch is information, not an error
        (its `rolled-back` notification carries `operator: true` and does not count towards error limiting)."""
        version, to_version, error = msg.get("version"), msg.get("to_version"), dewy_log.scrub(msg.get("error"))
        operator = bool(msg.get("operator"))
        # The operator's own switch is no error (logged and notified as information); a crash loop is.
        log.log(logging.INFO if operator else logging.ERROR, "the master rolled %s back to %s: %s", version,
                to_version or "nothing", error)
        refuse = bool(version) and (not operator or pause.refuses_left(version, to_version, self.registry.calver))
        if to_version:
            # What serves now is not refused: chosen by the operator, or gone back to when the version switched to
            # (also by `dewy rollback`) crash-looped.
            self.refused.remove(to_version)
        if refuse:
            self.refused.add(version, "rolled back: %s" % (error or "crash-looped after deploy"))
        self.metrics.rolled_back(to_version)
        record_event(self.backends(), "rolled-back",
                     {"version": version, "previous_version": to_version, "to_version": to_version, "error": error},
                     **({"operator": True} if operator else {}))
        self.set_current(to_version, releases.read_link(os.path.join(self.config.workdir, "current")))
        self.repeats.clear()
        if refuse:
            self.fleet_refuse(version, "rolled back: %s" % (error or "crash-looped after deploy"))
        hooks.run_after_rollback(self.config, self.notifier, to_version, self.current_dir, version, log)

    def on_lost(self, msg: dict) -> None:
        """The release the master ran is gone from disk: forget it, so the next poll deploys afresh."""
        log.error("the master lost %s (%s): deploying again", msg.get("version"), msg.get("error"))
        self.set_current(None, None)
        self.lost_version = msg.get("version")  # what the redeploy replaces, for its audit line and notice
        self.next_poll = time.monotonic()

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        """Wait for the config, then poll and deploy until stopped."""
        while self.config is None:
            msg = self.next_message(None)
            if msg.get("type") != "config":
                log.warning("expected the config first, got %r", msg.get("type"))
            if msg.get("type") in ("config", "stop"):
                self.handle(msg)
        while True:
            msg = self.next_message(max(0.0, self.next_poll - time.monotonic()))
            if msg is not None:
                self.handle(msg)
                continue
            if time.monotonic() >= self.next_poll:
                self.poll()
                self.next_poll = time.monotonic() + self.poll_delay() * random.uniform(1 - JITTER, 1 + JITTER)

    def poll_delay(self) -> float:
        """Seconds until the next poll: `interval`, doubled per failed poll (or retried deploy) in a row up to
        poll-backoff-max."""
        interval = self.config.interval
        failures = max(self.outage[1] - 1 if self.outage else 0, self.deploy_failures - 1)
        return backoff.delay(interval, failures, max(interval, self.config.poll_backoff_max))

    def poll(self) -> None:
        """Ask the registry once; deploy when its newest version is not the running one (and, in a fleet
        rollout, when this host's wave has come); report status."""
        self.last_poll = utc_iso()
        self.beat_state = None
        try:
            if self.refusals_unreadable():
                return
            self.adopt_fleet_refusals()
            self._poll()
        finally:
            self.heartbeat()

    def refusals_unreadable(self) -> bool:
        """Whether refused.json cannot be read now: then nothing new deploys (a version it refuses might), said
        once per problem in the log and at every poll in the status, until the file is fixed or deleted."""
        try:
            self.refused.versions()
        except StateFileError as exc:
            problem = "%s; deploying nothing new until it is fixed or deleted" % exc
            if problem != self.refused_problem:
                log.error("%s", problem)
                self.refused_problem = problem
            self.report_status(problem)
            return True
        if self.refused_problem:
            log.info("%s reads again: deploying again", self.refused.path)
            self.refused_problem = None
        return False

    def _poll(self) -> None:
        try:
            release = self.registry.latest(exclude=self.refused.versions())
        except NothingDeployable as exc:
            # The registry answered: no version yet, every one refused, or the newest still being uploaded.
            # Not an outage: no backoff, no registry-unreachable notification.
            # No newest version as of this poll (here and below): `dewy status` and `dewy deploy-now` must not
            # go on showing, and calling "up to date", the one an earlier poll found.
            self.latest_version = None
            self.metrics.polled("waiting" if isinstance(exc, NotYetPublished) else
                                "not_modified" if getattr(self.registry, "not_modified", False) is True else "ok")
            self.registry_reachable()
            self.nothing_to_deploy(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a registry problem must never end the loop
            self.latest_version = None
            self.metrics.polled("error")
            self.registry_failed(redact_text(str(exc)) or type(exc).__name__)
            return
        self.metrics.polled("not_modified" if getattr(self.registry, "not_modified", False) is True else "ok")
        self.registry_reachable()
        self.waiting = None
        self.latest_version = release.version
        # Compare versions for equality, never "newer than": when the newest release is deleted
        # from the registry, the next newest is what must run (the FAQ rollback).
        if release.version == self.current_version:
            self.report_status(None)
            return
        if pause.holds(pause.read(self.config.workdir), release.version, self.registry.calver):  # or a rollback's hold
            log.debug("deploys are paused: not deploying %s", release.version)
            self.report_status(None)
            return
        going_back = bool(self.current_version) and versions.is_older(release.version, self.current_version,
                                                                       self.registry.calver)
        if going_back:
            # The FAQ rollback (the newest was deleted, or newer ones refused): deliberate, but worth a warning.
            log.warning("the newest deployable version %s is older than the running %s: going back to it",
                        release.version, self.current_version)
        elif release.version != self.lost_version:
            release = self.rollout_gate(release)
            if release is None:
                self.report_status(None)
                return
        self.deploy(release)

    def deploy(self, release) -> None:
        """Deploy release now (the registry's newest, or an older one), and report the outcome."""
        # A deploy is due: report the poll now (it may wait long for the master), keeping the error of
        # a previous failed attempt until this attempt's outcome replaces it, so the status does not flap.
        self.report_status(self.repeats.pending(release.version))
        deploy = Deploy(release, self.backends(), (self.current_version or self.lost_version, self.current_dir),
                        self.ask_master, self.refused, self.repeats, tell_master=self.send)
        self.beat_state = (fleet.DEPLOYING, release.version, None)
        self.heartbeat()
        # Downloading, unpacking, hooks and the master's readiness wait keep this thread busy: a Pulse keeps
        # the fleet seeing a live host meanwhile (and a dead one vanishes as fast as an idle one).
        with Pulse(self.heartbeat, self.config.interval) if self.fleet else nullcontext():
            try:
                error = deploy.run()
            except Exception as exc:  # noqa: BLE001 - a bug in one deploy must not kill the poller
                error = "deploy of %s failed: %s" % (release.version, redact_text(str(exc)) or type(exc).__name__)
                self.unexpected_failures += 1
                if self.unexpected_failures == 1:  # the traceback once; the same failure again is one line
                    log.exception("deploy of %s failed unexpectedly", release.version)
                else:
                    log.error("%s (%d times in a row)", error, self.unexpected_failures)
            else:
                self.unexpected_failures = 0
        self.beat_state = None
        self.deploy_failures = 0
        if error is None:
            self.set_current(release.version, deploy.release_dir)
            self.lost_version = None
            self.metrics.serving(release.version)
        elif self.refused.holds(release.version):
            self.fleet_refuse(release.version, error)  # refused here: nobody else deploys it
        else:
            # Retried (a full disk, a failing hook, a download cut short): not at every poll, but backing
            # off like a failing registry, so a host does not download the same artifact again and again.
            self.deploy_failures = max(self.unexpected_failures,
                                       self.repeats.count if self.repeats.pending(release.version) else 1)
        self.report_status(error)

    # --- fleet rollouts (dewy/fleet.py) -----------------------------------------------------------

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

    def nothing_to_deploy(self, exc: NothingDeployable) -> None:
        """The registry answered with nothing deployable: say why once (again when the reason changes, and as a
        reminder every REMIND_EVERY), as a warning shown in `dewy status` — except for a release whose artifact
        is still being uploaded (younger than UPLOAD_GRACE): that is only an info line."""
        message = redact_text(str(exc))
        now, clock = time.time(), time.monotonic()
        if self.waiting is None or self.waiting[0] != message:
            self.waiting = (message, now, None, False)
        _, first_seen, logged_at, warned = self.waiting
        if isinstance(exc, NotYetPublished):
            text = "waiting for the artifact: %s" % message
            since = exc.since if exc.since is not None else first_seen
            if now - since < UPLOAD_GRACE:  # CI still uploading, most likely: not a problem yet
                if logged_at is None:
                    log.info("%s", text)
                    self.waiting = (message, first_seen, clock, False)
                self.report_status(None)
                return
            text += " (for %s)" % fleet.span(now - since)
        else:
            text = "nothing to deploy: %s" % message
        if not warned or clock - logged_at >= REMIND_EVERY:
            log.warning("%s", text)
            self.waiting = (message, first_seen, clock, True)
        self.report_status(text)

    def registry_failed(self, error: str) -> None:
        """Count a failed poll; log the first of an outage (and a changed error) only."""
        where = redact(self.config.registry)
        if self.outage is None:
            self.outage = (error, 1, utc_iso())
            log.error("registry %s: %s (polling backs off up to %gs until it answers)", where, error,
                      max(self.config.interval, self.config.poll_backoff_max))
            self.notifier.emit("registry-unreachable", self.current_version, error=error, registry=where)
            self.save_outage()
        else:
            first, count, since = self.outage
            self.outage = (error, count + 1, since)
            # The same problem with other numbers in it (a port, "retry after 12s") is no news.
            if re.sub(r"\d+", "#", error) != re.sub(r"\d+", "#", first):
                log.warning("registry %s: %s", where, error)
            else:
                log.debug("registry %s: %s (failed polls: %d)", where, error, count + 1)
            self.save_outage()
        self.report_status(error)

    def registry_reachable(self) -> None:
        """End an outage: one line saying how long it lasted."""
        if self.outage is not None:
            _, count, since = self.outage
            log.info("registry %s answers again (after %d failed poll%s since %s)", redact(self.config.registry),
                     count, "" if count == 1 else "s", since)
            self.outage = None
            self.save_outage()
            self.notifier.emit("registry-reachable", self.current_version, failed_polls=count, since=since,
                               registry=redact(self.config.registry))

    def report_status(self, error: str | None) -> None:
        """Send `status` to the master."""
        error = dewy_log.scrub(error)  # the master shows it in the status file and `dewy status`
        self.last_error = error
        # When the next poll is due (about: the jitter is drawn later), for `dewy status`.
        next_poll = utc_iso(time.time() + self.poll_delay()) if self.config else None
        # With rollouts: where this host stands in the rollout of a newer version ("1.3.0: wave 2 of 3 waits...").
        waiting = self.beat_state if self.beat_state and self.beat_state[0] == fleet.WAITING else None
        self.send("status", last_poll=self.last_poll, latest_version=self.latest_version, last_error=error,
                  poll_request=self.poll_request, next_poll=next_poll, calver=getattr(self.registry, "calver", None),
                  rollout="%s: %s" % (waiting[1], waiting[2]) if waiting else None)


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


ANNOUNCED_FILE = "notified.json"  # {"master": "<pid>:<start time>"}: the master "dewy started" was sent for
OUTAGE_FILE = "outage.json"  # {"master", "registry", "error", "count", "since"}: the registry outage going on


def _process_identity(pid: int) -> str | None:
    """`<pid>:<start time in clock ticks>`: names one process for good (pids are reused); None if unknown."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            stat = fh.read()
        return "%d:%s" % (pid, stat.rpartition(")")[2].split()[19])
    except (OSError, IndexError):
        return None


def app_name(config: Config) -> str:
    """The app's name in notifications (a notifier's ?title= overrides it): the registry's last path part
    (ghr://owner/REPO, s3://region/bucket/PREFIX), else its host, else the workdir's name."""
    parsed = urllib.parse.urlsplit(config.registry)
    path = [part for part in parsed.path.split("/") if part]
    if parsed.scheme == "ghr" and not path:
        return parsed.hostname or "dewy"
    return (path[-1] if path else parsed.hostname) or os.path.basename(config.workdir.rstrip("/")) or "dewy"


def _raise_stop(signum, frame):
    raise Stop()


def main(argv=None) -> int:
    """Entry point of `python -m dewy.poller --fd N`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="dewy.poller", description="dewy's poller worker (started by dewy-master)")
    parser.add_argument("--fd", type=int, required=True, help="the inherited socketpair descriptor")
    args = parser.parse_args(argv)
    try:
        from setproctitle import setproctitle

        setproctitle("dewy-poller")
    except ImportError:
        pass
    try:
        sock = socket.socket(fileno=args.fd)
    except OSError as exc:
        print("dewy.poller: bad --fd %d: %s" % (args.fd, exc), file=sys.stderr)
        return 2
    poller = None
    try:
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
        # A terminal hangup reaches the whole group; the master re-reads the config and sends `reload`.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        poller = Poller(Channel(sock))
        poller.run()
    except Stop:
        # We are leaving: a second SIGTERM must not cut the last notifications (bounded) short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if poller is not None:
                poller.finish()
        except Exception:  # noqa: BLE001 - leaving anyway
            log.exception("while finishing")
        return 0
    except ProtocolError as exc:
        log.error("the master sent garbage: %s", exc)
        return 1
    except CacheError as exc:
        # The config check saw a usable cache directory; the disk changed since (one line, no traceback).
        log.error("cannot use the cache: %s (the poller is restarted with backoff)", redact_text(str(exc)))
        return 1
    except Exception:  # noqa: BLE001 - logged with its traceback; the master restarts us with backoff
        log.exception("the poller failed")
        return 1
    finally:
        # We are leaving anyway: a second SIGTERM must not turn a clean exit into a traceback.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            sock.close()
        except OSError:
            pass
    return 0
