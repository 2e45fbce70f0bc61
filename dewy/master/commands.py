"""The operator's commands: signals and the control socket's requests, each a `handle_<name>()`.

HUP reload, USR1 restart, USR2 upgrade, TERM/INT stop, QUIT stop-fast, and over .dewy/control.sock
status, rollback (which release to go back to), pause, resume (the hold after a rollback), deploy-now.
Decisions only: what they change goes through the Arbiter (the `shell`: its lifecycle, poller handle,
listeners, status board); tests drive a real Arbiter in-process, without processes
(tests/unit/test_commands.py).
"""

import logging
import os
import signal
import time

from .. import current, pause, procgroup, workdir
from .. import statefiles as status
from . import sockets
from .configview import ConfigLoadError
from .generation import startup_problem

log = logging.getLogger("dewy.master")

RELOAD_FAILED = "reload failed, keeping the running configuration"
STOP_MARGIN = 15.0  # seconds systemd waits beyond graceful-timeout for the master to reap everything and exit
# What the control socket (.dewy/control.sock) may ask, with the arguments each takes.
CONTROL_COMMANDS = {"status": (), "restart": (), "reload": (), "rollback": ("to",), "pause": ("reason",),
                    "resume": (), "deploy-now": ()}
# Test-only: a command name whose handler raises, to prove the guard (never set it in production).
FAIL_COMMAND_ENV = "DEWY_TEST_FAIL_COMMAND"


class ReloadError(Exception):
    """A re-read configuration cannot be applied to the running master."""


class CommandRefused(Exception):
    """An operator command that cannot be done now; str() says why (the control socket's answer)."""


