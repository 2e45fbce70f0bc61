"""The generation lifecycle: which app generation starts, serves and retires, and when.

Decisions only. Processes are started and signalled through a Host (the master's I/O shell,
arbiter.py; a fake in the unit tests), time is read from the clock it is given, and every
deadline lives in ONE table, timers(), from which the loop takes both its timeout (next_deadline)
and what to do when one passes (fire). Its only own I/O is the `current` symlink and the manifest.

A deploy: `current` -> new release, spawn generation N+1, wait for readiness; ready -> N retires, and
once N no longer holds a listener (the handover) N+1 serves: the deploy is reported; not ready -> N+1
is stopped, `current` goes back. A serving generation that dies is restarted with
backoff; a release that dies PROBATION_DEATHS times within PROBATION of its deploy is rolled back.
"""

import logging
import os
import signal
import time

from .. import backoff, current, procgroup  # dewy.current, not dewy.releases: no tarfile/zipfile here
from ..clock import utc_iso
from .generation import EXITED, RETIRING, SERVING, STARTING, Generation, dir_problem, release_lacks_program
from .httpprobe import OK, OTHER

log = logging.getLogger("dewy.master")

PROBATION = 60.0  # a release that dies this soon after its deploy counts towards a rollback
PROBATION_DEATHS = 3  # deaths within PROBATION that roll a release back
STABLE_AFTER = 10.0  # a generation up this long resets the respawn backoff
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
PROBE_RETRY = 0.2  # ready = http: a failed GET is asked again this much later
PROBE_TIMEOUT = 5.0  # ready = http: the longest one GET may take (within the readiness timeout)
OTHER_RETRY = 0.02  # a GET accepted by another generation: ask again this soon
# A handover looks this often whether the generation it replaces still holds a listener (doubling to the max).
HANDOVER_FIRST, HANDOVER_MAX = 0.005, 0.5


class CommandError(Exception):
    """The app command cannot be executed at all: a configuration error, not the release's fault."""


class Host:
    """What the lifecycle asks of the process around it. The Arbiter implements it; tests fake it."""

    def spawn(self, gen: Generation) -> int:
        """Start the app for gen (listeners as fds 3.., gen's release); its pid. CommandError, OSError."""
        raise NotImplementedError

    def signal(self, pid: int, sig: int) -> bool:
        """Signal the process group pid; False when nothing is left of it."""
        raise NotImplementedError

    def group_alive(self, pid: int) -> bool:
        """Whether any process of the group pid is left."""
        raise NotImplementedError

    def tell_poller(self, type_: str, **fields) -> None:
        """Send a message to the poller (dropped when there is none)."""

    def ready(self) -> None:
        """The app serves (or dewy itself is up and keeps retrying it): tell systemd."""

    def changed(self) -> None:
        """Something the status file shows changed: rewrite it."""

    def record(self) -> None:
        """Write the status file now and durably (fsync'd file and directory): `current` moves next, and a
        master killed after that must find the record. OSError when it cannot be written."""

    def upgrade(self) -> None:
        """Run the in-place upgrade that waited for a starting generation to settle."""

    def listening(self, pid: int) -> bool:
        """Whether any process of the group pid still holds one of the listening sockets (so may still take
        new connections); False once none does, or nothing is left of the group."""
        raise NotImplementedError

    def probe(self, gen: Generation, path: str, timeout: float) -> None:
        """Start GET path on the first TCP listener, counted only if gen's processes accept it; answer
        with Lifecycle.probe_done(gen, outcome, detail) (httpprobe.OK / FAILED / OTHER) later."""
        raise NotImplementedError

    def explain(self, pid: int, why: str) -> str:
        """why a generation failed, with what its process pid last wrote to stderr when the host has that."""
        return why

    def switched_back(self, from_version: str | None, to_version: str | None) -> None:
        """`dewy rollback` finished: from_version must not come back (until a newer one is published)."""


class Probation:
    """A freshly deployed release, watched for a crash loop, and where to go back to."""

    def __init__(self, version, release_dir, previous_version, previous_dir, until, deaths=0):
        self.version, self.release_dir = version, release_dir
        self.previous_version, self.previous_dir = previous_version, previous_dir
        self.until = until
        self.deaths = deaths

    def to_state(self, now: float) -> dict:
        """This probation for an in-place upgrade (monotonic time made relative); from_state reverses it."""
        return {"version": self.version, "release_dir": self.release_dir,
                "previous_version": self.previous_version, "previous_dir": self.previous_dir,
                "until_in": self.until - now, "deaths": self.deaths}

    @classmethod
    def from_state(cls, d: dict, now: float) -> "Probation":
        """Rebuild a probation handed over by the previous master image."""
        return cls(d["version"], d["release_dir"], d["previous_version"], d["previous_dir"],
                   now + d["until_in"], d["deaths"])


