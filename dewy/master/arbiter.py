"""dewy-master's I/O shell: the selector, signals, reaping, fds, the in-place upgrade exec; the guarded loop.

Single-threaded on purpose (fork stays safe): signal handlers only queue the signal and wake the
loop; the loop reaps children, turns signals into named commands (commands.py), reads the poller's
pipe, the notify socket and the control socket, and fires timers (timers.py). What to do about
generations is decided by the Lifecycle (lifecycle.py, its processes through apps.AppHost), the
operator's commands by Commands (commands.py), the status file by the StatusBoard (board.py), the
poller process is kept by a PollerHandle (pollerhandle.py); this module only does their I/O. Every
handler runs under a guard: an unexpected exception is logged with its traceback and counted (status
`errors`) and the app keeps serving; only a tight loop of them ends the master (exit 1, for systemd
to restart it).
"""

import collections
import logging
import os
import selectors
import signal
import time

from .. import __version__, procgroup, protocol, workdir
from .. import statefiles as status
from . import activation, control, leftovers, output, process, sockets, timers, upgrade
from .apps import AppHost, in_group
from .board import StatusBoard
from .commands import Commands
from .garbage import remove_half_made
from .generation import startup_problem
from .lifecycle import Lifecycle
from .pollerhandle import PollerHandle
from .sentinel import Sentinel
from .sdnotify import NotifyListener, SystemdNotifier, notify_socket_path

log = logging.getLogger("dewy.master")

EXIT_OK = 0
EXIT_ERRORS = 1  # unexpected errors in a tight loop: systemd restarts the master
EXIT_CONFIG = 2  # the workdir or systemd's sockets do not fit the config: a restart would not help
EXIT_LISTEN = 3

SWEEP_INTERVAL = 1.0  # safety net: re-check retiring process groups at least this often
ERROR_BURST, ERROR_WINDOW = 10, 10.0  # this many unexpected errors within this many seconds end the master

# Signals are operator commands; the operator commands of a later interface reuse the same names.
SIGNAL_COMMANDS = {signal.SIGHUP: "reload", signal.SIGUSR1: "restart", signal.SIGUSR2: "upgrade",
                   signal.SIGTERM: "stop", signal.SIGINT: "stop", signal.SIGQUIT: "stop-fast"}
STOP_SIGNALS = frozenset(sig for sig, name in SIGNAL_COMMANDS.items() if name.startswith("stop"))


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


