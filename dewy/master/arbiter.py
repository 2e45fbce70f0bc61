"""dewy-master: owns the sockets and signals, runs app generations and the poller worker.

Single-threaded on purpose (fork stays safe): signal handlers only queue the signal and wake
the loop; the loop reaps children, dispatches signals to handle_<name>(), reads the poller
and notify sockets, and fires timers.
"""

import collections
import logging
import os
import selectors
import signal
import socket
import sys
import time

from .. import __version__, procgroup, releases, status
from ..protocol import Channel, ProtocolError
from . import process, sockets, upgrade
from .generation import EXITED, RETIRING, SERVING, STARTING, Generation, resolve_argv
from .sdnotify import NotifyListener, SystemdNotifier, notify_socket_path

log = logging.getLogger("dewy.master")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_LISTEN = 3

PROBATION = 60.0  # a release that dies this soon after its deploy counts towards a rollback
PROBATION_DEATHS = 3  # deaths within PROBATION that roll a release back
STABLE_AFTER = 10.0  # a generation up this long resets the respawn backoff
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
SWEEP_INTERVAL = 1.0  # safety net: re-check retiring process groups at least this often

SIGNAMES = {getattr(signal, "SIG" + n): n.lower() for n in ("HUP", "USR1", "USR2", "TERM", "INT", "QUIT")}


def _now() -> float:
    return time.monotonic()


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ReloadError(Exception):
    """A re-read configuration cannot be applied to the running master."""


class Probation:
    """A freshly deployed release, watched for a crash loop, and where to go back to."""

    def __init__(self, version, release_dir, previous_version, previous_dir, until):
        self.version, self.release_dir = version, release_dir
        self.previous_version, self.previous_dir = previous_version, previous_dir
        self.until = until
        self.deaths = 0

    def to_state(self) -> dict:
        """This probation for an in-place upgrade (monotonic time made relative)."""
        return {"version": self.version, "release_dir": self.release_dir,
                "previous_version": self.previous_version, "previous_dir": self.previous_dir,
                "until_in": self.until - _now(), "deaths": self.deaths}

    @classmethod
    def from_state(cls, d: dict) -> "Probation":
        """Rebuild a probation handed over by the previous master image."""
        p = cls(d["version"], d["release_dir"], d["previous_version"], d["previous_dir"],
                _now() + d["until_in"])
        p.deaths = d["deaths"]
        return p


