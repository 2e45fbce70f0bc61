"""What the poller tells about the registry and itself beside deploys: "dewy started" once per master, a
registry outage (logged and notified once, carried over to a restarted poller by .dewy/outage.json), and a
registry that answers with nothing deployable. A mixin of dewy.poller.worker.Poller.
"""

import logging
import os
import re
import time

from dewy import fleet
from dewy.clock import utc_iso
from dewy.log import redact, redact_text
from dewy.poller import states
from dewy.registry.base import NothingDeployable, NotYetPublished
from dewy.statefiles import StateFileError, read_state, write_json_atomic
from dewy.workdir import state_path

log = logging.getLogger("dewy.poller")

# How long a release may lack its artifact (CI still uploading) before that is worth a warning, and how often
# a lasting "nothing to deploy" is said again.
UPLOAD_GRACE = 10 * 60.0
REMIND_EVERY = 3600.0


class Outages:
    """announce_start(), resume_outage() / save_outage(), nothing_to_deploy(), registry_failed() /
    registry_reachable() for the Poller."""

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
                self.state(states.IDLE, "not-yet-published", text, send=False)
                self.report_status(None)
                return
            text += " (for %s)" % fleet.span(now - since)
            self.state(states.IDLE, "not-yet-published", text, send=False)
        else:
            text = "nothing to deploy: %s" % message
            self.state(states.IDLE, "nothing-deployable", text, send=False)
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
        self.state(states.IDLE, "registry-failed", error, send=False)
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
