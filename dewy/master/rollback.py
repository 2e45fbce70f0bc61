"""Going back: the crash-loop rollback (a release on probation died PROBATION_DEATHS times within PROBATION of
its deploy: back to the release before it) and the operator's switch-back (`dewy rollback`: a switch to
an earlier unpacked release, like a deploy, then a hold on newer versions).
"""

import logging
import os
import time

from .. import current
from ..clock import utc_iso
from .generation import Generation

log = logging.getLogger("dewy.master")

PROBATION = 60.0  # a release that dies this soon after its deploy counts towards a rollback
PROBATION_DEATHS = 3  # deaths within PROBATION that roll a release back


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

    def to_status(self, now: float) -> dict:
        """This probation for the status file, `until` as wall-clock seconds: a restarted master carries it on."""
        return {"version": self.version, "release_dir": self.release_dir, "previous_version": self.previous_version,
                "previous_dir": self.previous_dir, "deaths": self.deaths, "until": time.time() + (self.until - now)}

    @classmethod
    def from_status(cls, d, release_dir: str | None, now: float) -> "Probation | None":
        """The probation a stopped (or killed) master left in its status, when it still holds: the same release in
        `current` and its time not up; else None."""
        try:
            left = float(d["until"]) - time.time()
            if d["release_dir"] != release_dir or left <= 0 or not d.get("previous_dir"):
                return None
            return cls(d.get("version"), d["release_dir"], d.get("previous_version"), d["previous_dir"],
                       now + min(left, PROBATION), int(d.get("deaths") or 0))
        except (KeyError, TypeError, ValueError):
            return None


class Rollbacks:
    """The crash-loop rollback and the operator's switch-back of one Lifecycle (lc)."""

    def __init__(self, lc):
        self.lc = lc

    def carry_on(self, status_probation, release_dir) -> None:
        """At a cold start: the probation the last master left in its status, when it still holds (the same release
        in `current`, its time not up), so a restart during probation keeps the rollback."""
        p = self.lc.probation = Probation.from_status(status_probation, release_dir, self.lc.clock())
        if p is not None:
            log.info("version %s is still on probation (%d death(s); back to %s after %d within %.0fs of its deploy)",
                     p.version, p.deaths, p.previous_version, PROBATION_DEATHS, PROBATION)

    def count_crash(self, gen: Generation, ended: str | None = None) -> bool:
        """Count a death of the release on probation; True when that started a rollback. ended: how gen ended, for
        `dewy status` (last error) until a generation is ready again (the lifecycle logged it already)."""
        if ended:
            self.lc.problem = ended
        p = self.lc.probation
        if not p or gen.release_dir != p.release_dir or self.lc.clock() > p.until:
            return False
        p.deaths += 1
        log.warning("version %s died %d time(s) within %.0fs of its deploy", p.version, p.deaths, PROBATION)
        if p.deaths < PROBATION_DEATHS:
            return False
        return self.go_back(p)

    def go_back(self, p: Probation) -> bool:
        """Go back to the release that served before p was deployed, and tell the poller.

        False when that release's directory is gone: the poller is told to refuse p's version and to
        deploy afresh (`lost`), and meanwhile p's release keeps being respawned with backoff.
        """
        self.lc.probation = None
        if not os.path.isdir(p.previous_dir):
            error = ("version %s crashed %d times after its deploy, and the release dir of %s to roll back to "
                     "is gone; asking the poller to deploy it again" % (p.version, p.deaths, p.previous_version))
            self.lc.set_problem(error)
            self.lc.last_deploy = {"version": p.version, "ok": False, "error": error, "time": utc_iso(),
                                "rolled_back_to": None}
            self.lc.host.tell_poller("rollback", version=p.version, to_version=p.previous_version, error=error)
            self.lc.host.tell_poller("lost", version=p.previous_version, release_dir=p.previous_dir, error=error)
            return False
        self.lc.crash_streak = 0
        error = "version %s crashed %d times after its deploy; rolled back to %s" % (
            p.version, p.deaths, p.previous_version)
        log.error("%s", error)
        self.lc.current_version, self.lc.current_release = p.previous_version, p.previous_dir
        self.lc.last_deploy = {"version": p.version, "ok": False, "error": error, "time": utc_iso(),
                            "rolled_back_to": p.previous_version}
        self.lc.switch(p.previous_version, p.previous_dir, back_to=None, trusted=True)
        self.lc.host.tell_poller("rollback", version=p.version, to_version=p.previous_version, error=error)
        if self.lc.starting is None and self.lc.spawn("rollback", p.previous_version, p.previous_dir) is None:
            self.lc.schedule_respawn()
        return True

    def switch_back(self, version: str | None, release_dir: str) -> str | None:
        """`dewy rollback`: switch to an unpacked earlier release the way a deploy does (new generation first,
        the serving one retires once it is ready); why not, or None once it started."""
        if self.lc.stopping:
            return "dewy is stopping"
        if self.lc.settling is not None:
            return "generation %d is starting [%s]; try again once it is ready" % (
                self.lc.settling.number, self.lc.settling.reason)
        if release_dir == self.lc.current_release:
            return "version %s already serves (%s)" % (version, release_dir)
        if not os.path.isdir(release_dir):
            return "release dir %s is gone" % release_dir
        from_version = self.lc.current_version
        log.warning("rolling back from %s to %s (dewy rollback)", from_version or "nothing", version)
        self.lc.probation = None
        if self.lc.cfg.mode == "assets":
            current.switch_link(self.lc.current_link, release_dir)
            self.lc.current_version, self.lc.current_release = version, release_dir
            self.lc.links.point_dir_at(release_dir)
            gen = Generation(0, 0, version, release_dir, "rollback", started_at=self.lc.clock())
            gen.rollback_from = from_version
            self.finish_switch_back(gen)
            return None
        problem = self.lc.switch(version, release_dir, back_to=self.lc.current_release)
        if problem:
            return problem
        self.lc.respawn_at = None
        gen = self.lc.spawn("rollback", version, release_dir)
        if gen is None:
            self.lc.restore_current()
            return "cannot start %s: %s" % (version, self.lc.spawn_error)
        gen.rollback_from = from_version
        return None

    def finish_switch_back(self, gen: Generation) -> None:
        """A `dewy rollback` generation serves: record it and tell the poller (it refuses the version rolled
        back from until a newer one is published, and audits the rollback)."""
        self.lc.deploying = None
        error = "rolled back from %s to %s by the operator (dewy rollback)" % (gen.rollback_from, gen.version)
        self.lc.last_deploy = {"version": gen.version, "ok": True, "error": None, "time": utc_iso(),
                            "generation": gen.number or None, "rolled_back_from": gen.rollback_from}
        if gen.rollback_from and gen.rollback_from != gen.version:
            self.lc.host.switched_back(gen.rollback_from, gen.version)
            # operator: the poller no longer refuses to_version (chosen by name) and refuses `version` only when
            # it is the newer one (going forward leaves an older version that did nothing wrong).
            self.lc.host.tell_poller("rollback", version=gen.rollback_from, to_version=gen.version, error=error,
                                  operator=True)
        self.lc.host.changed()

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
        self.lc.on_ready(gen)
