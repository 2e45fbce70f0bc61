"""The status board: what `dewy status` shows (.dewy/status.json, the control socket's `status`).

It keeps what the poller last said (`status` replaces it all; `progress` the download under way) and
assembles the status file from it, the lifecycle's fields and the master's own (pids, listeners,
errors, the pause); the Arbiter (the `shell`) decides when it is written: coalesced once per pass of
its loop, at once and durably before `current` moves (Lifecycle.switch).
"""

import logging
import os
import time

from .. import __version__
from .. import statefiles as status
from ..clock import utc_iso

log = logging.getLogger("dewy.master")


class StatusBoard:
    """The status file's data and its writing, for one master (its shell, the Arbiter)."""

    def __init__(self, shell):
        self.shell = shell
        # What the poller last said: `status` replaces it all (download: the progress of the one under way).
        # calver: how the registry's versions compare (its `calver=` format; None: semver), for `dewy rollback` and
        # `dewy deploy-now`; the poller, which has the registry, says it (the master loads no URL parsing).
        self.info = {"last_poll": None, "latest_version": None, "last_error": None, "poll_request": None,
                     "next_poll": None, "download": None, "rollout": None, "calver": None}
        self.polls = 0  # `status` messages from pollers
        self.started_at = utc_iso()
        self.dirty = False  # changed since the status file was last written
        self.title = None  # the process title last set

    def on_status(self, msg) -> None:
        """The poller's `status` (a protocol.Status) after a poll."""
        fields = msg.to_dict()
        for key in self.info:
            self.info[key] = fields.get(key)  # `download` (not in a status) ends with the poll
        self.polls += 1

    def on_progress(self, msg) -> None:
        """The poller's `progress` (a protocol.Progress) of the download under way."""
        self.info["download"] = msg.to_dict()

    def write(self, state: str | None = None, durable: bool = False) -> None:
        """Write the status file and the process title (durable: fsync'd, and an OSError is raised)."""
        self.dirty = False
        shell = self.shell
        if shell.sentinel is not None:
            shell.sentinel.update(shell.sentinel_groups())
        line = shell.lifecycle.status_line()
        if line != self.title:
            self.title = line
            try:
                from setproctitle import setproctitle
                setproctitle("dewy-master [%s]" % line)
            except ImportError:
                pass
        try:
            status.write(shell.cfg.workdir, self.data(state), durable=durable)
        except OSError as exc:
            if durable:
                self.dirty = True
                raise
            log.warning("cannot write the status file: %s", exc)

    def data(self, state: str | None = None) -> dict:
        """What the status file says (and the control socket's `status` answers)."""
        shell = self.shell
        lc = shell.lifecycle
        return {
            "pid": os.getpid(), "mode": shell.cfg.mode, "state": state or lc.state_name(),
            **lifecycle_fields(lc),
            "poller_pid": shell.poller.pid, "sentinel_pid": shell.sentinel.pid if shell.sentinel else None,
            "started_at": self.started_at, "updated_at": utc_iso(),
            "dewy_version": __version__, "listen": [l.spec for l in shell.listeners],
            **self.info,
            # The master's own problem (a lost release, an app command that cannot run) outranks the poller's.
            "last_error": lc.problem or self.info["last_error"],
            "errors": shell.errors.count, "paused": shell.commands.paused, "polls": self.polls,
            "poller": shell.poller.stated,  # what the poller says it does (dewy/poller/states.py)
        }


def lifecycle_fields(lc) -> dict:
    """The status file's keys about the app generations and releases, from a Lifecycle."""
    serving, starting = lc.serving, lc.starting
    return {
        "version": lc.current_version, "release_dir": lc.current_release,
        "generation": serving.number if serving else None,
        "app_pids": [serving.pid] if serving else [],
        "starting_pid": starting.pid if starting else None,
        "retiring_pids": [g.pid for g in lc.retiring],
        "deploying": lc.deploying, "last_deploy": lc.last_deploy,
        # A release watched for a crash loop (and where to go back to): a restarted master carries it on.
        "probation": lc.probation.to_status(lc.clock())
        if lc.probation and lc.clock() <= lc.probation.until else None,
        # A restart waiting out its backoff: the how-many-th in a row, the delay, when it is due (wall clock).
        "respawn": {"attempt": lc.crash_streak, "delay": lc.respawn_delay,
                    "at": utc_iso(time.time() + (lc.respawn_at - lc.clock()), millis=True)}
        if lc.respawn_at is not None else None,
        # Wall-clock time the serving generation became ready (its ready_at is monotonic).
        "serving_since": utc_iso(time.time() - (lc.clock() - serving.ready_at))
        if serving and serving.ready_at is not None else None,
    }
