"""dewy-master's I/O shell: sockets, signals, children, status file, in-place upgrade; the guarded loop.

Single-threaded on purpose (fork stays safe): signal handlers only queue the signal and wake the
loop; the loop reaps children, turns signals into named commands (handle_<command>()), reads the
poller's pipe and the notify socket, and fires timers. What to do about generations is decided by
the Lifecycle (lifecycle.py), the poller process is kept by a PollerHandle (pollerhandle.py); this
module only does their I/O. Every handler runs under a guard: an unexpected exception is logged with
its traceback and counted (status `errors`) and the app keeps serving; only a tight loop of them
ends the master (exit 1, for systemd to restart it).
"""

import collections
import logging
import os
import selectors
import signal
import time

from .. import __version__, current, pause, procgroup, protocol, secrets, status, workdir
from ..clock import utc_iso
from . import activation, control, httpprobe, output, process, sockets, upgrade
from .sentinel import Sentinel
from .configview import ConfigLoadError
from .generation import command_problem, startup_problem
from .lifecycle import CommandError, Host, Lifecycle
from .pollerhandle import PollerHandle
from .sdnotify import NotifyListener, SystemdNotifier, notify_socket_path

log = logging.getLogger("dewy.master")

EXIT_OK = 0
EXIT_ERRORS = 1  # unexpected errors in a tight loop: systemd restarts the master
EXIT_CONFIG = 2  # the workdir or systemd's sockets do not fit the config: a restart would not help
EXIT_LISTEN = 3

SWEEP_INTERVAL = 1.0  # safety net: re-check retiring process groups at least this often
STOP_MARGIN = 15.0  # seconds systemd waits beyond graceful-timeout for the master to reap everything and exit
ERROR_BURST, ERROR_WINDOW = 10, 10.0  # this many unexpected errors within this many seconds end the master

# Signals are operator commands; the operator commands of a later interface reuse the same names.
SIGNAL_COMMANDS = {signal.SIGHUP: "reload", signal.SIGUSR1: "restart", signal.SIGUSR2: "upgrade",
                   signal.SIGTERM: "stop", signal.SIGINT: "stop", signal.SIGQUIT: "stop-fast"}
STOP_SIGNALS = frozenset(sig for sig, name in SIGNAL_COMMANDS.items() if name.startswith("stop"))
# What the control socket (.dewy/control.sock) may ask, with the arguments each takes.
RELOAD_FAILED = "reload failed, keeping the running configuration"
CONTROL_COMMANDS = {"status": (), "restart": (), "reload": (), "rollback": ("to",), "pause": ("reason",),
                    "resume": (), "deploy-now": ()}
# Test-only: a command name whose handler raises, to prove the guard (never set it in production).
FAIL_COMMAND_ENV = "DEWY_TEST_FAIL_COMMAND"


class ReloadError(Exception):
    """A re-read configuration cannot be applied to the running master."""


class CommandRefused(Exception):
    """An operator command that cannot be done now; str() says why (the control socket's answer)."""


class ErrorBudget:
    """Counts unexpected errors; exhausted when ERROR_BURST of them fall within ERROR_WINDOW seconds."""

    def __init__(self, clock=time.monotonic, burst: int = ERROR_BURST, window: float = ERROR_WINDOW):
        self.clock, self.burst, self.window = clock, burst, window
        self.count = 0
        self.recent = collections.deque(maxlen=burst)

    def spend(self) -> bool:
        """Count one error; True when the budget is exhausted (errors are repeating in a tight loop)."""
        self.count += 1
        now = self.clock()
        self.recent.append(now)
        return len(self.recent) == self.burst and now - self.recent[0] <= self.window


