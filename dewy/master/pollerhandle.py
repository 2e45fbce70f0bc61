"""The master's handle on its poller worker: spawn it, talk to it, restart it with backoff, notice a wedge.

Liveness: the master pings a poller it has not heard from for `ping_after` seconds; an idle poller
(waiting for its next poll, or for the master's answer to a deploy) answers at once. One that is busy
in a poll answers when the poll is done, so the poller counts as wedged only when it has said nothing
for longer than what it last said it does may take (it states it: dewy/poller/states.py): the ping
cadence plus CALL_TIMEOUT (a poll's registry calls), plus hook-timeout while it runs a deploy hook,
DOWNLOAD_STALL while it downloads (its progress messages are signs of life too), or DEPLOY_TIMEOUT while it
unpacks. Idle, paused, held or waiting for its rollout wave, a stopped poller is noticed within about 70 s.
A wedged poller is killed and restarted (a download from https:// or ghr:// then resumes where it stopped).
"""

import logging
import os
import signal
import socket
import time

from .. import backoff, interpreter, procgroup, protocol
from ..protocol import Channel, ProtocolError
from . import process
from .lifecycle import BACKOFF_FIRST, BACKOFF_MAX  # the app's respawn backoff, for the poller too

log = logging.getLogger("dewy.master")

STABLE_AFTER = 60.0  # a poller up this long resets the restart backoff
CALL_TIMEOUT = 60.0  # the longest one poll (registry calls) may keep the poller from reading its pipe
DEPLOY_TIMEOUT = 1800.0  # the longest an unpack may take
# The longest a download may go without a `progress` message (one a second while bytes arrive): a store's read
# timeouts and resume attempts (dewy.artifact.base: 4 x up to 60 s) fit in it.
DOWNLOAD_STALL = 300.0
PING_MIN, PING_MAX = 0.5, 30.0
# The fields of the poller's stated state (dewy/poller/states.py FIELDS), as the status file's `poller` shows them.
STATED_KEYS = protocol.STATED + ("poll_request",)
# Test-only: a smaller CALL_TIMEOUT, so a test can see a wedged poller restarted within seconds.
CALL_TIMEOUT_ENV = "DEWY_TEST_POLLER_CALL_TIMEOUT"


