"""The poller process: `python -m dewy.poller --fd N`.

One loop waits on the master's pipe (and a wake-up pipe the `trigger` thread pokes: poll now) with the time
left until the next poll as its timeout. (Helper threads never change its state: the notifications' sender,
dewy.notify.dispatch; with the `metrics` setting prometheus-client's HTTP server; with `trigger` its HTTP
server; with `rollout-waves` a Pulse writing the heartbeat during a deploy.) It says what it does (state and
reason, dewy/poller/states.py) in every `status` and in a `state` message at each change, and it alone decides
whether a version may deploy now (refusals, `dewy pause`, a rollback's hold, the rollout wave; the pause is
looked at again before the switch). Every `interval` (±10% jitter, so a fleet does not poll in lock
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
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse
from contextlib import nullcontext

from dewy import backoff, fleet, hooks, pause, releases, versions
from dewy import cache as cache_pkg
from dewy import log as dewy_log
from dewy import notify as notify_pkg
from dewy import registry as registry_pkg
from dewy.cache.base import CacheError
from dewy.clock import utc_iso
from dewy.config import Config
from dewy.log import redact_text
from dewy.notify.dispatch import Dispatcher
from dewy.poller import states
from dewy.poller.deploy import Backends, Deploy, Paused, Refused, Repeats, Transient, record_event
from dewy.poller.metrics import Metrics
from dewy.poller.outage import Outages
from dewy.poller.rollout import Pulse, Rollouts
from dewy.poller.trigger import Trigger
from dewy import protocol
from dewy.protocol import Channel, ProtocolError
from dewy.registry import shared as shared_registry
from dewy.registry.base import NothingDeployable, NotYetPublished
from dewy.statefiles import StateFileError

log = logging.getLogger("dewy.poller")

JITTER = 0.10  # ± fraction of the interval


class Stop(BaseException):
    """Leave the loop and exit 0: `stop`, EOF on the pipe, SIGTERM/SIGINT.

    A BaseException so that no `except Exception` on the way (a registry error handler, say)
    swallows it.
    """


class Poller(Rollouts, Outages):
    """Polls the registry and deploys on behalf of the master at the other end of `channel`."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.inbox = collections.deque()
        self.config = None
        self.registry = self.cache = None
        self.notifier = None      # a Dispatcher: the notifiers of the `notifier` setting, sent from a thread
        self.metrics = Metrics()  # served only with the `metrics` setting
        # POST /deploy (only with the `trigger` setting) pokes this loop from the trigger's thread: a flag and a byte
        # on a pipe the loop waits on beside the master's, so the master is not needed to poll now.
        self.poked = threading.Event()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.trigger = Trigger(poke=self.poke)
        self.poll_request = None  # the id of the last `poll-now` (dewy deploy-now) read
        self.stated = states.Stated()  # what this poller says it does (`status` / `state` messages)
        self.poll_cause = "config"  # why the next poll comes early: deploy-now, trigger, config, lost
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

    def next_message(self, timeout: float | None) -> protocol.Message | None:
        """The next message from the master (its dewy.protocol class), waiting up to timeout seconds (None:
        forever); None if none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.inbox:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.channel, self.wake_r], [], [], left)
            if self.wake_r in ready and self.woken() and deadline is not None:
                return None  # a trigger: the loop looks at next_poll again (waiting for `deployed`, it waits on)
            if self.channel in ready:
                self.inbox.extend(self.channel.receive())
                if self.channel.closed and not self.inbox:
                    log.info("the master closed the pipe; exiting")
                    raise Stop()
            elif deadline is not None and time.monotonic() >= deadline:
                return None
        return protocol.parse(self.inbox.popleft())

    def poke(self) -> None:
        """From the trigger's thread: poll now (the loop wakes up; a deploy under way finishes first)."""
        self.poked.set()
        try:
            os.write(self.wake_w, b"!")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def woken(self) -> bool:
        """The loop woke up for a poke: drain the pipe, and poll now if a trigger asked (True)."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        if not self.poked.is_set():
            return False
        self.poked.clear()
        self.poll_now("trigger")
        return True

    def send(self, type_: str, **fields) -> None:
        """Send a message to the master (built by its dewy.protocol class: a field it does not have is a bug,
        raised here); a vanished master ends the worker."""
        msg = protocol.MESSAGES[type_](**fields)
        try:
            self.channel.send(msg)
        except OSError as exc:
            log.info("cannot talk to the master (%s); exiting", exc)
            raise Stop() from None

    def handle(self, msg: "protocol.Message | dict") -> None:
        """Act on one message that is not the answer being waited for (a dict is parsed first)."""
        if isinstance(msg, dict):
            msg = protocol.parse(msg)
        if isinstance(msg, (protocol.Config, protocol.Reload)):
            self.apply_config(msg)
        elif isinstance(msg, protocol.Stop):
            log.info("stop requested by the master")
            self.stop_reason = msg.reason or None
            raise Stop()
        elif isinstance(msg, protocol.Spawned):
            self.metrics.spawned(msg.reason or "unknown")
            if msg.reason in ("respawn", "health") and msg.version == self.current_version:
                # The app crashed (or failed its health checks) and was restarted: a fleet rollout's soak
                # counts time served without that, so it starts again.
                self.serving_since = time.time()
                self.heartbeat()
        elif isinstance(msg, protocol.Rollback):
            self.on_rollback(msg)
        elif isinstance(msg, protocol.Lost):
            self.on_lost(msg)
        elif isinstance(msg, protocol.PollNow):
            self.poll_now("deploy-now")  # `dewy deploy-now` / `dewy resume`
            if msg.id is not None:
                self.poll_request = msg.id  # echoed in `status`: the polls after it
        elif isinstance(msg, protocol.Ping):
            self.send("pong")  # liveness: the master restarts a poller that stops answering
        elif isinstance(msg, protocol.Deployed):
            log.warning("ignoring an unexpected deployed message for %s", msg.version)
        else:
            log.warning("ignoring unknown message type %r", msg.type)  # a newer master may send more

    def ask_master(self, **deploy) -> dict:
        """Send `deploy` and wait for the master's `deployed` answer for that version.

        Meanwhile `stop` still ends the worker, and `reload`/`rollback` are handled as usual.
        """
        self.send("deploy", **deploy)
        while True:
            msg = self.next_message(None)
            if isinstance(msg, protocol.Deployed) and msg.version == deploy["version"]:
                if not msg.ok and msg.paused:
                    # `dewy pause` reached the master before our request: it did not switch.
                    raise Paused("deploys were paused before the switch to %s: not switched (the master: %s)"
                                 % (deploy["version"], msg.error or "paused"))
                if not msg.ok and msg.retry:
                    # Not the release's fault (the app command cannot run, say): try again, refuse nothing.
                    raise Transient("master: %s" % (msg.error or "cannot start the app"))
                return msg.to_dict()
            self.handle(msg)

    # --- state from the master ------------------------------------------------------------------

    def apply_config(self, msg: "protocol.Config | protocol.Reload") -> None:
        """Adopt a `config`/`reload` message (a dict is parsed first): settings, backends, what runs now; poll soon."""
        if isinstance(msg, dict):
            msg = protocol.parse(msg)
        old = self.config
        config = Config.from_json(msg.config)
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
        current = msg.current or {}
        self.set_current(current.get("version"), current.get("release_dir"))
        if self.fleet is not None and self.current_version and old is None:
            # A restarted poller: the version has served since the heartbeat of the poller before us said.
            beat = self.fleet.own_heartbeat() or {}
            if beat.get("version") == self.current_version and isinstance(beat.get("since"), (int, float)):
                self.serving_since = beat["since"]
        self.heartbeat()  # known to the fleet before our first poll: a rollout started now counts us in
        self.poll_now("config")  # a new config may name a new registry: look now
        self.deploy_failures = self.unexpected_failures = 0  # ... or fix what made deploys fail
        self.metrics.serving(self.current_version)
        log.info("%s: registry %s, every %gs, running %s", msg.type, dewy_log.redact(config.registry),
                 config.interval, self.current_version or "nothing")
        if old is None:
            self.announce_start()
            self.resume_outage()

    def finish(self) -> None:
        """Leaving: notify "dewy stopped" when the master stops (not when only this poller goes), then give
        the queued notifications a bounded time to go out."""
        if self.stop_reason is None:
            try:  # SIGTERM may have beaten the `stop` message that says why: look in what is unread
                unread = list(self.inbox)
                if select.select([self.channel], [], [], 0)[0]:
                    unread += self.channel.receive()
                for msg in map(protocol.parse, unread):
                    if isinstance(msg, protocol.Stop) and msg.reason:
                        self.stop_reason = msg.reason
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

    def on_rollback(self, msg: protocol.Rollback) -> None:
        """The master went back from `version` to `to_version`: refuse `version`, audit and notify.

        An operator's `dewy rollback --to` a newer version (undoing a rollback) refuses nothing; `to_version`
        serves, so it is no longer refused, whoever switched. An operator's switch is information, not an error
        (its `rolled-back` notification carries `operator: true` and does not count towards error limiting)."""
        version, to_version, error = msg.version, msg.to_version, dewy_log.scrub(msg.error)
        operator = bool(msg.operator)
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
        if not operator:
            # A crash loop undid the operator's last switch (a deploy would have ended the hold): what the hold kept
            # serves no more and the version gone back to serves again (the one that crash-looped is refused).
            self.end_hold("the switch to %s by dewy rollback was undone (%s)" % (version, error))
        if refuse:
            self.fleet_refuse(version, "rolled back: %s" % (error or "crash-looped after deploy"))
        hooks.run_after_rollback(self.config, self.notifier, to_version, self.current_dir, version, log)

    def on_lost(self, msg: protocol.Lost) -> None:
        """The release the master ran is gone from disk: forget it, so the next poll deploys afresh."""
        log.error("the master lost %s (%s): deploying again", msg.version, msg.error)
        self.set_current(None, None)
        self.lost_version = msg.version  # what the redeploy replaces, for its audit line and notice
        self.poll_now("lost")

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        """Wait for the config, then poll and deploy until stopped."""
        while self.config is None:
            msg = self.next_message(None)
            if not isinstance(msg, protocol.Config):
                log.warning("expected the config first, got %r", msg.type)
            if isinstance(msg, (protocol.Config, protocol.Stop)):
                self.handle(msg)
        while True:
            msg = self.next_message(max(0.0, self.next_poll - time.monotonic()))
            if msg is not None:
                self.handle(msg)
                continue
            if time.monotonic() >= self.next_poll:
                self.poll()
                self.next_poll = time.monotonic() + self.poll_delay() * random.uniform(1 - JITTER, 1 + JITTER)

    def poll_now(self, cause: str) -> None:
        """Make the next poll due now; cause (deploy-now, trigger, config, lost) is stated while it runs."""
        self.next_poll = time.monotonic()
        self.poll_cause = cause

    def state(self, state: str, reason: str, text: str | None = None, target: str | None = None,
              held: str | None = None, send: bool = True) -> None:
        """State what this poller does now (dewy/poller/states.py); a change is sent to the master as `state`
        unless send is False (a `status` carrying it follows at once)."""
        if self.stated.set(state, reason, dewy_log.scrub(text), target, held, self.poll_request) and send:
            self.send("state", **self.stated.fields())

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
        self.state(states.POLLING, self.poll_cause)
        self.poll_cause = "interval"
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
            self.state(states.IDLE, "up-to-date", send=False)
            self.report_status(None)
            return
        if self.kept_back(release.version):  # paused, or a rollback's hold
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

    def end_hold(self, why: str) -> None:
        """Tell the master (which owns paused.json) that the rollback's hold there is over; a plain pause stays."""
        paused = pause.read(self.config.workdir)
        if paused and paused.get("newer_than"):
            self.send("end-hold", newer_than=paused["newer_than"], why=why)

    def kept_back(self, version: str, send: bool = False) -> bool:
        """Whether `dewy pause` or a rollback's hold keeps version from deploying now (stated as `paused` /
        `held`): the one place that decides it, before a deploy and again before its switch."""
        paused = pause.read(self.config.workdir)
        if not pause.holds(paused, version, self.registry.calver):
            return False
        if paused.get("newer_than"):
            self.state(states.HELD, "held", paused.get("reason"), held=version, send=send)
        else:
            self.state(states.PAUSED, "paused", paused.get("reason"), held=version, send=send)
        log.debug("deploys are %s: not deploying %s", self.stated.state, version)
        return True

    def deploy(self, release) -> None:
        """Deploy release now (the registry's newest, or an older one), and report the outcome."""
        # A deploy is due: report the poll now (it may wait long for the master), keeping the error of
        # a previous failed attempt until this attempt's outcome replaces it, so the status does not flap.
        self.state(states.DOWNLOADING, "download", target=release.version, send=False)
        self.report_status(self.repeats.pending(release.version))
        deploy = Deploy(release, self.backends(), (self.current_version or self.lost_version, self.current_dir),
                        self.ask_master, self.refused, self.repeats, tell_master=self.send,
                        stage=lambda state, reason: self.state(state, reason, target=release.version),
                        kept_back=lambda version: self.kept_back(version, send=True))
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
            self.state(states.IDLE, "deployed", target=release.version, send=False)
            # kept_back() let it through: a version newer than the rollback's hold serves, so the hold is over.
            self.end_hold("%s deployed" % release.version)
            self.set_current(release.version, deploy.release_dir)
            self.lost_version = None
            self.metrics.serving(release.version)
        elif deploy.outcome == "paused":
            # Stopped before its switch: no failure, nothing refused, no backoff; resumed, the next poll deploys it.
            if not self.kept_back(release.version):  # the master said paused; the file is gone again already
                self.state(states.PAUSED, "paused", error, held=release.version, send=False)
            self.report_status(None)
            return
        elif deploy.outcome == "unfinished":
            # A copy into the registry still under way: not the release's fault nor a failure; no backoff.
            self.state(states.IDLE, "unfinished", error, target=release.version, send=False)
        elif self.refused.holds(release.version):
            self.state(states.IDLE, "refused", error, target=release.version, send=False)
            self.fleet_refuse(release.version, error)  # refused here: nobody else deploys it
        else:
            self.state(states.IDLE, "deploy-failed", error, target=release.version, send=False)
            # Retried (a full disk, a failing hook, a download cut short): not at every poll, but backing
            # off like a failing registry, so a host does not download the same artifact again and again.
            self.deploy_failures = max(self.unexpected_failures,
                                       self.repeats.count if self.repeats.pending(release.version) else 1)
        self.report_status(error)

    def report_status(self, error: str | None) -> None:
        """Send `status` to the master."""
        error = dewy_log.scrub(error)  # the master shows it in the status file and `dewy status`
        self.last_error = error
        # When the next poll is due (about: the jitter is drawn later), for `dewy status`.
        next_poll = utc_iso(time.time() + self.poll_delay()) if self.config else None
        # With rollouts: where this host stands in the rollout of a newer version ("1.3.0: wave 2 of 3 waits...").
        waiting = self.beat_state if self.beat_state and self.beat_state[0] == fleet.WAITING else None
        self.send("status", last_poll=self.last_poll, latest_version=self.latest_version, last_error=error,
                  next_poll=next_poll, calver=getattr(self.registry, "calver", None),
                  rollout="%s: %s" % (waiting[1], waiting[2]) if waiting else None,
                  **dict(self.stated.fields(), poll_request=self.poll_request))


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
