"""The generation lifecycle: which app generation starts, serves and retires, and when.

Decisions only. Processes are started and signalled through a Host (host.py: apps.AppHost in the
master, a fake in the unit tests), time is read from the clock it is given, and its deadlines are
one table, timers(), run by timers.next_deadline / timers.fire. Its only own I/O is the `current`
symlink (switch(); links.py points it back) and the manifest. Its parts: the HTTP checks
(health.py), going back (rollback.py: crash loops and `dewy rollback`).

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
from . import timers
from .generation import EXITED, RETIRING, SERVING, STARTING, Generation, release_lacks_program
from .health import HealthChecks
from .host import CommandError, Host  # noqa: F401 — CommandError re-exported: spawn() raises it
from .links import Links
from .reloads import ReloadCheck
from .rollback import PROBATION, PROBATION_DEATHS, Probation, Rollbacks  # noqa: F401 — re-exported

log = logging.getLogger("dewy.master")

STABLE_AFTER = 10.0  # a generation up this long resets the respawn backoff
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
# A handover looks this often whether the generation it replaces still holds a listener (doubling to the max).
HANDOVER_FIRST, HANDOVER_MAX = 0.02, 0.5


class Lifecycle:
    """Generations of the app for one master: starting, serving, retiring; deploys, restarts, stops."""

    def __init__(self, cfg, host: Host, clock=time.monotonic):
        self.cfg = cfg
        self.host = host
        self.clock = clock
        self.health, self.links, self.rollbacks = HealthChecks(self), Links(self), Rollbacks(self)
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
        self.reloads = ReloadCheck(self)  # whether the last reload's app command starts (reloads.py)

    @property
    def current_link(self) -> str:
        return os.path.join(self.cfg.workdir, "current")

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
                table.append((g.probe_at, lambda now, g=g: self.health.start_probe(g, now)))
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
        """The earliest deadline in the table, or None (timers.next_deadline, as the Arbiter's loop)."""
        return timers.next_deadline(self.timers())

    def fire(self, now: float) -> None:
        """Act on every deadline that has passed by now (timers.fire, as the Arbiter's loop)."""
        timers.fire(self.timers(), now)

    def ready_timeout(self, gen: Generation) -> None:
        """The starting generation's readiness deadline passed: ready (delay) or failed (notify)."""
        if gen is not self.starting:
            return
        gen.ready_deadline = None
        if gen.ready_kind == "delay":
            self.on_ready(gen)
        elif getattr(self.cfg, "rollback", "on") == "off":
            self.rollbacks.keep_unready(gen)
        elif gen.ready_kind == "http":
            self.on_start_failed(gen, "GET %s did not answer 2xx within %gs (last: %s)" % (
                gen.ready_path, gen.ready_timeout, gen.probe_detail or "no answer"))
        else:
            self.on_start_failed(gen, "did not send READY=1 within %gs" % gen.ready_timeout)

    # ------------------------------------------------------------- retiring
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
        self.links.undo_interrupted_deploy((previous_status or {}).get("deploying"))
        release = current.read_link(self.current_link)
        if release is None and os.path.islink(self.current_link):
            self.set_problem("current points at %s, which does not exist; waiting for the poller to deploy "
                             "again" % os.readlink(self.current_link))
        self.current_release, self.current_version = release, self.links.version_of(release)
        self.rollbacks.carry_on((previous_status or {}).get("probation"), release)  # a restart during probation
        if self.cfg.mode == "assets":
            self.links.point_dir_at(release)  # `dir` removed, or configured anew, while dewy was down
            return
        if release is None:
            log.info("no release deployed yet; waiting for the poller")
            return
        self.spawn("initial", self.current_version, release)

    # ----------------------------------------------------------------- spawning
    def spawn(self, reason: str, version: str | None, release_dir: str | None) -> Generation | None:
        """Start a new generation from release_dir (the `starting` one); None if it could not be started."""
        self.generation_count += 1
        gen = Generation(self.generation_count, 0, version, release_dir, reason, started_at=self.clock())
        # Pinned per generation: a reload must not change the rules for one already starting.
        gen.ready_kind, gen.ready_timeout = self.cfg.ready.kind, self.cfg.ready.seconds
        gen.ready_path, gen.config_epoch = self.cfg.ready.path, self.reloads.epoch
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
        self.health.arm_health(gen)
        log.info("%s is ready [%s] after %.2fs", gen.label(), gen.reason, now - gen.started_at, extra=gen.log_fields())
        old, self.serving, self.starting = self.serving, gen, None
        if old:
            self.retire(old)
        previous_version, previous_dir = self.current_version, self.current_release
        self.current_version, self.current_release = gen.version, gen.release_dir
        self.set_problem(None)
        self.reloads.ready(gen)
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
            self.rollbacks.finish_switch_back(gen)  # both write the status (changed())
        elif gen.reason == "deploy":
            # rollback = off: a release kept though it failed its readiness check reports that as its error
            self.finish_deploy(gen.version, gen.release_dir, True, getattr(gen, "kept_unready", None), gen.number)
        self.after_start()

    def on_start_failed(self, gen: Generation, why: str) -> None:
        """The starting generation died or never became ready: drop it, keep what serves."""
        self.starting = None
        log.error("%s failed to start [%s]: %s", gen.label(), gen.reason, why, extra=gen.log_fields())
        self.discard(gen)
        self.host.ready()  # dewy itself is up; it keeps retrying the app
        if self.serving is not None and self.serving.probe_at is None and not self.serving.probing:
            self.health.arm_health(self.serving)  # its health restart did not get through: keep watching it
        not_its_fault, retry = self.reloads.start_failed(gen, why)
        if gen.reason == "deploy":
            self.restore_current()
            self.finish_deploy(gen.version, gen.release_dir, False, "%s failed: %s%s" % (
                "version " + (gen.version or "?"), why, not_its_fault), gen.number, retry=retry)
        elif gen.rollback_from is not None:
            self.restore_current()  # `current` back on what still serves
            error = "rollback to %s failed: %s; %s keeps serving" % (gen.version, why, self.current_version)
            log.error("%s", error)
            self.last_deploy = {"version": gen.version, "ok": False, "error": error, "time": utc_iso(),
                                "generation": gen.number, "rolled_back_from": gen.rollback_from}
        elif not self.serving and not self.stopping:
            if not self.rollbacks.count_crash(gen, "%s failed to start [%s]: %s" % (gen.label(), gen.reason, why)):
                self.schedule_respawn()
        self.reloads.show()
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
        why = self.host.explain(gen.pid, describe_status(gen.exit_status))
        if not self.rollbacks.count_crash(gen, "%s exited unexpectedly (%s)" % (gen.label(), why)) and not self.starting:
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
        elif gen is self.handover_from:
            # Gone: look at once, from the timer table (after the reaping: a check may run an upgrade).
            self.handover_at = self.clock()
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
        release = self.links.current_or_lost()
        if release is None:
            return
        if self.spawn("respawn", self.current_version, release) is None:
            self.schedule_respawn()

    # ------------------------------------------------------------- commands
    def restart(self, reason: str = "restart") -> None:
        """Start a new generation of the current release; the old one retires once it is ready (reason: why,
        restart or health)."""
        if self.cfg.mode == "assets" or self.stopping:
            return
        if self.settling:
            self.restart_pending = True
            return
        release = self.links.current_or_lost()
        if release is None:
            if self.current_release is None and not self.problem:
                log.info("nothing to restart: no release deployed yet")
            return
        self.respawn_at = None
        if self.spawn(reason, self.links.version_of(release) or self.current_version, release) is None \
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
            self.links.point_dir_at(release_dir)
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
        self.links.point_current_at(before)
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
        if self.starting:
            return "deploying" if self.starting.reason == "deploy" else "starting"
        if self.handover and self.handover.reason == "deploy":
            return "deploying"  # until the old generation takes no new connection; a restart is `running` meanwhile
        if self.handover and self.handover.rollback_from is not None:
            return "starting"
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
                self.health.arm_health(gen)
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