class PollerHandle:
    """One poller process at a time: its pid, its pipe, when to restart it, whether it is stuck."""

    def __init__(self, clock=time.monotonic, start=process.fork_exec, signal_group=procgroup.signal_group):
        self.clock = clock
        # Unit tests pass fakes for both: fork_exec(argv, env, cwd, pass_fds, creds=None) -> pid, signal_group(pid, sig).
        self.start_process, self.signal_group = start, signal_group
        self.pid: int | None = None
        self.channel: Channel | None = None
        self.failures = 0
        self.started_at = 0.0
        self.respawn_at: float | None = None
        self.last_heard = 0.0
        self.ping_sent = False
        # What the poller last said it does ({state, reason, reason_text, target, held, since, poll_request}, from
        # its `status` / `state` messages); shown as the status file's `poller`. None until it says.
        self.stated: dict | None = None
        self.call_timeout = float(os.environ.get(CALL_TIMEOUT_ENV) or CALL_TIMEOUT)

    # ---------------------------------------------------------------- process
    def spawn(self, cwd: str, env: dict, creds=None) -> bool:
        """Start `python -m dewy.poller --fd 3` with one end of a socketpair as fd 3; False if it failed.

        creds (process.Credentials, the `user` setting): the poller runs as that user, never as the root
        master, since it downloads and unpacks what the registry offers and runs the deploy hooks."""
        self.respawn_at = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv = interpreter.module_command("dewy.poller", ["--fd", "3"])  # also from a zipapp or checkout
            self.pid = self.start_process(argv, env, cwd, [theirs.fileno()], creds=creds)
        except OSError as exc:
            ours.close()
            log.error("cannot start the poller: %s", exc)
            self.schedule_respawn()
            return False
        finally:
            theirs.close()
        ours.setblocking(False)
        self.channel = Channel(ours)
        self.started_at = self.last_heard = self.clock()
        self.ping_sent = False
        self.stated = {"state": "starting", "reason": "spawned", "reason_text": None, "target": None, "held": None,
                       "since": None, "poll_request": None}
        log.info("started poller (pid %d)", self.pid)
        return True

    def exited(self) -> int | None:
        """The poller was reaped: forget it; its pid."""
        pid, self.pid = self.pid, None
        self.close()
        if (self.stated or {}).get("state") != "stuck":  # the reason a stuck one was killed stays shown
            self.stated = {key: None for key in STATED_KEYS}
            self.stated.update(state="exited", reason="exited")
        return pid

    def schedule_respawn(self) -> None:
        """Start a new poller after a delay that grows while pollers keep dying young."""
        if self.clock() - self.started_at >= STABLE_AFTER:
            self.failures = 0
        delay = backoff.delay(BACKOFF_FIRST, self.failures, BACKOFF_MAX)
        self.failures += 1
        self.respawn_at = self.clock() + delay
        log.info("restarting the poller in %.1fs", delay)

    def stop(self, reason: str | None = None) -> None:
        """Ask the poller to exit (message, then SIGTERM); it is reaped like any child.

        reason: why dewy stops (the poller notifies "dewy stopped" with it); None when only the poller
        goes (an upgrade starts another), so nobody is told dewy stopped."""
        self.send("stop", **({"reason": reason} if reason else {}))
        self.respawn_at = None
        if self.pid:
            self.signal_group(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the poller's process group."""
        if self.pid:
            self.signal_group(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Close our end of the pipe."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    # ---------------------------------------------------------------- the pipe
    def send(self, type_: str, **fields) -> None:
        """Send a message; dropped (with a warning) when the poller is gone."""
        if self.channel is None or self.channel.closed:
            return
        try:
            self.channel.send(type_, **fields)
        except OSError as exc:
            log.warning("cannot talk to the poller: %s", exc)

    def receive(self, running_version: str | None = None) -> list:
        """The messages that arrived; [] and the poller killed when it sent garbage. Anything counts as a sign of life.

        A `status` or `state` says what the poller does now: that bounds how long it may stay silent.
        (running_version: unused, kept for callers of the older signature.)
        """
        try:
            messages = self.channel.receive()
        except ProtocolError as exc:
            log.error("poller sent garbage, restarting it: %s", exc)
            self.kill()
            return []
        if messages:
            self.last_heard, self.ping_sent = self.clock(), False
        for msg in map(protocol.parse, messages):
            if isinstance(msg, (protocol.Status, protocol.State)) and isinstance(msg.state, str):
                self.stated = {key: getattr(msg, key) for key in STATED_KEYS}
        return messages

    # ------------------------------------------------------------- liveness
    def ping_after(self, cfg) -> float:
        """Silence after which the poller is pinged."""
        return min(PING_MAX, max(PING_MIN, cfg.interval))

    def stall_bound(self, cfg) -> float:
        """Silence after which the poller counts as wedged, by what it last said it does."""
        bound = self.ping_after(cfg) + self.call_timeout
        stated = self.stated or {}
        state, reason = stated.get("state"), stated.get("reason")
        if state == "downloading":
            bound += DOWNLOAD_STALL
        elif state == "deploying" and reason == "unpacking":
            bound += DEPLOY_TIMEOUT
        elif state == "deploying" and reason in ("before-hook", "after-hook"):
            bound += cfg.hook_timeout
        return bound

    def timers(self, cfg, respawn) -> list:
        """[(deadline, action(now))]: the restart (respawn(), the shell's: it owns the selector), the ping,
        the wedge check."""
        table = []
        if self.respawn_at is not None:
            table.append((self.respawn_at, lambda now: respawn()))
        if self.pid is not None and self.channel is not None:
            if not self.ping_sent:
                table.append((self.last_heard + self.ping_after(cfg), lambda now: self.ping()))
            table.append((self.last_heard + self.stall_bound(cfg), lambda now: self.wedged(now, cfg)))
        return table

    def ping(self) -> None:
        self.ping_sent = True
        self.send("ping")

    def wedged(self, now: float, cfg) -> None:
        """Silent past the bound: kill it (reaped and restarted like a poller that died)."""
        stated = self.stated or {}
        doing = " ".join(str(part) for part in (stated.get("state"), stated.get("target")) if part)
        why = "said nothing for %.1fs while %s (bound %.1fs)" % (now - self.last_heard, doing or "starting",
                                                               self.stall_bound(cfg))
        log.error("poller (pid %d) %s: it is stuck; restarting it", self.pid, why)
        self.stated = {key: None for key in STATED_KEYS}
        self.stated.update(state="stuck", reason="silent", reason_text=why)
        self.last_heard = now  # do not fire again while it is being killed and reaped
        self.kill()
