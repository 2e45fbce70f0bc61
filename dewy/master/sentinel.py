"""The sentinel: a small forked helper that stops what a killed master leaves behind.

PR_SET_PDEATHSIG reaches only the master's direct children (each generation's leader, the poller).
The other processes of a generation's group (a pre-fork server's workers, a helper the app started)
inherit the listening sockets and would keep the ports, and a new dewy-master could not bind them.
So the master forks the sentinel once: it closes every descriptor but the read end of a pipe, and the
master writes the process groups it runs (`12 34 56\\n`, the whole set whenever it changes). When
the pipe reaches EOF without a last `exit` line, the master is gone (SIGKILL, a crash): the sentinel
sends SIGTERM to each group, KILLs what is left after a short grace, and exits. A clean stop says
`exit` first. The write end is inheritable across an in-place upgrade (USR2), so the new image keeps it.
"""

import errno
import logging
import os
import signal
import time

from .. import procgroup

log = logging.getLogger("dewy.master")

GRACE_MAX = 5.0  # at most this long between SIGTERM and SIGKILL: a new master must get the ports soon
EXIT_LINE = b"exit"


class Sentinel:
    """The master's side: the sentinel's pid and the pipe to it."""

    def __init__(self, pid: int | None = None, fd: int | None = None):
        self.pid, self.fd = pid, fd
        self.sent: list | None = None  # the groups last written (None: write them at the next update)

    @classmethod
    def start(cls, grace: float, title: str = "dewy-master sentinel") -> "Sentinel":
        """Fork the sentinel; the returned Sentinel writes to it. OSError when the fork fails."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the sentinel: never returns into the master's code
            code = 0
            try:
                _sentinel_main(read_end, write_end, min(grace, GRACE_MAX), title)
            except BaseException:  # noqa: BLE001 — nothing of the master may run here
                code = 1
            finally:
                os._exit(code)
        os.close(read_end)
        os.set_blocking(write_end, False)
        log.debug("started the sentinel (pid %d)", pid)
        return cls(pid, write_end)

    def update(self, groups) -> None:
        """Tell the sentinel the process groups to stop if the master dies (only when they changed)."""
        groups = sorted(set(g for g in groups if g))
        if self.fd is None or groups == self.sent:
            return
        try:
            os.write(self.fd, (" ".join(map(str, groups)) + "\n").encode())
            self.sent = groups
        except BlockingIOError:
            self.sent = None  # the sentinel is behind (it reads as fast as it can): try again next time
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self.sent = None  # it died: reaped and restarted by the master

    def release(self) -> None:
        """A clean stop: tell the sentinel to exit without touching anything, and close the pipe."""
        if self.fd is None:
            return
        try:
            os.set_blocking(self.fd, True)
            os.write(self.fd, EXIT_LINE + b"\n")
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        """Close the write end (the sentinel then stops the groups it knows: only after release() is that a no-op)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _sentinel_main(read_end: int, write_end: int, grace: float, title: str) -> None:
    import gc
    gc.disable()  # a collection would touch (and so copy) every page it shares with the master
    os.close(write_end)
    os.setsid()  # its own session: a Ctrl-C or a signal to the master's group does not reach it
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # Keep stdin/stdout/stderr (for one line of log), nothing else: above all not the listening sockets.
    os.closerange(3, read_end)
    os.closerange(read_end + 1, 65536)
    try:
        from setproctitle import setproctitle
        setproctitle(title)
    except ImportError:
        pass
    groups, buffered = [], b""
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            if line.strip() == EXIT_LINE:
                return  # a clean stop: the master stopped its children itself
            groups = [int(word) for word in line.split() if word.isdigit()]
    stop_groups(groups, grace)


def stop_groups(groups, grace: float, clock=time.monotonic, sleep=time.sleep) -> list:
    """SIGTERM each process group, SIGKILL what is left of them after grace seconds; the groups that had to be
    killed."""
    alive = [g for g in groups if procgroup.signal_group(g, signal.SIGTERM)]
    if alive:
        os.write(2, ("dewy-master sentinel[%d]: the master is gone; stopping process group(s) %s\n"
                     % (os.getpid(), " ".join(map(str, alive)))).encode())
    deadline = clock() + grace
    while alive and clock() < deadline:
        sleep(0.05)
        alive = [g for g in alive if procgroup.group_alive(g)]
    for group in alive:
        procgroup.signal_group(group, signal.SIGKILL)
    return alive
