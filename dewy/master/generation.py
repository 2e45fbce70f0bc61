"""One app generation: a process started from one release on the master's sockets."""

import os
import time

from .. import procgroup
from . import process

STARTING, SERVING, RETIRING, EXITED = "starting", "serving", "retiring", "exited"


class Generation:
    """An app process, its release, and where it is in its life (starting -> serving -> retiring)."""

    def __init__(self, number: int, pid: int, version: str | None, release_dir: str | None,
                 reason: str, state: str = STARTING, started_at: float | None = None):
        self.number = number
        self.pid = pid  # also its process group id: fork_exec makes it a group leader
        self.version = version
        self.release_dir = release_dir
        self.reason = reason  # why it was started: initial, deploy, restart, respawn, rollback
        self.state = state
        self.started_at = started_at if started_at is not None else time.monotonic()
        self.ready_kind, self.ready_timeout = "delay", 0.0  # set by the arbiter when it spawns
        self.ready_deadline: float | None = None  # ready by then (delay) or failed (notify)
        self.kill_deadline: float | None = None  # while retiring: KILL at this time
        self.ready_at: float | None = None
        self.exit_status: int | None = None  # wait status once the leader is reaped

    @classmethod
    def spawn(cls, number, argv, cwd, env, listeners, version, release_dir, reason) -> "Generation":
        """Start the app with the listeners as fds 3.. and return its Generation."""
        pid = process.fork_exec(argv, env, cwd, [l.fileno() for l in listeners], set_listen_pid=True)
        return cls(number, pid, version, release_dir, reason)

    @property
    def alive(self) -> bool:
        """True until the leader process has been reaped."""
        return self.exit_status is None

    def label(self) -> str:
        """How logs name this generation."""
        return "generation %d (pid %d, %s)" % (self.number, self.pid, self.version or "unknown version")

    def signal(self, sig: int) -> bool:
        """Signal the generation's whole process group; False when nothing is left of it."""
        return procgroup.signal_group(self.pid, sig)

    def finished(self) -> bool:
        """True when the leader is reaped and no process of its group is left."""
        return not self.alive and not procgroup.group_alive(self.pid)

    def uptime(self) -> float:
        """Seconds since the generation was started."""
        return time.monotonic() - self.started_at

    def to_state(self) -> dict:
        """What an in-place upgraded master needs to keep managing this generation."""
        now = time.monotonic()
        rel = lambda t: None if t is None else t - now  # noqa: E731 — monotonic clocks do not survive exec
        return {"number": self.number, "pid": self.pid, "version": self.version,
                "release_dir": self.release_dir, "reason": self.reason, "state": self.state,
                "age": now - self.started_at, "ready_in": rel(self.ready_deadline),
                "kill_in": rel(self.kill_deadline)}

    @classmethod
    def from_state(cls, d: dict) -> "Generation":
        """Rebuild a Generation handed over by the previous master image."""
        now = time.monotonic()
        gen = cls(d["number"], d["pid"], d["version"], d["release_dir"], d["reason"], d["state"],
                  started_at=now - d["age"])
        gen.ready_deadline = None if d["ready_in"] is None else now + d["ready_in"]
        gen.kill_deadline = None if d["kill_in"] is None else now + d["kill_in"]
        return gen

    def __repr__(self):
        return "<Generation %d pid=%d %s %s>" % (self.number, self.pid, self.version, self.state)


def resolve_argv(app, workdir: str) -> list:
    """The app command with a relative program path (one containing '/') made absolute under workdir."""
    argv = list(app)
    if argv and "/" in argv[0] and not os.path.isabs(argv[0]):
        argv[0] = os.path.join(workdir, argv[0])
    return argv