class Arbiter(Host):
    """The master process: one instance per dewy, run() until stopped."""

    def __init__(self, cfg, reload_config):
        self.cfg = cfg
        self.reload_config = reload_config
        self.sig_queue = collections.deque()
        self.selector = selectors.DefaultSelector()
        self.systemd = SystemdNotifier.from_environment()
        self.listeners = []
        self.lock: workdir.Lock | None = None  # the workdir's flock, held until the process ends
        self.outputs = {}  # generation leader pid -> output.StderrTail of its stderr pipe
        self.status_dirty = False  # changed() since the status file was last written
        self.title = None  # the process title last set
        self.notify_listener = None
        self.lifecycle = Lifecycle(cfg, self)
        self.poller = PollerHandle()
        self.sentinel: Sentinel | None = None  # stops what a killed master leaves behind (sentinel.py)
        self.orphans = {}  # pid -> KILL deadline: processes of ours that belong to no generation
        self.probes = {}  # httpprobe.Probe -> the generation it checks (ready = http:, health)
        self.control = None  # control.ControlServer: .dewy/control.sock
        self.clients = {}  # control.ControlConnection -> the deadline of its request line
        self.paused = pause.read(cfg.workdir)  # {reason, since} while deploys are paused (survives restarts)
        self.polls = 0  # `status` messages from pollers
        self.poll_requests = 0  # `poll-now` ids sent; the poller echoes the last one it read in `status`
        self.watchdog_at: float | None = None
        self.started_at = utc_iso()
        # What the poller last said: `status` replaces it all (download: the progress of the one under way).
        # calver: how the registry's versions compare (its `calver=` format; None: semver), for `dewy rollback` and
        # `dewy deploy-now`; the poller, which has the registry, says it (the master loads no URL parsing).
        self.info = {"last_poll": None, "latest_version": None, "last_error": None, "poll_request": None,
                     "next_poll": None, "download": None, "rollout": None, "calver": None}
        self.errors = ErrorBudget()
        self.exit_code: int | None = None
        self.fail_command = os.environ.pop(FAIL_COMMAND_ENV, None)

    @property
    def state_dir(self) -> str:
        return status.state_dir(self.cfg.workdir)

    # ----------------------------------------------------------------- start
    def start(self, handed_over: "upgrade.UpgradeState | None") -> None:
        """Claim the workdir, bind sockets, install signals, adopt or start the app and the poller."""
        if handed_over:
            try:
                self.lock = workdir.Lock.acquire(self.cfg.workdir)  # the one the previous image held
            except workdir.WorkdirError as exc:
                log.error("after the upgrade: %s", exc)  # keep running: the app and its sockets are here
        else:
            # Checked and locked before binding, created only after: see dewy.workdir.claim.
            self.lock, self.listeners = workdir.claim(
                self.cfg.workdir, lambda: activation.listeners(self.cfg.port, self.cfg.backlog),
                creds=process.config_credentials(self.cfg))  # `user`: .dewy/ and releases/ become theirs
        process.become_subreaper()
        self.init_signals()
        if handed_over:
            self.resume(handed_over)
        else:
            previous = status.read(self.cfg.workdir)
            self.notify_listener = NotifyListener(notify_socket_path(self.state_dir),
                                                  owner=process.config_credentials(self.cfg))
            self.lifecycle.cold_start(previous)
            if self.lifecycle.last_deploy is None and isinstance(previous, dict):
                self.lifecycle.last_deploy = previous.get("last_deploy")  # `dewy status` shows it across restarts
        if self.sentinel is None:
            self.start_sentinel()
        if not handed_over:
            self.remove_half_made()  # a master and poller killed together (OOM, power) leave them behind
        self.selector.register(self.notify_listener, selectors.EVENT_READ, self.on_notify)
        self.open_control()
        if self.systemd.watchdog_interval:
            self.watchdog_at = time.monotonic()
        self.spawn_poller()
        lc = self.lifecycle
        if self.cfg.mode == "assets" or lc.serving or not lc.starting:
            # Nothing to wait for (assets, an adopted app, or no release yet): systemd may go on.
            self.ready()
        log.info("dewy-master %s started (pid %d, mode %s, listening on %s)", __version__, os.getpid(),
                 self.cfg.mode, ", ".join(l.spec for l in self.listeners) or "nothing")
        self.changed()

    def init_signals(self) -> None:
        """Queue signals from handlers and wake the loop through a pipe."""
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self.on_wakeup)
        for sig in SIGNAL_COMMANDS:
            signal.signal(sig, self.queue_signal)
        # A handler (not SIG_DFL) so that SIGCHLD writes to the wake-up pipe.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def queue_signal(self, signum, frame) -> None:
        """Signal handler: remember the signal, nothing else (the loop does the work).

        A stop (TERM, INT, QUIT) is always queued: dropping one leaves systemd waiting for its stop timeout
        and then SIGKILLing the app mid-request. Any other signal still waiting in the queue is not queued
        twice (five HUPs before the loop wakes are one reload), which also keeps the queue short."""
        if signum in STOP_SIGNALS or signum not in self.sig_queue:
            self.sig_queue.append(signum)

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        """The main loop; returns the exit code once stopped."""
        while self.exit_code is None:
            self.guarded("reaping children", self.reap)
            while self.sig_queue:
                signum = self.sig_queue.popleft()
                log.info("received SIG%s", signal.Signals(signum).name[3:])
                self.guarded(SIGNAL_COMMANDS[signum], self.command, SIGNAL_COMMANDS[signum])
            if self.lifecycle.stopping and self.all_gone():
                break
            self.guarded("timers", self.fire_timers)
            if self.status_dirty:
                self.guarded("writing the status", self.write_status)
            timeout = self.guarded("timers", self.next_timeout, default=SWEEP_INTERVAL)
            try:
                events = self.selector.select(timeout)
            except InterruptedError:
                events = []
            for key, _ in events:
                self.guarded("event", key.data)
        if self.exit_code is not None:
            return self.exit_code
        return self.shutdown()

    def guarded(self, what: str, handler, *args, default=None):
        """Run one handler (its result, or default when it failed); an unexpected error is logged and
        counted, and the master carries on."""
        try:
            return handler(*args)
        except Exception:  # noqa: BLE001 — the master must outlive any bug in one handler
            log.exception("unexpected error in %s; dewy-master carries on (the app keeps serving)", what)
            if self.errors.spend():
                self.give_up()
                return default
            try:
                self.changed()  # the count in the status file; its own failure must not escape the guard
            except Exception:  # noqa: BLE001
                log.exception("cannot record the error in the status file")
            return default

    def give_up(self) -> None:
        """Errors repeat in a tight loop: stop the children now and exit 1 for systemd to restart dewy."""
        log.critical("%d unexpected errors within %.0fs: dewy-master exits so that systemd restarts it",
                     self.errors.burst, self.errors.window)
        self.exit_code = EXIT_ERRORS
        try:
            self.lifecycle.stopping = True
            self.lifecycle.kill_everything("the master gives up")
            self.poller.kill()
            self.changed(state="failed")
        except Exception:  # noqa: BLE001 — leaving anyway; children get SIGTERM from PR_SET_PDEATHSIG
            log.exception("while giving up")

    def on_wakeup(self) -> None:
        """Drain the wake-up pipe (the signals themselves are in sig_queue)."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def timers(self) -> list:
        """Every deadline of the master with its action: [(deadline, action(now))]; the one timer table."""
        table = list(self.lifecycle.timers())
        if not self.lifecycle.stopping:
            table += self.poller.timers(self.cfg, self.spawn_poller)
        for pid, deadline in self.orphans.items():
            table.append((deadline, lambda now, pid=pid: self.kill_orphan(pid, now)))
        if self.watchdog_at is not None:
            table.append((self.watchdog_at, self.ping_watchdog))
        for probe in self.probes:
            table.append((probe.deadline(), lambda now, probe=probe: self.drive_probe(probe, probe.tick, now)))
        for conn, deadline in self.clients.items():
            table.append((deadline, lambda now, conn=conn: self.drop_client(conn)))
        return table

    def next_timeout(self) -> float:
        """Seconds until the earliest deadline (at most SWEEP_INTERVAL)."""
        deadlines = [d for d, _ in self.timers()]
        timeout = min(deadlines) - time.monotonic() if deadlines else SWEEP_INTERVAL
        return max(0.0, min(timeout, SWEEP_INTERVAL))

    def fire_timers(self) -> None:
        """Act on every deadline that has passed."""
        now = time.monotonic()
        for deadline, action in self.timers():
            if now >= deadline:
                action(now)

    def kill_orphan(self, pid: int, now: float) -> None:
        procgroup.signal_group(pid, signal.SIGKILL)
        self.orphans[pid] = now + 3600  # killed; just wait to reap it

    def ping_watchdog(self, now: float) -> None:
        # The loop itself pings: a wedged master stops pinging and systemd restarts it.
        self.systemd.send(WATCHDOG=1)
        self.watchdog_at = now + self.systemd.watchdog_interval

    # ----------------------------------------------------------- children
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
        if self.lifecycle.sweep():
            self.changed()

    def on_child_exit(self, pid: int, wstatus: int) -> None:
        if pid == self.poller.pid:
            self.on_poller_exit(wstatus)
        elif self.sentinel is not None and pid == self.sentinel.pid:
            self.on_sentinel_exit(wstatus)
        elif self.lifecycle.child_exited(pid, wstatus):
            pass
        elif self.orphans.pop(pid, None) is None:
            log.debug("reaped pid %d (%s)", pid, procgroup.describe_status(wstatus))
        tail = self.outputs.get(pid)
        if tail is not None:
            # Kept until the pipe is drained too: other processes of the group may still write to it.
            tail.reaped = True
            if tail.closed:
                del self.outputs[pid]

    # ---------------------------------------------------------- sentinel
    def start_sentinel(self) -> None:
        """Fork the sentinel (sentinel.py), which stops the app's process groups should this master be killed."""
        try:
            self.sentinel = Sentinel.start(self.cfg.graceful_timeout)
        except OSError as exc:
            log.error("cannot start the sentinel (a killed master may leave app processes behind): %s", exc)
            self.sentinel = None
            return
        self.changed()

    def on_sentinel_exit(self, wstatus: int) -> None:
        self.sentinel.close()
        self.sentinel = None
        if not self.lifecycle.stopping:
            log.warning("the sentinel exited (%s); starting another", procgroup.describe_status(wstatus))
            self.start_sentinel()

    def sentinel_groups(self) -> list:
        """Every process group the sentinel must stop if this master dies: generations, the poller, orphans."""
        return [g.pid for g in self.lifecycle.generations()] + [self.poller.pid] + list(self.orphans)

    def all_gone(self) -> bool:
        return self.lifecycle.all_gone() and self.poller.pid is None and not self.orphans

    # ------------------------------------------------ Host: the lifecycle's I/O
    def spawn(self, gen) -> int:
        """Start the app for gen with the listeners as fds 3..; its pid (CommandError: `app` cannot run)."""
        env = self.app_environment(gen)
        argv = list(self.cfg.app)
        problem = command_problem(argv, env.get("PATH"), self.cfg.workdir)
        if problem:
            raise CommandError(problem)
        tail, write_end = output.StderrTail.pipe()
        try:
            pid = process.fork_exec(argv, env, self.cfg.workdir, [l.fileno() for l in self.listeners],
                                    set_listen_pid=True, stderr=write_end, creds=process.config_credentials(self.cfg))
        except BaseException:
            tail.close()
            raise
        finally:
            os.close(write_end)
        if self.cfg.log_format == "json":
            # One JSON log stream: the app's lines become records too (a shipper or jq must not choke).
            tail.as_json = {"pid": pid, "app_pid": pid, "generation": gen.number, "version": gen.version}
        self.watch_output(pid, tail)
        return pid

    def watch_output(self, pid: int, tail) -> None:
        """Forward a generation's stderr as it comes (read in the loop, never blocking) and keep its tail."""
        tail.reaped = False
        self.outputs[pid] = tail
        self.selector.register(tail, selectors.EVENT_READ, lambda: self.on_output(pid))

    def on_output(self, pid: int) -> None:
        """Generation pid wrote to stderr (or closed it): forward it; forget the pipe at EOF once reaped."""
        tail = self.outputs[pid]
        if not tail.read():
            self.selector.unregister(tail)
            if tail.reaped:
                del self.outputs[pid]

    def explain(self, pid: int, why: str) -> str:
        """why, with the tail of what generation pid wrote to stderr (for the reason of a refusal)."""
        return output.with_reason(why, self.outputs.get(pid))

    def app_environment(self, gen) -> dict:
        # dewy's credentials (registry, cloud, notifier tokens, the cache key) are not the app's: dropped
        # unless app-env-keep names them (dewy.secrets).
        env = {k: v for k, v in secrets.child_environment(os.environ, self.cfg.app_env_keep).items()
               if not k.startswith(("LISTEN_", "SERVER_STARTER_")) and k != "NOTIFY_SOCKET"}
        env.update(sockets.app_environment(self.listeners))
        env["SERVER_STARTER_GENERATION"] = str(gen.number)
        env["DEWY_GENERATION"] = str(gen.number)
        env["DEWY_VERSION"] = gen.version or ""
        env["DEWY_RELEASE_DIR"] = gen.release_dir or ""
        if gen.ready_kind == "notify":
            env["NOTIFY_SOCKET"] = self.notify_listener.path
        return env

    def signal(self, pid: int, sig: int) -> bool:
        return procgroup.signal_group(pid, sig)

    def group_alive(self, pid: int) -> bool:
        return procgroup.group_alive(pid)

    def tell_poller(self, type_: str, **fields) -> None:
        if type_ == "deployed" and fields.get("ok") and self.paused and self.paused.get("newer_than"):
            # The newer version a rollback's hold waited for is deployed: the hold is over.
            log.info("version %s deployed: the hold after the rollback from %s ends", fields.get("version"),
                     self.paused["newer_than"])
            pause.clear(self.cfg.workdir)
            self.paused = None
        elif type_ == "rollback" and not fields.get("operator") and self.paused and self.paused.get("newer_than"):
            # A crash loop undid the operator's last switch (a deploy would have ended the hold): what the hold kept
            # serves no more, and the version gone back to serves again, so the hold is over (the poller refuses the
            # version that crash-looped).
            log.info("the switch to %s by dewy rollback was undone (%s): the hold after it ends",
                     fields.get("version"), fields.get("error"))
            pause.clear(self.cfg.workdir)
            self.paused = None
        self.poller.send(type_, **fields)

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

    def listening(self, pid: int) -> bool:
        """Whether a process of group pid holds one of our listening sockets (an fd naming its inode)."""
        links = {"socket:[%d]" % os.fstat(l.fileno()).st_ino for l in self.listeners}
        return bool(links) and holds_any(pid, links)

    def probe(self, gen, path: str, timeout: float) -> None:
        """GET path on the first TCP listener, non-blocking in the loop (httpprobe); the answer goes to
        lifecycle.probe_done."""
        listener = next((l for l in self.listeners if l.unix_path is None), None)
        if listener is None:
            self.lifecycle.probe_done(gen, httpprobe.FAILED, "no TCP listener to send GET %s to" % path)
            return
        probe = httpprobe.Probe(listener.sock.family, listener.sock.getsockname(), path, gen.pid, timeout,
                                time.monotonic())
        self.probes[probe] = gen
        if not probe.finished:
            self.selector.register(probe, selectors.EVENT_WRITE,
                                   lambda: self.drive_probe(probe, probe.on_event, time.monotonic()))
        self.sync_probe(probe, registered=not probe.finished)

    def drive_probe(self, probe, step, now: float) -> None:
        """Run one step of a probe (socket event or tick), then follow its state in the selector."""
        step(now)
        self.sync_probe(probe, registered=True)

    def sync_probe(self, probe, registered: bool) -> None:
        """A finished probe: unregister, close, tell the lifecycle; else watch the event it waits for."""
        if probe not in self.probes:
            return
        if not probe.finished:
            wanted = {"write": selectors.EVENT_WRITE, "read": selectors.EVENT_READ}.get(probe.events())
            if wanted:
                key = self.selector.get_key(probe)
                if key.events != wanted:
                    self.selector.modify(probe, wanted, key.data)
            return
        gen = self.probes.pop(probe)
        if registered:
            self.selector.unregister(probe)
        probe.close()
        self.lifecycle.probe_done(gen, probe.outcome, probe.detail)
        self.changed()

    def ready(self) -> None:
        """Tell systemd dewy is up (and what runs)."""
        self.systemd.send(READY=1, STATUS=self.lifecycle.status_line())

    def on_notify(self) -> None:
        """READY=1 from the starting generation (or a process it started) makes it ready."""
        for pid, fields in self.notify_listener.receive():
            if fields.get("READY") == "1":
                self.lifecycle.notify_ready(pid, in_group)

    # ------------------------------------------------------------- poller
    def spawn_poller(self) -> None:
        """Start the poller worker and send it the config."""
        if self.lifecycle.stopping:
            return
        env = {k: v for k, v in os.environ.items() if k != upgrade.STATE_ENV}
        if not self.poller.spawn(self.cfg.workdir, env, process.config_credentials(self.cfg)):
            return
        self.selector.register(self.poller.channel, selectors.EVENT_READ, self.on_poller_message)
        self.poller.send("config", config=self.cfg.to_json(), current=self.current_info())
        self.changed()

    def current_info(self) -> dict | None:
        lc = self.lifecycle
        if not lc.current_release:
            return None
        return {"version": lc.current_version, "release_dir": lc.current_release}

    def on_poller_message(self) -> None:
        for msg in map(protocol.parse, self.poller.receive(self.lifecycle.current_version)):
            if isinstance(msg, protocol.Deploy):
                self.lifecycle.deploy(msg)
            elif isinstance(msg, protocol.Status):
                fields = msg.to_dict()
                for key in self.info:
                    self.info[key] = fields.get(key)  # `download` (not in a status) ends with the poll
                self.polls += 1
                self.lifecycle.check_current()  # once per poll: a deleted release dir is noticed now
                self.changed()
            elif isinstance(msg, protocol.Progress):
                self.info["download"] = msg.to_dict()
                self.changed()
            elif isinstance(msg, protocol.Pong):
                pass  # a sign of life is all it is (receive() noted it)
            else:
                log.warning("ignored unexpected message %r from the poller", msg.type)
        channel = self.poller.channel
        if channel is not None and channel.closed:
            self.close_poller_channel()

    def close_poller_channel(self) -> None:
        if self.poller.channel is not None:
            try:
                self.selector.unregister(self.poller.channel)
            except (KeyError, ValueError):
                pass
            self.poller.close()

    def on_poller_exit(self, wstatus: int) -> None:
        self.close_poller_channel()
        pid = self.poller.exited()
        if self.lifecycle.stopping:
            return
        log.error("poller (pid %d) %s; the app keeps serving", pid, procgroup.describe_status(wstatus))
        self.info["download"] = None  # that download died with it
        if not self.orphans:  # no other poller (an upgraded-away one) may still be writing there
            self.remove_half_made()
        self.poller.schedule_respawn()
        self.changed()

    def remove_half_made(self) -> None:
        """After a poller died (or at a cold start): remove the release it was unpacking (`releases/<ts>.tmp`)
        and, in the workdir's own cache, the download it was writing (`.tmp.*`). Nobody else writes there (one
        poller per workdir, none running now), so they are garbage; a shared or $DEWY_CACHEDIR cache is left to
        its own stale-file sweep."""
        import shutil  # only here: a poller that dies is rare
        releases = os.path.join(self.cfg.workdir, "releases")
        places = [(releases, lambda name: name.endswith(".tmp") and name[:1].isdigit())]
        if self.cfg.cache in ("", "file") and not os.environ.get("DEWY_CACHEDIR"):
            places.append((workdir.state_path(self.cfg.workdir, "cache"), lambda name: name.startswith(".tmp.")))
        for directory, half_made in places:
            try:
                names = [n for n in os.listdir(directory) if half_made(n)]
            except OSError:
                continue
            for name in names:
                path = os.path.join(directory, name)
                try:
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                    log.info("removed %s, left half-made by the poller", path)
                except OSError as exc:
                    log.warning("cannot remove %s, left half-made by the poller: %s", path, exc)

    # ----------------------------------------------------------- commands
    def command(self, name: str, **args):
        """Run an operator command by name (reload, restart, upgrade, stop, stop-fast, and the control socket's
        status, rollback, pause, resume, deploy-now); what its handler returns (the control socket's answer)."""
        if name == self.fail_command:
            raise RuntimeError("injected failure in the %s command (%s, test only)" % (name, FAIL_COMMAND_ENV))
        return getattr(self, "handle_" + name.replace("-", "_"))(**args)

    # ------------------------------------------------------- control socket
    def open_control(self) -> None:
        """Listen on .dewy/control.sock (a failure is logged: signals still work)."""
        try:
            self.control = control.ControlServer(workdir.state_path(self.cfg.workdir, control.CONTROL_FILE))
        except OSError as exc:
            log.error("cannot open the control socket (dewy rollback/pause/resume/deploy-now will not reach this "
                      "master): %s", exc)
            return
        self.selector.register(self.control, selectors.EVENT_READ, self.on_control_accept)

    def close_control(self) -> None:
        for conn in list(self.clients):
            self.drop_client(conn)
        if self.control is not None:
            self.selector.unregister(self.control)
            self.control.close()
            self.control = None

    def on_control_accept(self) -> None:
        for conn in self.control.accept():
            if not conn.allowed():
                log.warning("control socket: refused a connection from uid %d (pid %d)", conn.peer_uid, conn.peer_pid)
                conn.answer({"ok": False, "error": "only dewy's user may command dewy-master"})
                continue
            self.clients[conn] = time.monotonic() + control.REQUEST_TIMEOUT
            self.selector.register(conn, selectors.EVENT_READ, lambda conn=conn: self.on_control_request(conn))

    def drop_client(self, conn) -> None:
        """Forget a control connection (answered, gone, or too slow)."""
        if self.clients.pop(conn, None) is not None:
            self.selector.unregister(conn)
            conn.close()

    def on_control_request(self, conn) -> None:
        """A control client sent (part of) its line: once complete, run the command and answer."""
        request = conn.read()
        if request is None:
            return
        self.clients.pop(conn, None)
        self.selector.unregister(conn)
        if isinstance(request, str):
            conn.answer({"ok": False, "error": request})
            return
        conn.answer(self.control_command(request))

    def control_command(self, request: dict) -> dict:
        """Run one control-socket request: {"ok": true, ...} or {"ok": false, "error": why}."""
        name, args = request["command"], request.get("args") or {}
        if name not in CONTROL_COMMANDS:
            return {"ok": False, "error": "unknown command %r (known: %s)" % (name, ", ".join(sorted(CONTROL_COMMANDS)))}
        unknown = sorted(set(args) - set(CONTROL_COMMANDS[name]))
        if unknown:
            return {"ok": False, "error": "%s takes no argument %s" % (name, ", ".join(unknown))}
        log.info("control socket: %s %s", name, " ".join("%s=%r" % kv for kv in sorted(args.items())))
        try:
            answer = self.command(name, **args) or {}
        except CommandRefused as exc:
            log.warning("control socket: %s refused: %s", name, exc)
            return {"ok": False, "error": str(exc)}
        self.changed()
        return dict(answer, ok=True)

    def handle_status(self) -> dict:
        """The status, as the status file will show it."""
        return {"status": self.status_data()}

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
        problem = self.lifecycle.switch_back(version, release_dir)
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
            if not older:
                raise CommandRefused("no earlier release is unpacked in %s to roll back to" % base)
            name = older[-1]
        return entries[name].get("version"), os.path.join(base, name)

    def handle_reload(self) -> None:
        """Re-read the configuration and gracefully restart the app."""
        failed = self.lifecycle.problem or ""
        try:
            new = self.reload_config()
        except ConfigLoadError as exc:
            # Refused before anything changed: no RELOADING=1 ... READY=1 pair, which would tell systemd the
            # reload was done (`systemctl reload` checks the file first: this is a file that went bad since).
            self.lifecycle.set_problem("%s: %s" % (RELOAD_FAILED, exc))
            self.changed()
            self.systemd.send(STATUS="%s: %s" % (RELOAD_FAILED, exc))
            return
        self.systemd.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        try:
            self.apply_config(new)
        except (sockets.ListenError, ReloadError) as exc:
            # Logged and shown in `dewy status` (last error) until a reload succeeds.
            self.lifecycle.set_problem("%s: %s" % (RELOAD_FAILED, exc))
            self.changed()
        else:
            if failed.startswith(RELOAD_FAILED):
                self.lifecycle.set_problem(None)
                self.changed()
        self.systemd.send(READY=1, STATUS=self.lifecycle.status_line())

    def apply_config(self, new) -> None:
        """Switch to a re-read configuration: re-bind changed ports, tell the poller, restart the app."""
        for key in ("mode", "workdir", "user", "group"):
            if getattr(new, key) != getattr(self.cfg, key):
                raise ReloadError("%s: %s cannot change on reload; restart dewy" % (new.source, key))
        problem = startup_problem(new)
        if problem:
            raise ReloadError(problem)
        listeners = sockets.bind_all(new.port, new.backlog, reuse={l.spec: l for l in self.listeners})
        dropped = [l for l in self.listeners if l not in listeners]
        old_dir = self.cfg.dir
        self.listeners, self.cfg = listeners, new
        self.lifecycle.cfg = new
        for listener in dropped:
            listener.close()
        self.setup_logging()
        log.info("configuration reloaded from %s", new.source)
        if new.mode == "assets" and (not new.dir or self.lifecycle.point_dir_at(self.lifecycle.current_release)):
            self.lifecycle.forget_dir(old_dir)  # `dir` moved or removed: the old link must not keep an old release
        self.poller.send("reload", config=new.to_json(), current=self.current_info())
        self.lifecycle.restart()

    def handle_restart(self) -> None:
        """Gracefully restart the app (a new generation of the same release)."""
        self.lifecycle.restart()

    def handle_upgrade(self) -> None:
        """Upgrade dewy-master in place: same PID, same sockets, the app keeps running."""
        if self.lifecycle.request_upgrade():
            self.upgrade()

    def handle_stop(self) -> None:
        """Graceful stop: the app gets its stop signal; wait for it up to graceful-timeout."""
        self.begin_stop(graceful=True)

    def handle_stop_fast(self) -> None:
        """Fast stop: kill the app and the poller now."""
        self.begin_stop(graceful=False)

    def begin_stop(self, graceful: bool) -> None:
        if not self.lifecycle.stopping:
            # EXTEND_TIMEOUT_USEC: a graceful-timeout longer than the unit's TimeoutStopSec must not be cut short.
            self.systemd.send(STOPPING=1, EXTEND_TIMEOUT_USEC=int((self.cfg.graceful_timeout + STOP_MARGIN) * 1e6))
            self.poller.stop(reason="graceful stop (SIGTERM/SIGINT)" if graceful else "fast stop (SIGQUIT)")
        self.lifecycle.stop(graceful)
        if not graceful:
            self.poller.kill()
            for pid in self.orphans:
                procgroup.signal_group(pid, signal.SIGKILL)
        self.changed()

    def shutdown(self) -> int:
        """Release everything once the children are gone."""
        self.close_control()
        for listener in self.listeners:
            listener.close()
        self.notify_listener.close()
        self.close_poller_channel()
        self.release_sentinel()
        self.changed(state="stopped")
        log.info("dewy-master stopped")
        return EXIT_OK

    def release_sentinel(self) -> None:
        """A clean stop: the sentinel exits without touching anything; reaped here."""
        sentinel, self.sentinel = self.sentinel, None
        if sentinel is None:
            return
        sentinel.release()
        deadline = time.monotonic() + 1.0  # it exits at once; one that does not (stopped?) must not hold us up
        try:
            while os.waitpid(sentinel.pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(sentinel.pid, signal.SIGKILL)
                    os.waitpid(sentinel.pid, 0)
                    break
                time.sleep(0.01)
        except ChildProcessError:
            pass

    # ------------------------------------------------------------ upgrade
    def upgrade(self) -> None:
        """Re-exec the (possibly new) dewy-master code with our sockets and children handed over."""
        problem = upgrade.preflight()
        if problem:
            log.error("upgrade refused, the new dewy does not start: %s", problem)
            return
        log.info("upgrading dewy-master in place (pid %d stays)", os.getpid())
        self.systemd.send(STATUS="upgrading dewy-master")
        now = time.monotonic()
        orphans = dict(self.orphans)
        if self.poller.pid:
            # The new image starts a poller of its own; the old one is told to stop and reaped there.
            self.poller.stop()
            orphans[self.poller.pid] = now + 10
        state = upgrade.UpgradeState(
            listeners=[[l.spec, l.fileno()] for l in self.listeners],
            notify=[self.notify_listener.path, self.notify_listener.fileno()],
            orphans={str(pid): max(0.0, d - now) for pid, d in orphans.items()},
            info=self.info, started_at=self.started_at,
            systemd=[self.systemd.path, self.systemd.watchdog_usec], errors=self.errors.count,
            outputs={str(pid): t.fd for pid, t in self.outputs.items() if not t.closed},
            systemd_sockets=[l.spec for l in self.listeners if isinstance(l, activation.InheritedListener)],
            sentinel=[self.sentinel.pid, self.sentinel.fd] if self.sentinel and self.sentinel.fd is not None else None,
            **self.lifecycle.to_state())
        keep = [l.fileno() for l in self.listeners] + [self.notify_listener.fileno()]
        keep += [t.fd for t in self.outputs.values() if not t.closed]
        if state.sentinel:
            keep.append(self.sentinel.fd)
        signal.set_wakeup_fd(-1)
        try:
            upgrade.exec_self(state, keep)
        except OSError as exc:
            signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
            log.error("upgrade failed, this master keeps running: %s", exc)
            self.orphans = orphans
            # The poller was stopped for the upgrade that did not happen: it is an orphan now; start another.
            self.poller.pid = None
            self.close_poller_channel()
            self.spawn_poller()

    def resume(self, state: "upgrade.UpgradeState") -> None:
        """Take over from the previous master image (after USR2)."""
        import socket
        inherited = {spec: sockets.adopt(spec, fd) for spec, fd in state.listeners}
        for spec in state.systemd_sockets or ():
            if spec in inherited:  # still systemd's: closing it must not remove its socket file
                inherited[spec] = activation.InheritedListener(spec, inherited[spec].sock)
        self.listeners = sockets.bind_all(self.cfg.port, self.cfg.backlog, reuse=inherited)
        for spec, listener in inherited.items():
            if listener not in self.listeners:
                listener.sock.close()  # no longer configured; the running app keeps its own copy
        path, fd = state.notify
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        self.notify_listener = NotifyListener(path, sock)
        self.lifecycle.adopt(state)
        # (the control socket is bound afresh by start(): the old image's copy closed at exec)
        for pid, fd in (state.outputs or {}).items():
            self.watch_output(int(pid), output.StderrTail(fd))
        now = time.monotonic()
        self.orphans = {int(pid): now + left for pid, left in state.orphans.items()}
        self.info.update({k: v for k, v in state.info.items() if k in self.info})
        self.started_at = state.started_at
        self.errors.count = state.errors
        if self.lifecycle.last_deploy is None:
            self.lifecycle.last_deploy = state.info.get("last_deploy")  # where an older image kept it
        self.systemd = SystemdNotifier(*state.systemd)
        if state.sentinel:
            pid, fd = state.sentinel
            os.set_inheritable(fd, False)
            self.sentinel = Sentinel(pid, fd)
        log.info("resumed after in-place upgrade: %d generation(s), version %s",
                 len(self.lifecycle.generations()), self.lifecycle.current_version)

    # ------------------------------------------------------------- status
    def changed(self, state: str | None = None) -> None:
        """Something the status shows changed: the loop rewrites the status file before it sleeps again.

        Coalesced: a restart changes the status five or six times within one pass of the loop, and each
        write is a file creation and a rename (about 0.4 ms). A final state (stopped, failed) is written now.
        """
        self.status_dirty = True
        if state is not None:
            self.write_status(state)

    def record(self) -> None:
        """The lifecycle moves `current` next: the status file first, on the disk (Host.record)."""
        self.write_status(durable=True)

    def write_status(self, state: str | None = None, durable: bool = False) -> None:
        """Write the status file and the process title (durable: fsync'd, and an OSError is raised)."""
        self.status_dirty = False
        if self.sentinel is not None:
            self.sentinel.update(self.sentinel_groups())
        lc = self.lifecycle
        line = lc.status_line()
        if line != self.title:
            self.title = line
            try:
                from setproctitle import setproctitle
                setproctitle("dewy-master [%s]" % line)
            except ImportError:
                pass
        try:
            status.write(self.cfg.workdir, self.status_data(state), durable=durable)
        except OSError as exc:
            if durable:
                self.status_dirty = True
                raise
            log.warning("cannot write the status file: %s", exc)

    def status_data(self, state: str | None = None) -> dict:
        """What the status file says (and the control socket's `status` answers)."""
        lc = self.lifecycle
        return {
            "pid": os.getpid(), "mode": self.cfg.mode, "state": state or lc.state_name(),
            **lc.status_fields(),
            "poller_pid": self.poller.pid, "sentinel_pid": self.sentinel.pid if self.sentinel else None,
            "started_at": self.started_at, "updated_at": utc_iso(),
            "dewy_version": __version__, "listen": [l.spec for l in self.listeners],
            **self.info,
            # The master's own problem (a lost release, an app command that cannot run) outranks the poller's.
            "last_error": lc.problem or self.info["last_error"],
            "errors": self.errors.count, "paused": self.paused, "polls": self.polls,
        }

    def setup_logging(self) -> None:
        from .. import log as dewy_log
        dewy_log.setup(self.cfg.log_level, self.cfg.log_format, "dewy.master")


def holds_any(pgid: int, links: set) -> bool:
    """Whether a process of group pgid has an fd whose link text (`socket:[INODE]`) is among links."""
    for pid in httpprobe._group_pids(pgid):  # noqa: SLF001 — the one scan of a process group
        fd_dir = "/proc/%d/fd" % pid
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue  # gone (or a zombie: its fds are closed)
        for name in names:
            try:
                if os.readlink("%s/%s" % (fd_dir, name)) in links:
                    return True
            except OSError:
                pass
    return False


def in_group(pid: int, pgid: int) -> bool:
    """Whether pid is in process group pgid (every app process stays in its generation's group)."""
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return False


def run(cfg, reload_config) -> int:
    """Run dewy-master with cfg until it is stopped; reload_config() re-reads the config on SIGHUP."""
    arbiter = Arbiter(cfg, reload_config)
    arbiter.setup_logging()
    try:
        handed_over = upgrade.take_state()
    except ValueError as exc:
        log.error("%s; starting cold", exc)
        handed_over = None
    problem = None if handed_over else startup_problem(cfg)
    if problem:
        log.error("%s", problem)
        return EXIT_CONFIG
    try:
        arbiter.start(handed_over)
    except sockets.ListenError as exc:
        where = "[dewy] port" if cfg.source != "command line" else "--port"
        log.error("%s: %s: %s", cfg.source, where, exc)
        return EXIT_LISTEN
    except (workdir.WorkdirError, activation.ActivationError) as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    return arbiter.run()