class Commands:
    """The operator's commands on one master (its shell, the Arbiter), and the pause / hold they keep."""

    def __init__(self, shell):
        self.shell = shell
        self.paused = pause.read(shell.cfg.workdir)  # {reason, since} while deploys are paused (survives restarts)
        self.poll_requests = 0  # `poll-now` ids sent; the poller echoes the last one it read in `status`
        self.fail_command = os.environ.pop(FAIL_COMMAND_ENV, None)
        self.reload_failure: str | None = None  # why the last reload failed (the status's last_error), until one works

    @property
    def cfg(self):
        return self.shell.cfg

    @property
    def lifecycle(self):
        return self.shell.lifecycle

    @property
    def poller(self):
        return self.shell.poller

    def command(self, name: str, **args):
        """Run an operator command by name (reload, restart, upgrade, stop, stop-fast, and the control socket's
        status, rollback, pause, resume, deploy-now); what its handler returns (the control socket's answer)."""
        if name == self.fail_command:
            raise RuntimeError("injected failure in the %s command (%s, test only)" % (name, FAIL_COMMAND_ENV))
        return getattr(self, "handle_" + name.replace("-", "_"))(**args)

    def control_command(self, request: dict) -> dict:
        """Run one control-socket request: {"ok": true, ...} or {"ok": false, "error": why}."""
        name, args = request["command"], request.get("args") or {}
        if name not in CONTROL_COMMANDS:
            return {"ok": False,
                    "error": "unknown command %r (known: %s)" % (name, ", ".join(sorted(CONTROL_COMMANDS)))}
        unknown = sorted(set(args) - set(CONTROL_COMMANDS[name]))
        if unknown:
            return {"ok": False, "error": "%s takes no argument %s" % (name, ", ".join(unknown))}
        log.info("control socket: %s %s", name, " ".join("%s=%r" % kv for kv in sorted(args.items())))
        try:
            answer = self.command(name, **args) or {}
        except CommandRefused as exc:
            log.warning("control socket: %s refused: %s", name, exc)
            return {"ok": False, "error": str(exc)}
        except OSError as exc:  # a full disk, a read-only .dewy/: the client hears why (exit 1), no traceback
            log.error("control socket: %s failed: %s", name, exc)
            return {"ok": False, "error": "%s failed: %s" % (name, exc)}
        self.shell.changed()
        return dict(answer, ok=True)

    def handle_status(self) -> dict:
        """The status, as the status file will show it."""
        return {"status": self.shell.board.data()}

    def handle_pause(self, reason: str | None = None) -> dict:
        """Deploy no new version until resumed (the app keeps running and restarting as usual). Pausing what is
        paused already keeps its start time, and its reason unless a new one is given; a rollback's hold
        becomes a plain pause."""
        reason = reason if isinstance(reason, str) and reason else None
        was = self.paused if self.paused and not self.paused.get("newer_than") else None
        if was:
            reason = reason or was.get("reason")
        self.paused = pause.write(self.cfg.workdir, reason, since=was.get("since") if was else None)
        log.warning("deploys paused%s%s", " (already since %s)" % was.get("since") if was else "",
                    ": %s" % reason if reason else "")
        return {"paused": self.paused}

    def handle_resume(self) -> dict:
        """Deploy new versions again, starting with a poll now."""
        was = pause.clear(self.cfg.workdir)
        self.paused = None
        if was:
            log.info("deploys resumed")
            self.poller.send("poll-now")
        return {"resumed": was}

    def handle_deploy_now(self) -> dict:
        """Make the poller poll now; `poll_request` in the answer: statuses echoing it come from polls after it."""
        if self.paused and not self.paused.get("newer_than"):
            raise CommandRefused("deploys are paused (%s); `dewy resume` first" % (
                self.paused.get("reason") or "no reason given"))
        if self.poller.channel is None or self.lifecycle.stopping:
            raise CommandRefused("the poller is not running right now (it is being restarted); try again")
        self.poll_requests += 1
        self.poller.send("poll-now", id=self.poll_requests)
        return {"poll_request": self.poll_requests, "version": self.lifecycle.current_version}

    def handle_rollback(self, to: str | None = None) -> dict:
        """Switch back to the previous (or the named, still unpacked) release with a zero-downtime switch;
        the poller then refuses the version rolled back from until a newer one is published."""
        version, release_dir = self.rollback_target(to if isinstance(to, str) and to else None)
        from_version = self.lifecycle.current_version
        problem = self.lifecycle.rollbacks.switch_back(version, release_dir)
        if problem:
            raise CommandRefused(problem)
        return {"from": from_version, "to": version, "release_dir": release_dir}

    def rollback_target(self, to: str | None) -> tuple:
        """(version, release dir) to roll back to: the newest unpacked release of version `to`, or the newest one
        older than what serves with another version; CommandRefused when there is none."""
        try:
            entries = current.Manifest(self.cfg.workdir).entries()
        except ValueError as exc:  # current.StateFileError: an unreadable manifest is no "nothing unpacked"
            raise CommandRefused(str(exc)) from None
        base = os.path.join(self.cfg.workdir, "releases")
        order = current.history_order(entries)  # deploy order (not the names: the clock may have stepped back)
        names = sorted((n for n in entries if os.path.isdir(os.path.join(base, n))), key=order)
        now = os.path.basename(self.lifecycle.current_release or "")
        if to:
            want = to[1:] if to.startswith("v") else to
            found = [n for n in names if entries[n].get("version") == want]
            if not found:
                raise CommandRefused("version %s is not unpacked in %s (unpacked: %s)" % (
                    want, base, ", ".join(sorted({entries[n].get("version") or "?" for n in names})) or "none"))
            name = found[-1]
        else:
            older = [n for n in names if (not now or order(n) < order(now))
                     and entries[n].get("version") != self.lifecycle.current_version]
            # A refused version (it crash-looped, or failed to start) is skipped: back to the last good one.
            try:
                refused = refused_versions(self.cfg.workdir)
            except status.StateFileError as exc:
                raise CommandRefused("%s; cannot tell which earlier release is refused (fix it, or name one with "
                                     "--to)" % exc) from None
            good = [n for n in older if entries[n].get("version") not in refused]
            if not good:
                skipped = sorted({entries[n].get("version") or "?" for n in older})
                raise CommandRefused("no earlier release is unpacked in %s to roll back to%s" % (base, (
                    " but refused %s (%s; see .dewy/refused.json, or name one with --to)" % (
                        ", ".join(skipped), "; ".join("%s: %s" % (v, refused[v]) for v in skipped)))
                    if skipped else ""))
            if good[-1] != older[-1]:
                log.info("dewy rollback skips refused %s", ", ".join(sorted(
                    {entries[n].get("version") for n in older[older.index(good[-1]) + 1:]})))
            name = good[-1]
        return entries[name].get("version"), os.path.join(base, name)

    def handle_reload(self) -> None:
        """Re-read the configuration and gracefully restart the app (and bind .dewy/control.sock again when its
        file was deleted or replaced: commands reach this master again after a HUP)."""
        self.shell.check_control()
        try:
            new = self.shell.reload_config()
        except ConfigLoadError as exc:
            # Refused before anything changed: no RELOADING=1 ... READY=1 pair, which would tell systemd the
            # reload was done (`systemctl reload` checks the file first: this is a file that went bad since).
            self.failed_reload(exc)
            self.shell.systemd.send(STATUS=self.reload_failure)
            return
        self.shell.systemd.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        try:
            self.apply_config(new)
        except (sockets.ListenError, ReloadError) as exc:
            self.failed_reload(exc)
        else:
            if self.reload_failure is not None and self.lifecycle.problem == self.reload_failure:
                self.lifecycle.set_problem(None)  # the failure is over (a later problem of another kind stays)
                self.shell.changed()
            self.reload_failure = None
        self.shell.systemd.send(READY=1, STATUS=self.lifecycle.status_line())

    def failed_reload(self, exc) -> None:
        """Logged and shown in `dewy status` (last error) until a reload succeeds."""
        self.reload_failure = "%s: %s" % (RELOAD_FAILED, exc)
        self.lifecycle.set_problem(self.reload_failure)
        self.shell.changed()

    def apply_config(self, new) -> None:
        """Switch to a re-read configuration: re-bind changed ports, tell the poller, restart the app."""
        for key in ("mode", "workdir", "user", "group"):
            if getattr(new, key) != getattr(self.cfg, key):
                raise ReloadError("%s: %s cannot change on reload; restart dewy" % (new.source, key))
        problem = startup_problem(new)
        if problem:
            raise ReloadError(problem)
        listeners = sockets.bind_all(new.port, new.backlog, reuse={l.spec: l for l in self.shell.listeners})
        dropped = [l for l in self.shell.listeners if l not in listeners]
        old_dir = self.cfg.dir
        self.shell.listeners, self.shell.cfg = listeners, new
        self.lifecycle.cfg = new
        for listener in dropped:
            listener.close()
        self.shell.setup_logging()
        log.info("configuration reloaded from %s", new.source)
        if new.mode == "assets" and (not new.dir or self.lifecycle.links.point_dir_at(self.lifecycle.current_release)):
            # `dir` moved or removed: the old link must not keep an old release.
            self.lifecycle.links.forget_dir(old_dir)
        self.poller.send("reload", config=new.to_json(), current=self.shell.current_info())
        self.lifecycle.reloads.reloaded()
        self.lifecycle.restart()

    def handle_restart(self) -> None:
        """Gracefully restart the app (a new generation of the same release)."""
        self.lifecycle.restart()

    def handle_upgrade(self) -> None:
        """Upgrade dewy-master in place: same PID, same sockets, the app keeps running."""
        if self.lifecycle.request_upgrade():
            self.shell.upgrade()

    def handle_stop(self) -> None:
        """Graceful stop: the app gets its stop signal; wait for it up to graceful-timeout."""
        self.begin_stop(graceful=True)

    def handle_stop_fast(self) -> None:
        """Fast stop: kill the app and the poller now."""
        self.begin_stop(graceful=False)

    def begin_stop(self, graceful: bool) -> None:
        """Stop the app (gracefully: its stop signal, KILL after graceful-timeout; else KILL now) and the poller."""
        if not self.lifecycle.stopping:
            # EXTEND_TIMEOUT_USEC: a graceful-timeout longer than the unit's TimeoutStopSec must not be cut short.
            extend = int((self.cfg.graceful_timeout + STOP_MARGIN) * 1e6)
            self.shell.systemd.send(STOPPING=1, EXTEND_TIMEOUT_USEC=extend)
            self.poller.stop(reason="graceful stop (SIGTERM/SIGINT)" if graceful else "fast stop (SIGQUIT)")
        self.lifecycle.stop(graceful)
        if not graceful:
            self.poller.kill()
            for pid in self.shell.orphans:
                procgroup.signal_leftover(pid, signal.SIGKILL)
        self.shell.changed()

    def switched_back(self, from_version, to_version) -> None:
        """After `dewy rollback`: hold deploys until a version newer than from_version, to_version and what an
        earlier hold waited for is published (so that the poller, which deploys the newest version it does not
        refuse, keeps to_version, also when `--to` went forward to a newer one); a pause stays. Which of the two
        is newer is the poller's to compare (semver is not loaded here): the hold names both."""
        if self.paused and not self.paused.get("newer_than"):
            return
        if from_version:
            earlier = [self.paused.get("newer_than"), *(self.paused.get("also_newer_than") or ())] \
                if self.paused else []
            self.paused = pause.write(self.cfg.workdir, "switched from %s to %s by dewy rollback; only a version "
                                      "newer than both deploys" % (from_version, to_version),
                                      newer_than=from_version, also_newer_than=[to_version, *earlier])

    def end_hold(self, newer_than, why) -> None:
        """The poller says the rollback's hold is over (it owns that decision: a newer version deployed, or a crash
        loop undid the operator's switch); the master owns the file. A hold other than the one it names (written
        meanwhile), or a plain pause, stays."""
        if self.paused and self.paused.get("newer_than") and self.paused.get("newer_than") == newer_than:
            log.info("the hold after the rollback from %s ends: %s", newer_than, why)
            pause.clear(self.cfg.workdir)
            self.paused = None
            self.shell.changed()


def refused_versions(where: str) -> dict:
    """{version: why} of the workdir where's `.dewy/refused.json` (the poller's; {} when there is none);
    status.StateFileError when it is there but unreadable (never taken for "nothing refused")."""
    data = status.read_state(workdir.state_path(where, "refused.json"), "refused-versions file")
    versions = data.get("versions") if isinstance(data, dict) else None
    if not isinstance(versions, dict):
        return {}
    return {v: (e.get("reason") if isinstance(e, dict) else None) or "refused" for v, e in versions.items()}