class Arbiter:
    """The master process: one instance per dewy, run() until stopped.

    host: the class of the lifecycle's Host (apps.AppHost; a unit test passes one that forks nothing)."""

    def __init__(self, cfg, reload_config, host=AppHost):
        self.cfg = cfg
        self.reload_config = reload_config
        self.sig_queue = collections.deque()
        self.selector = selectors.DefaultSelector()
        self.systemd = SystemdNotifier.from_environment()
        self.listeners = []
        self.lock: workdir.Lock | None = None  # the workdir's flock, held until the process ends
        self.notify_listener = None
        self.host = host(self)
        self.lifecycle = Lifecycle(cfg, self.host)
        self.poller = PollerHandle()
        self.commands = Commands(self)
        self.board = StatusBoard(self)
        self.sentinel: Sentinel | None = None  # stops what a killed master leaves behind (sentinel.py)
        self.orphans = {}  # pid -> KILL deadline: processes of ours that belong to no generation
        self.adopted_scan_at = 0.0  # when to look for what a generation left behind next (leftovers.py)
        self.control = None  # control.ControlServer: .dewy/control.sock
        self.clients = {}  # control.ControlConnection -> the deadline of its request line
        self.watchdog_at: float | None = None
        self.errors = ErrorBudget()
        self.exit_code: int | None = None

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
            self.notify_listener = NotifyListener(notify_socket_path(status.state_dir(self.cfg.workdir)),
                                                  owner=process.config_credentials(self.cfg))
            self.lifecycle.cold_start(previous)
            if self.lifecycle.last_deploy is None and isinstance(previous, dict):
                self.lifecycle.last_deploy = previous.get("last_deploy")  # `dewy status` shows it across restarts
        if self.sentinel is None:
            self.start_sentinel()
        if not handed_over:
            remove_half_made(self.cfg)  # a master and poller killed together (OOM, power) leave them behind
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
                self.guarded(SIGNAL_COMMANDS[signum], self.commands.command, SIGNAL_COMMANDS[signum])
            if self.lifecycle.stopping and self.all_gone():
                break
            self.guarded("timers", self.fire_timers)
            if self.board.dirty:
                self.guarded("writing the status", self.board.write)
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
        table += self.host.timers()
        for conn, deadline in self.clients.items():
            table.append((deadline, lambda now, conn=conn: self.drop_client(conn)))
        return table

    def next_timeout(self) -> float:
        """Seconds until the earliest deadline (at most SWEEP_INTERVAL)."""
        deadline = timers.next_deadline(self.timers())
        timeout = deadline - time.monotonic() if deadline is not None else SWEEP_INTERVAL
        return max(0.0, min(timeout, SWEEP_INTERVAL))

    def fire_timers(self) -> None:
        """Act on every deadline that has passed."""
        timers.fire(self.timers(), time.monotonic())

    def kill_orphan(self, pid: int, now: float) -> None:
        procgroup.signal_leftover(pid, signal.SIGKILL)
        self.orphans[pid] = now + 3600  # killed; just wait to reap it

    def ping_watchdog(self, now: float) -> None:
        # The loop itself pings: a wedged master stops pinging and systemd restarts it.
        self.systemd.send(WATCHDOG=1)
        self.watchdog_at = now + self.systemd.watchdog_interval

    # ----------------------------------------------------------- children
    def reap(self) -> None:
        """Collect every exited child (never leave a zombie) and react to who it was."""
        reaped = False
        while True:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped = True
            self.on_child_exit(pid, wstatus)
        if self.lifecycle.sweep():
            self.changed()
        if reaped or time.monotonic() >= self.adopted_scan_at:
            self.adopted_scan_at = time.monotonic() + SWEEP_INTERVAL
            leftovers.stop_left_behind(self)

    def on_child_exit(self, pid: int, wstatus: int) -> None:
        if pid == self.poller.pid:
            self.on_poller_exit(wstatus)
        elif self.sentinel is not None and pid == self.sentinel.pid:
            self.on_sentinel_exit(wstatus)
        elif self.lifecycle.child_exited(pid, wstatus):
            pass
        elif self.orphans.pop(pid, None) is None:
            log.debug("reaped pid %d (%s)", pid, procgroup.describe_status(wstatus))
        self.host.exited(pid)

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

    # ------------------------------------------------------- the apps
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
                paused = self.commands.paused
                if paused and not paused.get("newer_than"):
                    # `dewy pause` came after the poller's last look at the pause file: the switch is the point
                    # of no return, so it is not made (the poller deploys it after `dewy resume`).
                    self.poller.send("deployed", version=msg.version, ok=False, retry=True, paused=True,
                                     error="deploys are paused (%s)" % (paused.get("reason") or "no reason given"))
                    continue
                self.lifecycle.deploy(msg)
            elif isinstance(msg, protocol.Status):
                self.board.on_status(msg)
                self.lifecycle.links.check_current()  # once per poll: a deleted release dir is noticed now
                self.changed()
            elif isinstance(msg, protocol.Progress):
                self.board.on_progress(msg)
                self.changed()
            elif isinstance(msg, protocol.State):
                self.changed()  # what the poller does now (receive() noted it): the status file's `poller`
            elif isinstance(msg, protocol.EndHold):
                self.commands.end_hold(msg.newer_than, msg.why)
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
        self.board.info["download"] = None  # that download died with it
        if not self.orphans:  # no other poller (an upgraded-away one) may still be writing there
            remove_half_made(self.cfg)
        self.poller.schedule_respawn()
        self.changed()

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

    def check_control(self) -> None:
        """Bind the control socket afresh when its file was deleted or replaced (a HUP asks)."""
        if self.control is not None and self.control.present():
            return
        if self.control is not None:
            self.selector.unregister(self.control)
            self.control.sock.close()  # not close(): the path may be another file now, unlinked by the new bind
            self.control = None
        self.open_control()
        if self.control is not None:
            log.warning("the control socket %s was gone: bound it again", self.control.path)

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
        try:
            answer = self.commands.control_command(request)
        except Exception as exc:  # noqa: BLE001 — answer the client, then let the guard log and count it
            conn.answer({"ok": False, "error": "%s failed: unexpected error in dewy-master (see its log): %s" % (
                request.get("command"), exc)})
            raise
        conn.answer(answer)

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
        self.lifecycle.sweep()  # hand over no generation that is gone already (a reaped one would look alive there)
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
            info=self.board.info, started_at=self.board.started_at,
            systemd=[self.systemd.path, self.systemd.watchdog_usec], errors=self.errors.count,
            outputs={str(pid): t.fd for pid, t in self.host.outputs.items() if not t.closed},
            systemd_sockets=[l.spec for l in self.listeners if isinstance(l, activation.InheritedListener)],
            sentinel=[self.sentinel.pid, self.sentinel.fd] if self.sentinel and self.sentinel.fd is not None else None,
            **self.lifecycle.to_state())
        keep = [l.fileno() for l in self.listeners] + [self.notify_listener.fileno()]
        keep += [t.fd for t in self.host.outputs.values() if not t.closed]
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
        # The running sockets, as the running app has them: a `port` edited meanwhile is a HUP's to apply (it
        # restarts the app on the new set); binding it here would leave a port nobody accepts on.
        self.listeners = list(inherited.values())
        problem = sockets.port_change(self.cfg.port, self.listeners)
        if problem:
            log.warning("%s: %s", self.cfg.source, problem)
        path, fd = state.notify
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        self.notify_listener = NotifyListener(path, sock)
        self.lifecycle.adopt(state)
        # (the control socket is bound afresh by start(): the old image's copy closed at exec)
        for pid, fd in (state.outputs or {}).items():
            self.host.watch_output(int(pid), output.StderrTail(fd))
        now = time.monotonic()
        self.orphans = {int(pid): now + left for pid, left in state.orphans.items()}
        self.board.info.update({k: v for k, v in state.info.items() if k in self.board.info})
        self.board.started_at = state.started_at
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
        self.board.dirty = True
        if state is not None:
            self.board.write(state)

    def record(self) -> None:
        """The lifecycle moves `current` next: the status file first, on the disk (Host.record)."""
        self.board.write(durable=True)

    def setup_logging(self) -> None:
        """Log as the config says (level, text or JSON); again after a reload."""
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