class Arbiter:
    """The master process: one instance per dewy, run() until stopped."""

    def __init__(self, cfg, reload_config):
        self.cfg = cfg
        self.reload_config = reload_config
        self.sig_queue = collections.deque()
        self.selector = selectors.DefaultSelector()
        self.systemd = SystemdNotifier.from_environment()
        self.listeners = []
        self.notify_listener = None
        self.generation_count = 0
        self.starting: Generation | None = None
        self.serving: Generation | None = None
        self.retiring: list = []
        self.orphans = {}  # pid -> KILL deadline: processes of ours that belong to no generation
        self.current_version: str | None = None
        self.current_release: str | None = None
        self.probation: Probation | None = None
        self.crash_streak = 0
        self.respawn_at: float | None = None
        self.pending_deploy = None
        self.restart_pending = False
        self.upgrade_pending = False
        self.stopping = False
        self.stop_deadline: float | None = None
        self.poller_pid: int | None = None
        self.poller: Channel | None = None
        self.poller_failures = 0
        self.poller_started_at = 0.0
        self.poller_respawn_at: float | None = None
        self.sent_ready = False
        self.watchdog_at: float | None = None
        self.started_at = _utc()
        self.info = {"last_poll": None, "latest_version": None, "last_error": None, "last_deploy": None}

    # ----------------------------------------------------------------- paths
    @property
    def state_dir(self) -> str:
        return status.state_dir(self.cfg.workdir)

    @property
    def current_link(self) -> str:
        return os.path.join(self.cfg.workdir, "current")

    # ----------------------------------------------------------------- start
    def start(self, handed_over: dict | None) -> None:
        """Bind sockets, install signals, adopt or start the app and the poller."""
        os.makedirs(self.cfg.workdir, exist_ok=True)
        process.become_subreaper()
        self.init_signals()
        if handed_over:
            self.resume(handed_over)
        else:
            self.listeners = sockets.bind_all(self.cfg.port, self.cfg.backlog)
            self.notify_listener = NotifyListener(notify_socket_path(self.state_dir))
            self.start_from_current()
        self.selector.register(self.notify_listener, selectors.EVENT_READ, self.on_notify)
        if self.systemd.watchdog_interval:
            self.watchdog_at = _now()
        self.spawn_poller()
        if self.cfg.mode == "assets" or self.serving or not self.starting:
            # Nothing to wait for (assets, an adopted app, or no release yet): systemd may go on.
            self.tell_systemd_ready()
        log.info("dewy-master %s started (pid %d, mode %s, listening on %s)", __version__, os.getpid(),
                 self.cfg.mode, ", ".join(l.spec for l in self.listeners) or "nothing")
        self.update_status()

    def init_signals(self) -> None:
        """Queue signals from handlers and wake the loop through a pipe."""
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self.on_wakeup)
        for sig in SIGNAMES:
            signal.signal(sig, self.queue_signal)
        # A handler (not SIG_DFL) so that SIGCHLD writes to the wake-up pipe.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def queue_signal(self, signum, frame) -> None:
        """Signal handler: remember the signal, nothing else (the loop does the work)."""
        if len(self.sig_queue) < 5:
            self.sig_queue.append(signum)

    def start_from_current(self) -> None:
        """On a cold start, run the release `current` points at, if there is one."""
        if self.cfg.mode != "server":
            self.current_release = releases.read_link(self.current_link)
            self.current_version = self.version_of(self.current_release)
            return
        release = releases.read_link(self.current_link)
        if release is None:
            log.info("no release deployed yet; waiting for the poller")
            return
        self.current_release, self.current_version = release, self.version_of(release)
        self.spawn("initial", self.current_version, release)

    def version_of(self, release_dir: str | None) -> str | None:
        """The version recorded for an unpacked release dir."""
        if not release_dir:
            return None
        return releases.Manifest(self.cfg.workdir).version_of(release_dir)

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        """The main loop; returns the exit code once stopped."""
        while True:
            self.reap()
            while self.sig_queue:
                name = SIGNAMES[self.sig_queue.popleft()]
                log.info("received SIG%s", name.upper())
                getattr(self, "handle_" + name)()
            if self.stopping and self.all_gone():
                break
            self.run_timers()
            for key, _ in self.selector.select(self.next_timeout()):
                key.data()
        return self.shutdown()

    def on_wakeup(self) -> None:
        """Drain the wake-up pipe (the signals themselves are in sig_queue)."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def next_timeout(self) -> float:
        deadlines = [self.respawn_at, self.poller_respawn_at, self.stop_deadline, self.watchdog_at]
        if self.starting:
            deadlines.append(self.starting.ready_deadline)
        deadlines += [g.kill_deadline for g in self.retiring]
        deadlines += list(self.orphans.values())
        pending = [d for d in deadlines if d is not None]
        timeout = min(pending) - _now() if pending else SWEEP_INTERVAL
        return max(0.0, min(timeout, SWEEP_INTERVAL))

    def run_timers(self) -> None:
        """Act on every deadline that has passed."""
        now = _now()
        gen = self.starting
        if gen and gen.ready_deadline is not None and now >= gen.ready_deadline:
            if gen.ready_kind == "delay":
                self.on_ready(gen)
            else:
                self.on_start_failed(gen, "did not send READY=1 within %gs" % gen.ready_timeout)
        for g in self.retiring:
            if g.kill_deadline is not None and now >= g.kill_deadline:
                if g.signal(signal.SIGKILL):
                    log.warning("%s still running %.0fs after the stop signal: killed", g.label(),
                                self.cfg.graceful_timeout)
                g.kill_deadline = None
        for pid, deadline in list(self.orphans.items()):
            if now >= deadline:
                procgroup.signal_group(pid, signal.SIGKILL)
                self.orphans[pid] = now + 3600  # killed; just wait to reap it
        if self.respawn_at is not None and now >= self.respawn_at:
            self.respawn_at = None
            self.respawn()
        if self.poller_respawn_at is not None and now >= self.poller_respawn_at:
            self.poller_respawn_at = None
            self.spawn_poller()
        if self.watchdog_at is not None and now >= self.watchdog_at:
            # The loop itself pings: a wedged master stops pinging and systemd restarts it.
            self.systemd.send(WATCHDOG=1)
            self.watchdog_at = now + self.systemd.watchdog_interval
        if self.stop_deadline is not None and now >= self.stop_deadline:
            self.stop_deadline = None
            self.kill_everything("graceful-timeout expired")

    # ----------------------------------------------------------- reaping
    def reap(self) -> None:
        """Collect every exited child (never leave a zombie) and react to who it was."""
        while True:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.on_child_exit(pid, wstatus)
        still_retiring = [g for g in self.retiring if not self.retired(g)]
        if len(still_retiring) != len(self.retiring):
            self.retiring = still_retiring
            self.update_status()

    def retired(self, gen) -> bool:
        if gen.finished():
            log.info("%s stopped (%s)", gen.label(), procgroup.describe_status(gen.exit_status))
            return True
        return False

    def on_child_exit(self, pid: int, wstatus: int) -> None:
        if pid == self.poller_pid:
            self.on_poller_exit(wstatus)
            return
        for gen in self.generations():
            if gen.pid == pid:
                gen.exit_status = wstatus
                if gen.state == STARTING:
                    self.on_start_failed(gen, procgroup.describe_status(wstatus) + " before it was ready")
                elif gen.state == SERVING:
                    self.on_serving_died(gen)
                return
        if self.orphans.pop(pid, None) is None:
            log.debug("reaped pid %d (%s)", pid, procgroup.describe_status(wstatus))

    def generations(self) -> list:
        """Every generation this master still tracks."""
        gens = [g for g in (self.starting, self.serving) if g]
        return gens + self.retiring

    def all_gone(self) -> bool:
        return not self.generations() and self.poller_pid is None and not self.orphans

    # ------------------------------------------------------- generations
    def spawn(self, reason: str, version: str | None, release_dir: str | None) -> Generation | None:
        """Start a new generation from release_dir (the `starting` one); None if it could not fork."""
        self.generation_count += 1
        env = self.app_environment(version, release_dir)
        argv = resolve_argv(self.cfg.app, self.cfg.workdir)
        try:
            gen = Generation.spawn(self.generation_count, argv, self.cfg.workdir, env, self.listeners,
                                   version, release_dir, reason)
        except OSError as exc:
            log.error("cannot start generation %d: %s", self.generation_count, exc)
            return None
        # Pinned per generation: a reload must not change the rules for one already starting.
        gen.ready_kind, gen.ready_timeout = self.cfg.ready.kind, self.cfg.ready.seconds
        gen.ready_deadline = _now() + gen.ready_timeout
        self.starting = gen
        log.info("started %s [%s], waiting for it to be ready (%s %gs)", gen.label(), reason,
                 self.cfg.ready.kind, self.cfg.ready.seconds)
        self.update_status()
        return gen

    def app_environment(self, version, release_dir) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LISTEN_", "SERVER_STARTER_")) and k != "NOTIFY_SOCKET"}
        env.update(sockets.app_environment(self.listeners))
        env["SERVER_STARTER_GENERATION"] = str(self.generation_count)
        env["DEWY_GENERATION"] = str(self.generation_count)
        env["DEWY_VERSION"] = version or ""
        env["DEWY_RELEASE_DIR"] = release_dir or ""
        if self.cfg.ready.kind == "notify":
            env["NOTIFY_SOCKET"] = self.notify_listener.path
        return env

    def on_notify(self) -> None:
        """READY=1 from the starting generation (or a process it started) makes it ready."""
        for pid, fields in self.notify_listener.receive():
            gen = self.starting
            if fields.get("READY") != "1" or gen is None or gen.ready_kind != "notify":
                continue
            if pid == gen.pid or self.descends_from(pid, gen.pid):
                self.on_ready(gen)
            else:
                log.debug("ignored READY=1 from pid %s (not generation %d)", pid, gen.number)

    @staticmethod
    def descends_from(pid, ancestor: int) -> bool:
        if not pid:
            return False
        try:
            return os.getpgid(pid) == ancestor  # every app process stays in its generation's group
        except OSError:
            return False

    def on_ready(self, gen: Generation) -> None:
        """The starting generation is ready: it serves, the previous one retires."""
        gen.state, gen.ready_at, gen.ready_deadline = SERVING, _now(), None
        log.info("%s is ready [%s] after %.2fs", gen.label(), gen.reason, gen.uptime())
        old, self.serving, self.starting = self.serving, gen, None
        if old:
            self.retire(old)
        previous_version, previous_dir = self.current_version, self.current_release
        self.current_version, self.current_release = gen.version, gen.release_dir
        if gen.reason == "deploy":
            if previous_dir and previous_dir != gen.release_dir and os.path.isdir(previous_dir):
                self.probation = Probation(gen.version, gen.release_dir, previous_version, previous_dir,
                                           _now() + PROBATION)
            self.finish_deploy(gen.version, gen.release_dir, True, None, gen.number)
        self.tell_systemd_ready()
        self.update_status()
        self.after_start()

    def on_start_failed(self, gen: Generation, why: str) -> None:
        """The starting generation died or never became ready: drop it, keep what serves."""
        self.starting = None
        log.error("%s failed to start [%s]: %s", gen.label(), gen.reason, why)
        self.discard(gen)
        if not self.sent_ready:
            self.tell_systemd_ready()  # dewy itself is up; it keeps retrying the app
        if gen.reason == "deploy":
            self.restore_current()
            self.finish_deploy(gen.version, gen.release_dir, False, "%s failed: %s" % (
                "version " + (gen.version or "?"), why), gen.number)
        elif not self.serving and not self.stopping:
            if not self.count_crash(gen):
                self.schedule_respawn()
        self.update_status()
        self.after_start()

    def on_serving_died(self, gen: Generation) -> None:
        """The serving generation exited by itself: restart it with backoff, or roll back."""
        self.serving = None
        log.error("%s exited unexpectedly (%s)", gen.label(), procgroup.describe_status(gen.exit_status))
        self.discard(gen)
        if self.stopping:
            return
        if gen.ready_at is not None and _now() - gen.ready_at >= STABLE_AFTER:
            self.crash_streak = 0
        if not self.count_crash(gen) and not self.starting:
            self.schedule_respawn()
        self.update_status()

    def discard(self, gen: Generation) -> None:
        """Stop tracking gen as live: stop it if it still runs, clean up what is left of its group."""
        if gen.alive:
            # Gracefully: a generation that never became ready may already hold accepted connections.
            self.retire(gen)
        elif procgroup.group_alive(gen.pid):
            gen.signal(signal.SIGKILL)
            gen.state, gen.kill_deadline = RETIRING, None
            self.retiring.append(gen)
        else:
            gen.state = EXITED

    def count_crash(self, gen: Generation) -> bool:
        """Count a death of the release on probation; True when that started a rollback."""
        p = self.probation
        if not p or gen.release_dir != p.release_dir or _now() > p.until:
            return False
        p.deaths += 1
        log.warning("version %s died %d time(s) within %.0fs of its deploy", p.version, p.deaths, PROBATION)
        if p.deaths < PROBATION_DEATHS:
            return False
        self.rollback(p)
        return True

    def rollback(self, p: Probation) -> None:
        """Go back to the release that served before p was deployed, and tell the poller."""
        self.probation = None
        self.crash_streak = 0
        error = "version %s crashed %d times after its deploy; rolled back to %s" % (
            p.version, p.deaths, p.previous_version)
        log.error("%s", error)
        releases.switch_link(self.current_link, p.previous_dir)
        self.current_version, self.current_release = p.previous_version, p.previous_dir
        self.info["last_deploy"] = {"version": p.version, "ok": False, "error": error, "time": _utc(),
                                    "rolled_back_to": p.previous_version}
        self.send_poller("rollback", version=p.version, to_version=p.previous_version, error=error)
        if self.starting is None:
            self.spawn("rollback", p.previous_version, p.previous_dir)

    def schedule_respawn(self) -> None:
        """Start the current release again after a delay that grows with consecutive crashes."""
        if self.current_release is None:
            return
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** self.crash_streak)
        self.crash_streak += 1
        self.respawn_at = _now() + delay
        log.info("restarting %s in %.1fs", self.current_version or "the app", delay)

    def respawn(self) -> None:
        if self.serving or self.starting or self.stopping or self.cfg.mode != "server":
            return
        release = releases.read_link(self.current_link)
        if release is None:
            return
        self.current_release = release
        self.spawn("respawn", self.current_version, release)

    def retire(self, gen: Generation) -> None:
        """Ask gen to stop (stop-signal), KILL it after graceful-timeout."""
        log.info("stopping %s (%s, KILL after %gs)", gen.label(), signal.Signals(self.cfg.stop_signal).name,
                 self.cfg.graceful_timeout)
        gen.state = RETIRING
        gen.kill_deadline = _now() + self.cfg.graceful_timeout
        gen.signal(self.cfg.stop_signal)
        self.retiring.append(gen)

    def restart(self) -> None:
        """Start a new generation of the current release; the old one retires once it is ready."""
        if self.cfg.mode != "server" or self.stopping:
            return
        if self.starting:
            self.restart_pending = True
            return
        release = releases.read_link(self.current_link)
        if release is None:
            log.info("nothing to restart: no release deployed yet")
            return
        self.respawn_at = None
        self.spawn("restart", self.version_of(release) or self.current_version, release)

    def after_start(self) -> None:
        """Run what waited for the starting generation to settle: an upgrade, a deploy, a restart."""
        if self.starting or self.stopping:
            return
        if self.upgrade_pending:
            self.upgrade_pending = False
            self.upgrade()
        if self.pending_deploy:
            msg, self.pending_deploy = self.pending_deploy, None
            self.start_deploy(msg)
        elif self.restart_pending:
            self.restart_pending = False
            self.restart()

    # ------------------------------------------------------------ deploys
    def on_deploy_request(self, msg: dict) -> None:
        """The poller has unpacked a release: switch to it (now, or once the starting one settles)."""
        if self.stopping:
            return
        if self.starting:
            self.pending_deploy = msg
            return
        self.start_deploy(msg)

    def start_deploy(self, msg: dict) -> None:
        version, release_dir = msg.get("version"), msg.get("release_dir")
        if not release_dir or not os.path.isdir(release_dir):
            self.finish_deploy(version, release_dir, False, "release dir %r does not exist" % release_dir, None)
            return
        log.info("deploying version %s from %s", version, release_dir)
        self.link_before_deploy = releases.read_link(self.current_link)
        releases.switch_link(self.current_link, release_dir)
        if self.cfg.mode == "assets":
            if self.cfg.dir:
                releases.switch_link(self.cfg.dir, release_dir)
            self.current_version, self.current_release = version, release_dir
            self.finish_deploy(version, release_dir, True, None, None)
            self.update_status()
            return
        self.respawn_at = None
        if self.spawn("deploy", version, release_dir) is None:
            self.restore_current()
            self.finish_deploy(version, release_dir, False, "cannot start the app", None)

    def restore_current(self) -> None:
        """Point `current` back where it was before the failed deploy."""
        before = getattr(self, "link_before_deploy", None)
        if before and os.path.isdir(before):
            releases.switch_link(self.current_link, before)
        else:
            try:
                os.unlink(self.current_link)
            except FileNotFoundError:
                pass
        if not self.serving and not self.stopping and before:
            self.schedule_respawn()

    def finish_deploy(self, version, release_dir, ok: bool, error, generation) -> None:
        """Record the outcome of a deploy and answer the poller."""
        self.info["last_deploy"] = {"version": version, "ok": ok, "error": error, "time": _utc(),
                                    "generation": generation}
        if ok:
            log.info("deployed version %s (generation %s)", version, generation)
        else:
            log.error("deploy of version %s failed: %s", version, error)
        self.send_poller("deployed", version=version, ok=ok, error=error, generation=generation,
                         release_dir=release_dir)
        self.update_status()

    # ------------------------------------------------------------- poller
    def spawn_poller(self) -> None:
        """Start the poller worker with one end of a socketpair as its fd 3, and send it the config."""
        if self.stopping:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv = [sys.executable, "-m", "dewy.poller", "--fd", "3"]
            env = {k: v for k, v in os.environ.items() if k != upgrade.STATE_ENV}
            self.poller_pid = process.fork_exec(argv, env, self.cfg.workdir, [theirs.fileno()])
        except OSError as exc:
            ours.close()
            log.error("cannot start the poller: %s", exc)
            self.schedule_poller_respawn()
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self.poller = Channel(ours)
        self.poller_started_at = _now()
        self.selector.register(self.poller, selectors.EVENT_READ, self.on_poller_message)
        self.send_poller("config", config=self.cfg.to_json(), current=self.current_info())
        log.info("started poller (pid %d)", self.poller_pid)

    def current_info(self) -> dict | None:
        if not self.current_release:
            return None
        return {"version": self.current_version, "release_dir": self.current_release}

    def send_poller(self, type_: str, **fields) -> None:
        if self.poller is None or self.poller.closed:
            return
        try:
            self.poller.send(type_, **fields)
        except OSError as exc:
            log.warning("cannot talk to the poller: %s", exc)

    def on_poller_message(self) -> None:
        try:
            messages = self.poller.receive()
        except ProtocolError as exc:
            log.error("poller sent garbage, restarting it: %s", exc)
            procgroup.signal_group(self.poller_pid, signal.SIGKILL)
            messages = []
        for msg in messages:
            kind = msg.get("type")
            if kind == "deploy":
                self.on_deploy_request(msg)
            elif kind == "status":
                for key in ("last_poll", "latest_version", "last_error"):
                    self.info[key] = msg.get(key)
                self.update_status()
            else:
                log.warning("ignored unknown message %r from the poller", kind)
        if self.poller is not None and self.poller.closed:
            self.close_poller_channel()

    def close_poller_channel(self) -> None:
        if self.poller is not None:
            try:
                self.selector.unregister(self.poller)
            except (KeyError, ValueError):
                pass
            self.poller.close()
            self.poller = None

    def on_poller_exit(self, wstatus: int) -> None:
        pid, self.poller_pid = self.poller_pid, None
        self.close_poller_channel()
        if self.stopping:
            return
        log.error("poller (pid %d) %s; the app keeps serving", pid, procgroup.describe_status(wstatus))
        self.schedule_poller_respawn()
        self.update_status()

    def schedule_poller_respawn(self) -> None:
        if _now() - self.poller_started_at >= 60:
            self.poller_failures = 0
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** self.poller_failures)
        self.poller_failures += 1
        self.poller_respawn_at = _now() + delay
        log.info("restarting the poller in %.1fs", delay)

    def stop_poller(self) -> None:
        """Ask the poller to exit (message, then SIGTERM); it is reaped like any child."""
        self.send_poller("stop")
        if self.poller_pid:
            procgroup.signal_group(self.poller_pid, signal.SIGTERM)

    # ------------------------------------------------------------ signals
    def handle_hup(self) -> None:
        """Re-read the configuration and gracefully restart the app."""
        from ..config import ConfigError
        self.systemd.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        try:
            self.apply_config(self.reload_config())
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
        except (sockets.ListenError, ReloadError) as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
        self.systemd.send(READY=1, STATUS=self.status_line())

    def apply_config(self, new) -> None:
        """Switch to a re-read configuration: re-bind changed ports, tell the poller, restart the app."""
        for key in ("mode", "workdir"):
            if getattr(new, key) != getattr(self.cfg, key):
                raise ReloadError("%s: %s cannot change on reload; restart dewy" % (new.source, key))
        listeners = sockets.bind_all(new.port, new.backlog, reuse={l.spec: l for l in self.listeners})
        dropped = [l for l in self.listeners if l not in listeners]
        self.listeners, self.cfg = listeners, new
        for listener in dropped:
            listener.close()
        self.setup_logging()
        log.info("configuration reloaded from %s", new.source)
        self.send_poller("reload", config=new.to_json(), current=self.current_info())
        self.restart()

    def handle_usr1(self) -> None:
        """Gracefully restart the app (a new generation of the same release)."""
        self.restart()

    def handle_usr2(self) -> None:
        """Upgrade dewy-master in place: same PID, same sockets, the app keeps running."""
        if self.starting:
            log.info("upgrade deferred until generation %d settles", self.starting.number)
            self.upgrade_pending = True
            return
        self.upgrade()

    def handle_term(self) -> None:
        """Graceful stop: the app gets its stop signal; wait for it up to graceful-timeout."""
        self.begin_stop(graceful=True)

    handle_int = handle_term

    def handle_quit(self) -> None:
        """Fast stop: kill the app and the poller now."""
        self.begin_stop(graceful=False)

    def begin_stop(self, graceful: bool) -> None:
        if not self.stopping:
            self.stopping = True
            self.systemd.send(STOPPING=1)
            self.respawn_at = self.poller_respawn_at = None
            self.pending_deploy, self.restart_pending, self.upgrade_pending = None, False, False
            self.stop_poller()
        if not graceful:
            self.kill_everything("fast stop")
            return
        self.stop_deadline = _now() + self.cfg.graceful_timeout
        for gen in [g for g in (self.starting, self.serving) if g]:
            self.retire(gen)
        self.starting = self.serving = None
        self.update_status()

    def kill_everything(self, why: str) -> None:
        """SIGKILL every generation's process group and the poller."""
        for gen in self.generations():
            if gen.signal(signal.SIGKILL):
                log.warning("killed %s (%s)", gen.label(), why)
            gen.state, gen.kill_deadline = RETIRING, None
        self.retiring = [g for g in self.generations()]
        self.starting = self.serving = None
        if self.poller_pid:
            procgroup.signal_group(self.poller_pid, signal.SIGKILL)
        for pid in self.orphans:
            procgroup.signal_group(pid, signal.SIGKILL)

    def shutdown(self) -> int:
        """Release everything once the children are gone."""
        for listener in self.listeners:
            listener.close()
        self.notify_listener.close()
        self.close_poller_channel()
        self.update_status(state="stopped")
        log.info("dewy-master stopped")
        return EXIT_OK

    # ------------------------------------------------------------ upgrade
    def upgrade(self) -> None:
        """Re-exec the (possibly new) dewy-master code with our sockets and children handed over."""
        problem = upgrade.preflight()
        if problem:
            log.error("upgrade refused, the new dewy does not start: %s", problem)
            return
        log.info("upgrading dewy-master in place (pid %d stays)", os.getpid())
        self.systemd.send(STATUS="upgrading dewy-master")
        orphans = dict(self.orphans)
        if self.poller_pid:
            # The new image starts a poller of its own; the old one is told to stop and reaped there.
            self.stop_poller()
            orphans[self.poller_pid] = _now() + 10
        state = {
            "listeners": [[l.spec, l.fileno()] for l in self.listeners],
            "notify": [self.notify_listener.path, self.notify_listener.fileno()],
            "generations": [g.to_state() for g in self.generations()],
            "generation_count": self.generation_count,
            "current": [self.current_version, self.current_release],
            "probation": self.probation.to_state() if self.probation else None,
            "orphans": {str(pid): max(0.0, d - _now()) for pid, d in orphans.items()},
            "info": self.info, "started_at": self.started_at, "sent_ready": self.sent_ready,
            # from_environment() took these out of os.environ, so the new image cannot find them there.
            "systemd": [self.systemd.path, self.systemd.watchdog_usec],
        }
        keep = [l.fileno() for l in self.listeners] + [self.notify_listener.fileno()]
        signal.set_wakeup_fd(-1)
        try:
            upgrade.exec_self(state, keep)
        except OSError as exc:
            signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
            log.error("upgrade failed, this master keeps running: %s", exc)
            self.orphans = orphans
            self.poller_pid_lost()

    def poller_pid_lost(self) -> None:
        # We stopped the poller for the upgrade that did not happen: it is an orphan now, start another.
        self.poller_pid = None
        self.close_poller_channel()
        self.spawn_poller()

    def resume(self, state: dict) -> None:
        """Take over from the previous master image (after USR2)."""
        inherited = {spec: sockets.adopt(spec, fd) for spec, fd in state["listeners"]}
        self.listeners = sockets.bind_all(self.cfg.port, self.cfg.backlog, reuse=inherited)
        for spec, listener in inherited.items():
            if listener not in self.listeners:
                listener.sock.close()  # no longer configured; the running app keeps its own copy
        path, fd = state["notify"]
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        self.notify_listener = NotifyListener(path, sock)
        self.generation_count = state["generation_count"]
        self.current_version, self.current_release = state["current"]
        for d in state["generations"]:
            gen = Generation.from_state(d)
            if gen.state == SERVING and self.serving is None:
                self.serving = gen
            elif gen.state == STARTING and self.starting is None:
                self.starting = gen
            else:
                gen.state = RETIRING
                self.retiring.append(gen)
        if state["probation"]:
            p = state["probation"]
            self.probation = Probation.from_state(p)
        now = _now()
        self.orphans = {int(pid): now + left for pid, left in state["orphans"].items()}
        self.info.update(state["info"])
        self.started_at = state["started_at"]
        self.sent_ready = state["sent_ready"]
        self.systemd = SystemdNotifier(*state["systemd"])
        log.info("resumed after in-place upgrade: %d generation(s), version %s",
                 len(self.generations()), self.current_version)

    # ------------------------------------------------------------- status
    def tell_systemd_ready(self) -> None:
        self.systemd.send(READY=1, STATUS=self.status_line())
        self.sent_ready = True

    def status_line(self) -> str:
        if self.cfg.mode == "assets":
            return "assets %s" % (self.current_version or "(none yet)")
        gen = self.serving
        if gen is None:
            return "waiting for a release" if self.current_release is None else "app not running"
        return "app %s gen %d" % ("v" + gen.version if gen.version else "(unknown version)", gen.number)

    def state_name(self) -> str:
        if self.stopping:
            return "stopping"
        if self.starting:
            return "deploying" if self.starting.reason == "deploy" else "starting"
        if self.serving or (self.cfg.mode == "assets" and self.current_release):
            return "running"
        return "waiting"

    def update_status(self, state: str | None = None) -> None:
        """Write the status file and the process title."""
        line = self.status_line()
        try:
            from setproctitle import setproctitle
            setproctitle("dewy-master [%s]" % line)
        except ImportError:
            pass
        serving = self.serving
        data = {
            "pid": os.getpid(), "mode": self.cfg.mode, "state": state or self.state_name(),
            "version": self.current_version, "release_dir": self.current_release,
            "generation": serving.number if serving else None,
            "app_pids": [serving.pid] if serving else [],
            "starting_pid": self.starting.pid if self.starting else None,
            "retiring_pids": [g.pid for g in self.retiring],
            "poller_pid": self.poller_pid, "started_at": self.started_at, "updated_at": _utc(),
            "dewy_version": __version__, "listen": [l.spec for l in self.listeners],
            **self.info,
        }
        try:
            status.write(self.cfg.workdir, data)
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc)

    def setup_logging(self) -> None:
        from .. import log as dewy_log
        dewy_log.setup(self.cfg.log_level, self.cfg.log_format, "dewy.master")


def run(cfg, reload_config) -> int:
    """Run dewy-master with cfg until it is stopped; reload_config() re-reads the config on SIGHUP."""
    arbiter = Arbiter(cfg, reload_config)
    arbiter.setup_logging()
    try:
        handed_over = upgrade.take_state()
    except ValueError as exc:
        log.error("%s; starting cold", exc)
        handed_over = None
    try:
        arbiter.start(handed_over)
    except sockets.ListenError as exc:
        log.error("%s", exc)
        return EXIT_LISTEN
    return arbiter.run()