class Lifecycle:
    """Generations of the app for one master: starting, serving, retiring; deploys, restarts, stops."""

    def __init__(self, cfg, host: Host, clock=time.monotonic):
        self.cfg = cfg
        self.host = host
        self.clock = clock
        self.generation_count = 0
        self.starting: Generation | None = None
        # Ready, but the generation it replaces (handover_from) may still take new connections: what it brings
        # (a deploy, `dewy rollback`) is reported, and what waits for it to settle runs, only once that one
        # holds no listener any more (checked at handover_at).
        self.handover: Generation | None = None
        self.handover_from: Generation | None = None
        self.handover_at: float | None = None
        self.handover_delay = 0.0
        self.serving: Generation | None = None
        self.retiring: list = []
        self.current_version: str | None = None  # what serves (or served last): the poller's truth
        self.current_release: str | None = None
        self.deploying: dict | None = None  # {version, release_dir, previous_dir} while a deploy starts
        self.probation: Probation | None = None
        self.crash_streak = 0
        self.respawn_at: float | None = None
        self.respawn_delay = 0.0  # the backoff respawn_at was set with (the status shows it)
        self.pending_deploy = None  # a protocol.Deploy waiting for the starting generation to settle
        self.restart_pending = False
        self.upgrade_pending = False
        self.stopping = False
        self.stop_deadline: float | None = None
        self.problem: str | None = None  # what is wrong now that is not the poller's to say (status last_error)
        self.reported_lost: str | None = None  # the deleted release dir check_current() already reported
        self.spawn_error: str | None = None  # why the last spawn() returned None
        self.dir_trouble: str | None = None  # why `dir` (assets mode) could not be pointed at the release
        self.last_deploy: dict | None = None

    @property
    def current_link(self) -> str:
        return os.path.join(self.cfg.workdir, "current")

    def version_of(self, release_dir: str | None) -> str | None:
        """The version recorded for an unpacked release dir."""
        if not release_dir:
            return None
        return current.Manifest(self.cfg.workdir).version_of(release_dir)

    @property
    def settling(self) -> Generation | None:
        """The generation on its way in: starting, or ready while the one before it still listens."""
        return self.starting or self.handover

    def generations(self) -> list:
        """Every generation still tracked."""
        return [g for g in (self.starting, self.serving) if g] + self.retiring

    def find(self, pid: int) -> Generation | None:
        """The tracked generation whose leader is pid."""
        for gen in self.generations():
            if gen.pid == pid:
                return gen
        return None

    def all_gone(self) -> bool:
        """True once no generation is left (the stop may finish)."""
        return not self.generations()

    # ------------------------------------------------------------------ timers
    def timers(self) -> list:
        """Every pending deadline with what to do then: [(deadline, action(now))]. The one timer table."""
        table = []
        gen = self.starting
        if gen is not None and gen.ready_deadline is not None:
            table.append((gen.ready_deadline, lambda now, gen=gen: self.ready_timeout(gen)))
        for g in (self.starting, self.serving):
            if g is not None and g.probe_at is not None and not g.probing:
                table.append((g.probe_at, lambda now, g=g: self.start_probe(g, now)))
        for g in self.retiring:
            if g.kill_deadline is not None:
                table.append((g.kill_deadline, lambda now, g=g: self.kill_retiring(g)))
        if self.handover_at is not None:
            table.append((self.handover_at, lambda now: self.check_handover(now)))
        if self.respawn_at is not None:
            table.append((self.respawn_at, lambda now: self.respawn()))
        if self.stop_deadline is not None:
            table.append((self.stop_deadline, lambda now: self.kill_everything("graceful-timeout expired")))
        return table

    def next_deadline(self) -> float | None:
        """The earliest deadline in the table, or None."""
        deadlines = [d for d, _ in self.timers()]
        return min(deadlines) if deadlines else None

    def fire(self, now: float) -> None:
        """Act on every deadline that has passed by now."""
        for deadline, action in self.timers():
            if now >= deadline:
                action(now)

    def ready_timeout(self, gen: Generation) -> None:
        """The starting generation's readiness deadline passed: ready (delay) or failed (notify)."""
        if gen is not self.starting:
            return
        gen.ready_deadline = None
        if gen.ready_kind == "delay":
            self.on_ready(gen)
        elif getattr(self.cfg, "rollback", "on") == "off":
            self.keep_unready(gen)
        elif gen.ready_kind == "http":
            self.on_start_failed(gen, "GET %s did not answer 2xx within %gs (last: %s)" % (
                gen.ready_path, gen.ready_timeout, gen.probe_detail or "no answer"))
        else:
            self.on_start_failed(gen, "did not send READY=1 within %gs" % gen.ready_timeout)

    def keep_unready(self, gen: Generation) -> None:
        """rollback = off (Dewy's --no-rollback): the release that failed its readiness check serves anyway and
        the old generation retires; the deploy is answered ok with the failure as its error (logged, notified)."""
        if gen.ready_kind == "http":
            why = "GET %s did not answer 2xx or 3xx within %gs (last: %s)" % (
                gen.ready_path, gen.ready_timeout, gen.probe_detail or "no answer")
        else:
            why = "did not send READY=1 within %gs" % gen.ready_timeout
        gen.kept_unready = "version %s failed its readiness check: %s; kept (rollback = off)" % (gen.version, why)
        log.error("%s: %s", gen.label(), gen.kept_unready, extra=gen.log_fields())
        self.on_ready(gen)

    # ------------------------------------------------------------ HTTP checks
    def start_probe(self, gen: Generation, now: float) -> None:
        """Time to GET the readiness path (starting gen) or the health path (serving gen)."""
        gen.probe_at = None
        if gen is self.starting and gen.ready_kind == "http":
            left = (gen.ready_deadline or now) - now
            gen.probing = True
            self.host.probe(gen, gen.ready_path, max(0.05, min(PROBE_TIMEOUT, left)))
        elif gen is self.serving and self.cfg.health:
            if self.starting is not None:
                # A new generation is on its way (deploy, restart): check the one that serves after it.
                gen.probe_at = now + self.cfg.health_interval
                return
            gen.probing = True
            self.host.probe(gen, self.cfg.health, self.cfg.health_interval)

    def probe_done(self, gen: Generation, outcome: str, detail: str) -> None:
        """A GET of start_probe came back: ok / failed / other (accepted by another generation: ask again)."""
        gen.probing = False
        log.debug("%s: %s (%s)", gen.label(), detail, outcome, extra=gen.log_fields())  # `other`: ask again
        if self.stopping:
            return
        now = self.clock()
        if outcome == OTHER:
            if gen is self.starting or gen is self.serving:
                gen.probe_at = now + OTHER_RETRY
            if gen is self.starting and gen.ready_kind == "http":
                gen.probe_detail = detail  # a refusal then says the answers were another's, or unattributed
            return
        if gen is self.starting and gen.ready_kind == "http":
            gen.probe_detail = detail
            if outcome == OK:
                self.on_ready(gen)
            else:
                gen.probe_at = now + PROBE_RETRY
        elif gen is self.serving and self.cfg.health:
            if outcome == OK:
                if gen.health_failures:
                    log.info("%s is healthy again: %s", gen.label(), detail, extra=gen.log_fields())
                gen.health_failures = 0
            else:
                gen.health_failures += 1
                log.warning("health check %d/%d of %s failed: %s", gen.health_failures, self.cfg.health_failures,
                            gen.label(), detail, extra=gen.log_fields())
                if gen.health_failures >= self.cfg.health_failures:
                    self.unhealthy(gen, detail)
                    return
            gen.probe_at = now + self.cfg.health_interval

    def unhealthy(self, gen: Generation, detail: str) -> None:
        """The serving generation failed health-failures checks in a row: start a new one (it retires once the
        new one is ready); on probation this counts as a crash, and the third one rolls the release back."""
        gen.health_failures, gen.probe_at = 0, None
        self.set_problem("%s failed %d health checks in a row (%s); restarting it" % (
            gen.label(), self.cfg.health_failures, detail))
        if self.count_crash(gen):
            return
        self.restart(reason="health")
        self.host.changed()

    def arm_health(self, gen: Generation) -> None:
        """Schedule the first health check of a generation that now serves."""
        gen.health_failures = 0
        gen.probe_at = self.clock() + self.cfg.health_interval if self.cfg.health else None

    def kill_retiring(self, gen: Generation) -> None:
        """graceful-timeout passed for a retiring generation: KILL what is left of it."""
        gen.kill_deadline = None
        if self.host.signal(gen.pid, signal.SIGKILL):
            log.warning("%s still running %.0fs after the stop signal: killed", gen.label(),
                        self.cfg.graceful_timeout)

    # -------------------------------------------------------------- cold start
    def cold_start(self, previous_status: dict | None) -> None:
        """On a cold start, run the release `current` points at, unless a deploy of it was interrupted.

        previous_status is what the last master wrote: while a deploy waits for readiness it names the
        release being tried (`deploying`); if `current` still points there, that release never became
        ready (the master was killed meanwhile) and `current` goes back to the one before it.
        """
        self.undo_interrupted_deploy((previous_status or {}).get("deploying"))
        release = current.read_link(self.current_link)
        if release is None and os.path.islink(self.current_link):
            self.set_problem("current points at %s, which does not exist; waiting for the poller to deploy "
                             "again" % os.readlink(self.current_link))
        self.current_release, self.current_version = release, self.version_of(release)
        if self.cfg.mode == "assets":
            self.point_dir_at(release)  # `dir` removed, or configured anew, while dewy was down
            return
        if release is None:
            log.info("no release deployed yet; waiting for the poller")
            return
        self.spawn("initial", self.current_version, release)

    def undo_interrupted_deploy(self, deploying: dict | None) -> None:
        if not deploying or not deploying.get("release_dir"):
            return
        if current.read_link(self.current_link) != os.path.realpath(deploying["release_dir"]):
            return  # the link never moved (killed before), or moved back: it names what served
        before = deploying.get("previous_dir")
        log.warning("current points at %s (version %s), whose deploy was interrupted before it was ready; "
                    "going back to %s", deploying["release_dir"], deploying.get("version"), before or "nothing")
        self.point_current_at(before)

    def point_dir_at(self, release_dir: str | None) -> bool:
        """assets mode: point the `dir` symlink at release_dir, creating its parent directories; a real file or
        directory there is never replaced (the problem is logged and shown in the status). False when not done."""
        path = self.cfg.dir if self.cfg.mode == "assets" else ""
        if not path or not release_dir:
            return False
        problem = dir_problem(self.cfg)
        if problem is None:
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                if current.read_link(path) != os.path.realpath(release_dir):
                    current.switch_link(path, release_dir)
                    log.info("dir %s now points at %s", path, release_dir)
            except (OSError, current.ReleaseError) as exc:
                problem = "cannot point dir %s at %s: %s" % (path, release_dir, exc)
        if problem is None:
            if self.problem is not None and self.problem == self.dir_trouble:
                self.set_problem(None)  # what was in the way has been moved away
            self.dir_trouble = None
            return True
        self.dir_trouble = problem
        self.set_problem(problem)
        self.host.changed()
        return False

    def forget_dir(self, old_dir: str) -> None:
        """`dir` was configured elsewhere, or removed: remove the old symlink when it still points into our
        releases/ (only a symlink dewy made; anything else stays)."""
        if not old_dir or old_dir == self.cfg.dir or not os.path.islink(old_dir):
            return
        releases = os.path.join(os.path.realpath(self.cfg.workdir), "releases") + os.sep
        if not os.path.realpath(old_dir).startswith(releases):
            return
        try:
            os.unlink(old_dir)
            log.info("removed the old dir symlink %s (dir is now %s)", old_dir, self.cfg.dir or "not set")
        except OSError as exc:
            log.warning("cannot remove the old dir symlink %s: %s", old_dir, exc)

    def point_current_at(self, release_dir: str | None) -> None:
        """Switch `current` to release_dir; remove it when release_dir is None or gone."""
        if release_dir and os.path.isdir(release_dir):
            current.switch_link(self.current_link, release_dir)
            return
        if os.path.islink(self.current_link):
            os.unlink(self.current_link)

    # ----------------------------------------------------------------- spawning
    def spawn(self, reason: str, version: str | None, release_dir: str | None) -> Generation | None:
        """Start a new generation from release_dir (the `starting` one); None if it could not be started."""
        self.generation_count += 1
        gen = Generation(self.generation_count, 0, version, release_dir, reason, started_at=self.clock())
        # Pinned per generation: a reload must not change the rules for one already starting.
        gen.ready_kind, gen.ready_timeout = self.cfg.ready.kind, self.cfg.ready.seconds
        gen.ready_path = self.cfg.ready.path
        try:
            gen.pid = self.host.spawn(gen)
        except CommandError as exc:
            self.set_problem("%s (the `app` setting in %s)" % (exc, self.cfg.source))
            self.spawn_error = str(exc)
            return None
        except OSError as exc:
            self.spawn_error = "cannot start generation %d: %s" % (gen.number, exc)
            log.error("%s", self.spawn_error)
            return None
        gen.started_at = self.clock()
        gen.ready_deadline = gen.started_at + gen.ready_timeout
        if gen.ready_kind == "http":
            gen.probe_at = gen.started_at  # a connection waits in the listen queue until the app accepts it
        self.starting = gen
        log.info("started %s [%s], waiting for it to be ready (%s %gs)", gen.label(), reason,
                 gen.ready_kind, gen.ready_timeout, extra=gen.log_fields())
        # For the poller's metrics (dewy_app_restarts_total by reason): a cheap line on the pipe.
        self.host.tell_poller("spawned", reason=reason, version=version, generation=gen.number)
        self.host.changed()
        return gen

    def set_problem(self, problem: str | None) -> None:
        """Remember (and log) what is wrong on the master's side; None clears it."""
        if problem and problem != self.problem:
            log.error("%s", problem)
        self.problem = problem

    def notify_ready(self, pid: int | None, in_group) -> None:
        """READY=1 from pid: the starting generation is ready when pid is its leader or in its group."""
        gen = self.starting
        if gen is None or gen.ready_kind != "notify":
            return
        if pid == gen.pid or (pid and in_group(pid, gen.pid)):
            self.on_ready(gen)
        else:
            log.debug("ignored READY=1 from pid %s (not generation %d)", pid, gen.number)

    def on_ready(self, gen: Generation) -> None:
        """The starting generation is ready: it serves, the previous one retires."""
        now = self.clock()
        gen.state, gen.ready_at, gen.ready_deadline = SERVING, now, None
        self.arm_health(gen)
        log.info("%s is ready [%s] after %.2fs", gen.label(), gen.reason, now - gen.started_at, extra=gen.log_fields())
        old, self.serving, self.starting = self.serving, gen, None
        if old:
            self.retire(old)
        previous_version, previous_dir = self.current_version, self.current_release
        self.current_version, self.current_release = gen.version, gen.release_dir
        self.set_problem(None)
        if gen.rollback_from is not None or gen.reason == "deploy":
            # Ready is proof enough for a cold start: `current` stays on it whatever happens now.
            self.deploying = None
            if previous_dir and previous_dir != gen.release_dir and os.path.isdir(previous_dir) and (
                    getattr(self.cfg, "rollback", "on") != "off"):  # rollback = off: never goes back
                # Watched for a crash loop (a release the operator switched to as well): back to previous_dir.
                self.probation = Probation(gen.version, gen.release_dir, previous_version, previous_dir,
                                           now + PROBATION)
        self.handover, self.handover_from, self.handover_delay = gen, old, 0.0
        self.host.ready()
        self.host.changed()
        self.check_handover(now)

    def check_handover(self, now: float) -> None:
        """Does the generation the new one replaces still hold a listener? Then look again a little later
        (until its stop signal or the KILL after graceful-timeout took it away); else the new one serves:
        report the deploy or the rollback ("X serves" must mean no request goes to the old one any more) and
        run what waited for it to settle."""
        gen, old = self.handover, self.handover_from
        self.handover_at = None
        if gen is None:
            return
        if old is not None and not self.stopping and self.host.listening(old.pid):
            self.handover_delay = min(HANDOVER_MAX, self.handover_delay * 2 or HANDOVER_FIRST)
            self.handover_at = now + self.handover_delay
            return
        self.handover = self.handover_from = None
        if old is not None:
            log.info("%s takes no new connection any more: %s serves", old.label(), gen.label(),
                     extra=gen.log_fields())
        if gen.rollback_from is not None:
            self.finish_switch_back(gen)
        if gen.reason == "deploy":
            # rollback = off: a release kept though it failed its readiness check reports that as its error
            self.finish_deploy(gen.version, gen.release_dir, True, getattr(gen, "kept_unready", None), gen.number)
        self.host.changed()
        self.after_start()

    def on_start_failed(self, gen: Generation, why: str) -> None:
        """The starting generation died or never became ready: drop it, keep what serves."""
        self.starting = None
        log.error("%s failed to start [%s]: %s", gen.label(), gen.reason, why, extra=gen.log_fields())
        self.discard(gen)
        self.host.ready()  # dewy itself is up; it keeps retrying the app
        if self.serving is not None and self.serving.probe_at is None and not self.serving.probing:
            self.arm_health(self.serving)  # its health restart did not get through: keep watching it
        if gen.reason == "deploy":
            self.restore_current()
            self.finish_deploy(gen.version, gen.release_dir, False, "%s failed: %s" % (
                "version " + (gen.version or "?"), why), gen.number)
        elif gen.rollback_from is not None:
            self.restore_current()  # `current` back on what still serves
            error = "rollback to %s failed: %s; %s keeps serving" % (gen.version, why, self.current_version)
            log.error("%s", error)
            self.last_deploy = {"version": gen.version, "ok": False, "error": error, "time": utc_iso(),
                                "generation": gen.number, "rolled_back_from": gen.rollback_from}
        elif not self.serving and not self.stopping:
            if not self.count_crash(gen):
                self.schedule_respawn()
        self.host.changed()
        self.after_start()

    def on_serving_died(self, gen: Generation) -> None:
        """The serving generation exited by itself: restart it with backoff, or roll back."""
        self.serving = None
        log.error("%s exited unexpectedly (%s)", gen.label(), describe_status(gen.exit_status), extra=gen.log_fields())
        self.discard(gen)
        if self.stopping:
            return
        if gen.ready_at is not None and self.clock() - gen.ready_at >= STABLE_AFTER:
            self.crash_streak = 0
        if not self.count_crash(gen) and not self.starting:
            self.schedule_respawn()
        self.host.changed()

    def child_exited(self, pid: int, wstatus: int) -> bool:
        """A child was reaped: react if it was a generation's leader; False if it was not one of ours."""
        gen = self.find(pid)
        if gen is None:
            return False
        gen.exit_status = wstatus
        if gen.state == STARTING:
            self.on_start_failed(gen, self.host.explain(pid, describe_status(wstatus) + " before it was ready"))
        elif gen.state == SERVING:
            self.on_serving_died(gen)
        return True

    def sweep(self) -> bool:
        """Forget retiring generations of which nothing is left; True when one went."""
        left = []
        for gen in self.retiring:
            if not gen.alive and not self.host.group_alive(gen.pid):
                log.info("%s stopped (%s)", gen.label(), describe_status(gen.exit_status), extra=gen.log_fields())
                gen.state = EXITED
            else:
                left.append(gen)
        gone = len(left) != len(self.retiring)
        self.retiring = left
        return gone

    def discard(self, gen: Generation) -> None:
        """Stop tracking gen as live: stop it if it still runs, clean up what is left of its group."""
        if gen.alive:
            # Gracefully: a generation that never became ready may already hold accepted connections.
            self.retire(gen)
        elif self.host.group_alive(gen.pid):
            self.host.signal(gen.pid, signal.SIGKILL)
            gen.state, gen.kill_deadline = RETIRING, None
            self.retiring.append(gen)
        else:
            gen.state = EXITED

    def retire(self, gen: Generation) -> None:
        """Ask gen to stop (stop-signal), KILL it after graceful-timeout."""
        log.info("stopping %s (%s, KILL after %gs)", gen.label(), signal.Signals(self.cfg.stop_signal).name,
                 self.cfg.graceful_timeout)
        gen.state = RETIRING
        gen.kill_deadline = self.clock() + self.cfg.graceful_timeout
        self.host.signal(gen.pid, self.cfg.stop_signal)
        self.retiring.append(gen)

    # ------------------------------------------------------- crashes, rollback
    def count_crash(self, gen: Generation) -> bool:
        """Count a death of the release on probation; True when that started a rollback."""
        p = self.probation
        if not p or gen.release_dir != p.release_dir or self.clock() > p.until:
            return False
        p.deaths += 1
        log.warning("version %s died %d time(s) within %.0fs of its deploy", p.version, p.deaths, PROBATION)
        if p.deaths < PROBATION_DEATHS:
            return False
        return self.rollback(p)

    def rollback(self, p: Probation) -> bool:
        """Go back to the release that served before p was deployed, and tell the poller.

        False when that release's directory is gone: the poller is told to refuse p's version and to
        deploy afresh (`lost`), and meanwhile p's release keeps being respawned with backoff.
        """
        self.probation = None
        if not os.path.isdir(p.previous_dir):
            error = ("version %s crashed %d times after its deploy, and the release dir of %s to roll back to "
                     "is gone; asking the poller to deploy it again" % (p.version, p.deaths, p.previous_version))
            self.set_problem(error)
            self.last_deploy = {"version": p.version, "ok": False, "error": error, "time": utc_iso(),
                                "rolled_back_to": None}
            self.host.tell_poller("rollback", version=p.version, to_version=p.previous_version, error=error)
            self.host.tell_poller("lost", version=p.previous_version, release_dir=p.previous_dir, error=error)
            return False
        self.crash_streak = 0
        error = "version %s crashed %d times after its deploy; rolled back to %s" % (
            p.version, p.deaths, p.previous_version)
        log.error("%s", error)
        self.current_version, self.current_release = p.previous_version, p.previous_dir
        self.last_deploy = {"version": p.version, "ok": False, "error": error, "time": utc_iso(),
                            "rolled_back_to": p.previous_version}
        self.switch(p.previous_version, p.previous_dir, back_to=None, trusted=True)
        self.host.tell_poller("rollback", version=p.version, to_version=p.previous_version, error=error)
        if self.starting is None and self.spawn("rollback", p.previous_version, p.previous_dir) is None:
            self.schedule_respawn()
        return True

    def switch_back(self, version: str | None, release_dir: str) -> str | None:
        """`dewy rollback`: switch to an unpacked earlier release the way a deploy does (new generation first,
        the serving one retires once it is ready); why not, or None once it started."""
        if self.stopping:
            return "dewy is stopping"
        if self.settling is not None:
            return "generation %d is starting [%s]; try again once it is ready" % (
                self.settling.number, self.settling.reason)
        if release_dir == self.current_release:
            return "version %s already serves (%s)" % (version, release_dir)
        if not os.path.isdir(release_dir):
            return "release dir %s is gone" % release_dir
        from_version = self.current_version
        log.warning("rolling back from %s to %s (dewy rollback)", from_version or "nothing", version)
        self.probation = None
        if self.cfg.mode == "assets":
            current.switch_link(self.current_link, release_dir)
            self.current_version, self.current_release = version, release_dir
            self.point_dir_at(release_dir)
            gen = Generation(0, 0, version, release_dir, "rollback", started_at=self.clock())
            gen.rollback_from = from_version
            self.finish_switch_back(gen)
            return None
        problem = self.switch(version, release_dir, back_to=self.current_release)
        if problem:
            return problem
        self.respawn_at = None
        gen = self.spawn("rollback", version, release_dir)
        if gen is None:
            self.restore_current()
            return "cannot start %s: %s" % (version, self.spawn_error)
        gen.rollback_from = from_version
        return None

    def finish_switch_back(self, gen: Generation) -> None:
        """A `dewy rollback` generation serves: record it and tell the poller (it refuses the version rolled
        back from until a newer one is published, and audits the rollback)."""
        self.deploying = None
        error = "rolled back from %s to %s by the operator (dewy rollback)" % (gen.rollback_from, gen.version)
        self.last_deploy = {"version": gen.version, "ok": True, "error": None, "time": utc_iso(),
                            "generation": gen.number or None, "rolled_back_from": gen.rollback_from}
        if gen.rollback_from and gen.rollback_from != gen.version:
            self.host.switched_back(gen.rollback_from, gen.version)
            # operator: the poller no longer refuses to_version (chosen by name) and refuses `version` only when
            # it is the newer one (going forward leaves an older version that did nothing wrong).
            self.host.tell_poller("rollback", version=gen.rollback_from, to_version=gen.version, error=error,
                                  operator=True)
        self.host.changed()

    def schedule_respawn(self) -> None:
        """Start the current release again after a delay that grows with consecutive crashes."""
        if self.current_release is None:
            return
        delay = backoff.delay(BACKOFF_FIRST, self.crash_streak, BACKOFF_MAX)
        self.crash_streak += 1
        self.respawn_at, self.respawn_delay = self.clock() + delay, delay
        log.info("restarting %s in %.1fs", self.current_version or "the app", delay)

    def respawn(self) -> None:
        """The respawn delay passed: start the current release again (if it still exists)."""
        self.respawn_at = None
        if self.serving or self.starting or self.stopping or self.cfg.mode == "assets":
            return
        release = self.current_or_lost()
        if release is None:
            return
        if self.spawn("respawn", self.current_version, release) is None:
            self.schedule_respawn()

    def check_current(self) -> None:
        """Notice, while the app still serves, that its release directory was deleted (called at every poll),
        so the poller redeploys it now rather than at the next crash or restart."""
        if self.starting or self.stopping or self.current_release is None or self.cfg.mode == "assets":
            return
        if self.current_release == self.reported_lost or os.path.isdir(self.current_release):
            return
        self.reported_lost = self.current_release
        self.current_or_lost()

    def current_or_lost(self) -> str | None:
        """The release `current` points at; None (and the poller told to deploy again) when it is gone."""
        release = current.read_link(self.current_link)
        if release is not None or self.current_release is None:
            return release
        lost_version, lost_dir = self.current_version, self.current_release
        error = ("release directory %s of version %s is gone (deleted?); asking the poller to deploy again"
                 % (lost_dir, lost_version))
        self.set_problem(error)
        if not self.serving:
            # Nothing runs it any more: the poller must not take it for running.
            self.current_version = self.current_release = None
        self.host.tell_poller("lost", version=lost_version, release_dir=lost_dir, error=error)
        self.host.changed()
        return None

    # ------------------------------------------------------------- commands
    def restart(self, reason: str = "restart") -> None:
        """Start a new generation of the current release; the old one retires once it is ready (reason: why,
        restart or health)."""
        if self.cfg.mode == "assets" or self.stopping:
            return
        if self.settling:
            self.restart_pending = True
            return
        release = self.current_or_lost()
        if release is None:
            if self.current_release is None and not self.problem:
                log.info("nothing to restart: no release deployed yet")
            return
        self.respawn_at = None
        if self.spawn(reason, self.version_of(release) or self.current_version, release) is None \
                and not self.serving:
            self.schedule_respawn()

    def request_upgrade(self) -> bool:
        """True when the in-place upgrade may run now; otherwise it runs once the starting generation settles."""
        if self.settling:
            log.info("upgrade deferred until generation %d settles", self.settling.number)
            self.upgrade_pending = True
            return False
        return True

    def stop(self, graceful: bool) -> None:
        """Stop every generation: the stop signal, KILL after graceful-timeout (graceful) or KILL now."""
        if not self.stopping:
            self.stopping = True
            self.respawn_at = None
            self.check_handover(self.clock())  # it served: report it before everything goes
            self.pending_deploy, self.restart_pending, self.upgrade_pending = None, False, False
            if self.starting is not None and self.starting.reason == "deploy":
                # The deploy never finished: `current` must name what last served, for the next start.
                log.info("deploy of %s abandoned by the stop", self.starting.version)
                self.restore_current()
        if not graceful:
            self.kill_everything("fast stop")
            return
        self.stop_deadline = self.clock() + self.cfg.graceful_timeout
        for gen in [g for g in (self.starting, self.serving) if g]:
            self.retire(gen)
        self.starting = self.serving = None
        self.host.changed()

    def kill_everything(self, why: str) -> None:
        """SIGKILL every generation's process group."""
        self.stop_deadline = None
        for gen in self.generations():
            if self.host.signal(gen.pid, signal.SIGKILL):
                log.warning("killed %s (%s)", gen.label(), why)
            gen.state, gen.kill_deadline = RETIRING, None
        self.retiring = self.generations()
        self.starting = self.serving = None

    def after_start(self) -> None:
        """Run what waited for the starting generation to settle: an upgrade, a deploy, a restart."""
        if self.settling or self.stopping:
            return
        if self.upgrade_pending:
            self.upgrade_pending = False
            self.host.upgrade()
        if self.pending_deploy:
            msg, self.pending_deploy = self.pending_deploy, None
            self.start_deploy(msg)
        elif self.restart_pending:
            self.restart_pending = False
            self.restart()

    # --------------------------------------------------------------- deploys
    def deploy(self, msg) -> None:
        """The poller has unpacked a release: switch to it (now, or once the starting one settles)."""
        if self.stopping:
            return
        if self.settling:
            self.pending_deploy = msg
            return
        self.start_deploy(msg)

    def start_deploy(self, msg) -> None:
        """Switch to the release of a protocol.Deploy message and start it."""
        version, release_dir = msg.version, msg.release_dir
        if not release_dir or not os.path.isdir(release_dir):
            # Gone between unpacking and now: not the release's fault, the poller may try again.
            self.finish_deploy(version, release_dir, False, "release dir %r does not exist" % release_dir,
                               None, retry=True)
            return
        log.info("deploying version %s from %s", version, release_dir)
        before = current.read_link(self.current_link)
        if self.cfg.mode == "assets":
            current.switch_link(self.current_link, release_dir)
            self.current_version, self.current_release = version, release_dir
            self.point_dir_at(release_dir)
            self.finish_deploy(version, release_dir, True, None, None)
            return
        problem = self.switch(version, release_dir, back_to=before)
        if problem:
            self.finish_deploy(version, release_dir, False, problem, None, retry=True)  # this host's disk
            return
        self.respawn_at = None
        if self.spawn("deploy", version, release_dir) is None:
            self.restore_current()
            lacks = release_lacks_program(self.cfg.app, self.cfg.workdir, release_dir, before)
            if lacks:
                # The release before had the program and this one has not: the release is bad (refused).
                self.set_problem(None)
                self.finish_deploy(version, release_dir, False, "%s: the release has no executable %s (the one "
                                   "before had it)" % (self.spawn_error, lacks), None)
                return
            # A command that cannot run (or a fork that failed) is not the release's fault: no refusal.
            self.finish_deploy(version, release_dir, False, self.spawn_error, None, retry=True)

    def switch(self, version: str | None, release_dir: str, back_to: str | None, trusted: bool = False):
        """Point `current` at release_dir to start it there: the one way a deploy, a crash-loop rollback and
        `dewy rollback` move it. Why not (the record could not be written), or None once switched.

        The status file names the switch (`deploying`: {version, release_dir, previous_dir=back_to}) durably
        BEFORE the link moves: a master killed (OOM killer, power loss) while the new release starts finds
        `current` on a release that never became ready, and the record, and goes back to back_to. trusted:
        release_dir served before (a crash-loop rollback): no record to undo it, but the status is written
        all the same, so that the file and the link never disagree about what was last decided."""
        self.deploying = None if trusted else {
            "version": version, "release_dir": release_dir, "previous_dir": back_to}
        try:
            self.host.record()
        except OSError as exc:
            if not trusted:
                self.deploying = None
                return "cannot record the switch to %s in the status file (so it could not be undone after a " \
                       "crash), not switching: %s" % (version, exc)
            log.warning("cannot record the switch back to %s in the status file: %s", version, exc)
        current.switch_link(self.current_link, release_dir)
        return None

    def restore_current(self) -> None:
        """Point `current` back where it was before the deploy that did not finish."""
        deploying, self.deploying = self.deploying, None
        before = deploying.get("previous_dir") if deploying else None
        self.point_current_at(before)
        if not self.serving and not self.stopping and before:
            self.schedule_respawn()

    def finish_deploy(self, version, release_dir, ok: bool, error, generation, retry: bool = False) -> None:
        """Record the outcome of a deploy and answer the poller (retry: not the release's fault)."""
        self.last_deploy = {"version": version, "ok": ok, "error": error, "time": utc_iso(),
                            "generation": generation}
        if ok:
            # Assets mode runs no app: no generation to name.
            log.info("deployed version %s%s", version, " (generation %s)" % generation if generation else "",
                     extra={"version": version, **({"generation": generation} if generation else {})})
        else:
            log.error("deploy of version %s failed: %s", version, error, extra={"version": version})
        fields = {"retry": True} if retry else {}
        self.host.tell_poller("deployed", version=version, ok=ok, error=error, generation=generation,
                              release_dir=release_dir, **fields)
        self.host.changed()

    # ---------------------------------------------------------------- status
    def state_name(self) -> str:
        """The status file's `state`."""
        if self.stopping:
            return "stopping"
        if self.settling:
            return "deploying" if self.settling.reason == "deploy" else "starting"
        if self.serving or (self.cfg.mode == "assets" and self.current_release):
            return "running"
        return "waiting"

    def status_line(self) -> str:
        """One line for systemd's STATUS= and the process title."""
        if self.cfg.mode == "assets":
            return "assets %s" % (self.current_version or "(none yet)")
        gen = self.serving
        if gen is None:
            return "waiting for a release" if self.current_release is None else "app not running"
        return "app %s gen %d" % ("v" + gen.version if gen.version else "(unknown version)", gen.number)

    def status_fields(self) -> dict:
        """The lifecycle's keys of the status file."""
        serving, starting = self.serving, self.starting
        return {
            "version": self.current_version, "release_dir": self.current_release,
            "generation": serving.number if serving else None,
            "app_pids": [serving.pid] if serving else [],
            "starting_pid": starting.pid if starting else None,
            "retiring_pids": [g.pid for g in self.retiring],
            "deploying": self.deploying, "last_deploy": self.last_deploy,
            # A restart waiting out its backoff: the how-many-th in a row, the delay, when it is due (wall clock).
            "respawn": {"attempt": self.crash_streak, "delay": self.respawn_delay,
                        "at": utc_iso(time.time() + (self.respawn_at - self.clock()), millis=True)}
            if self.respawn_at is not None else None,
            # Wall-clock time the serving generation became ready (its ready_at is monotonic).
            "serving_since": utc_iso(time.time() - (self.clock() - serving.ready_at))
            if serving and serving.ready_at is not None else None,
        }

    # --------------------------------------------------------------- upgrade
    def to_state(self) -> dict:
        """What the next master image needs to carry on (adopt() reverses it)."""
        now = self.clock()
        return {"generations": [g.to_state(now) for g in self.generations()],
                "generation_count": self.generation_count,
                "current": [self.current_version, self.current_release],
                "probation": self.probation.to_state(now) if self.probation else None,
                "deploying": self.deploying, "crash_streak": self.crash_streak,
                "problem": self.problem, "last_deploy": self.last_deploy}

    def adopt(self, state) -> None:
        """Carry on from the previous master image's lifecycle (an upgrade.UpgradeState)."""
        now = self.clock()
        self.generation_count = state.generation_count
        self.current_version, self.current_release = state.current
        for d in state.generations:
            gen = Generation.from_state(d, now)
            if gen.state == SERVING and self.serving is None:
                self.serving = gen
                self.arm_health(gen)
            elif gen.state == STARTING and self.starting is None:
                self.starting = gen
                if gen.ready_kind == "http":
                    gen.probe_at = now
            else:
                gen.state = RETIRING
                self.retiring.append(gen)
        if state.probation:
            self.probation = Probation.from_state(state.probation, now)
        self.deploying, self.crash_streak = state.deploying, state.crash_streak
        self.problem, self.last_deploy = state.problem, state.last_deploy


def describe_status(wstatus: int | None) -> str:
    """How a generation ended, in words; `still running` before its leader is reaped."""
    return "still running" if wstatus is None else procgroup.describe_status(wstatus)
