"""The lifecycle's Host in the real master: the app generations' processes, their stderr, their HTTP probes.

What the Lifecycle (lifecycle.py) asks of the world, done with real processes: fork + execve an app
generation with the listeners as fds 3.. (spawn), signal its process group, ask whether anything of it is
left or still holds a listener, GET its readiness / health path (httpprobe) and forward its stderr
(output). The selector, the listeners, the poller and the status file are the Arbiter's (the `shell`);
a unit test replaces this class to run a real Arbiter without processes.
"""

import os
import selectors
import time

from .. import procgroup, secrets
from . import httpprobe, output, process, sockets
from .generation import command_problem
from .lifecycle import CommandError, Host


class AppHost(Host):
    """The Host of the master's Lifecycle: app processes, their stderr pipes and their HTTP probes."""

    def __init__(self, shell):
        self.shell = shell  # the Arbiter: cfg, listeners, selector, notify_listener, lifecycle, poller, status
        self.outputs = {}  # generation leader pid -> output.StderrTail of its stderr pipe
        self.probes = {}  # httpprobe.Probe -> the generation it checks (ready = http:, health)
        self.let_go = set()  # leaders seen without a listener while their group lived on (listening())

    def timers(self) -> list:
        """[(deadline, action(now))] of the probes under way."""
        return [(probe.deadline(), lambda now, probe=probe: self.drive_probe(probe, probe.tick, now))
                for probe in self.probes]

    # What the lifecycle tells the rest of the master.
    def tell_poller(self, type_: str, **fields) -> None:
        self.shell.poller.send(type_, **fields)

    def switched_back(self, from_version, to_version) -> None:
        self.shell.commands.switched_back(from_version, to_version)

    def ready(self) -> None:
        self.shell.ready()

    def changed(self) -> None:
        self.shell.changed()

    def record(self) -> None:
        self.shell.record()

    def upgrade(self) -> None:
        self.shell.upgrade()

    def exited(self, pid: int) -> None:
        """Generation leader pid was reaped: its pipe goes once drained too (others of its group may write)."""
        self.let_go.discard(pid)
        tail = self.outputs.get(pid)
        if tail is not None:
            tail.reaped = True
            if tail.closed:
                del self.outputs[pid]

    def spawn(self, gen) -> int:
        """Start the app for gen with the listeners as fds 3..; its pid (CommandError: `app` cannot run)."""
        env = self.app_environment(gen)
        argv = list(self.shell.cfg.app)
        problem = command_problem(argv, env.get("PATH"), self.shell.cfg.workdir)
        if problem:
            raise CommandError(problem)
        tail, write_end = output.StderrTail.pipe()
        try:
            pid = process.fork_exec(argv, env, self.shell.cfg.workdir, [l.fileno() for l in self.shell.listeners],
                                    set_listen_pid=True, stderr=write_end,
                                    creds=process.config_credentials(self.shell.cfg))
        except BaseException:
            tail.close()
            raise
        finally:
            os.close(write_end)
        if self.shell.cfg.log_format == "json":
            # One JSON log stream: the app's lines become records too (a shipper or jq must not choke).
            tail.as_json = {"pid": pid, "app_pid": pid, "generation": gen.number, "version": gen.version}
        self.watch_output(pid, tail)
        return pid

    def watch_output(self, pid: int, tail) -> None:
        """Forward a generation's stderr as it comes (read in the loop, never blocking) and keep its tail."""
        tail.reaped = False
        self.outputs[pid] = tail
        self.shell.selector.register(tail, selectors.EVENT_READ, lambda: self.on_output(pid))

    def on_output(self, pid: int) -> None:
        """Generation pid wrote to stderr (or closed it): forward it; forget the pipe at EOF once reaped."""
        tail = self.outputs[pid]
        if not tail.read():
            self.shell.selector.unregister(tail)
            if tail.reaped:
                del self.outputs[pid]

    def explain(self, pid: int, why: str) -> str:
        """why, with the tail of what generation pid wrote to stderr (for the reason of a refusal)."""
        return output.with_reason(why, self.outputs.get(pid))

    def app_environment(self, gen) -> dict:
        # dewy's credentials (registry, cloud, notifier tokens, the cache key) are not the app's: dropped
        # unless app-env-keep names them (dewy.secrets).
        keep = getattr(self.shell.cfg, "app_env_keep", ())
        env = {k: v for k, v in secrets.child_environment(os.environ, keep).items()
               if not k.startswith(("LISTEN_", "SERVER_STARTER_")) and k != "NOTIFY_SOCKET"}
        env.update(sockets.app_environment(self.shell.listeners))
        env["SERVER_STARTER_GENERATION"] = str(gen.number)
        env["DEWY_GENERATION"] = str(gen.number)
        env["DEWY_VERSION"] = gen.version or ""
        env["DEWY_RELEASE_DIR"] = gen.release_dir or ""
        if gen.ready_kind == "notify":
            env["NOTIFY_SOCKET"] = self.shell.notify_listener.path
        return env

    def signal(self, pid: int, sig: int) -> bool:
        return procgroup.signal_group(pid, sig)

    def group_alive(self, pid: int) -> bool:
        return procgroup.group_alive(pid)

    def listening(self, pid: int) -> bool:
        """Whether a process of group pid holds one of our listening sockets (an fd naming its inode).

        The leader's fds first (no scan of /proc). A leader that let go of them is looked at once more before
        the rest of its group is scanned (about 1 ms on a host of 130 processes): a one-process app is gone
        by then, so a restart costs the master no scan at all; a pre-fork server's workers are found."""
        links = {"socket:[%d]" % os.fstat(l.fileno()).st_ino for l in self.shell.listeners}
        if not links or not procgroup.group_alive(pid):
            return False
        if fds_hold(pid, links):
            return True
        if pid not in self.let_go:
            self.let_go.add(pid)
            return True
        return holds_any(pid, links)

    def probe(self, gen, path: str, timeout: float) -> None:
        """GET path on the first TCP listener, non-blocking in the loop (httpprobe); the answer goes to
        lifecycle.health.probe_done."""
        listener = next((l for l in self.shell.listeners if l.unix_path is None), None)
        if listener is None:
            self.shell.lifecycle.health.probe_done(gen, httpprobe.FAILED, "no TCP listener to send GET %s to" % path)
            return
        probe = httpprobe.Probe(listener.sock.family, listener.sock.getsockname(), path, gen.pid, timeout,
                                time.monotonic())
        self.probes[probe] = gen
        if not probe.finished:
            self.shell.selector.register(probe, selectors.EVENT_WRITE,
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
                key = self.shell.selector.get_key(probe)
                if key.events != wanted:
                    self.shell.selector.modify(probe, wanted, key.data)
            return
        gen = self.probes.pop(probe)
        if registered:
            self.shell.selector.unregister(probe)
        probe.close()
        self.shell.lifecycle.health.probe_done(gen, probe.outcome, probe.detail)
        self.shell.changed()


def holds_any(pgid: int, links: set) -> bool:
    """Whether a process of group pgid has an fd whose link text (`socket:[INODE]`) is among links.

    The leader first (the usual holder: a lookup of its fds alone, no scan of /proc); the other members of the
    group (a pre-fork server's workers) only once the leader holds none; nothing when the group is gone."""
    if not procgroup.group_alive(pgid):
        return False
    if fds_hold(pgid, links):
        return True
    return any(fds_hold(pid, links) for pid in httpprobe._group_pids(pgid)[1:])  # noqa: SLF001 — leader first


def fds_hold(pid: int, links: set) -> bool:
    """Whether process pid has an fd whose link text is among links."""
    fd_dir = "/proc/%d/fd" % pid
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False  # gone (or a zombie: its fds are closed)
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
