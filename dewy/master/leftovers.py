"""What a generation leaves behind outside its process group: an orphan the master adopts as subreaper (a
daemonizing app's setsid child, which would go on serving an old release on dewy's sockets) is stopped like a
generation (stop signal, KILL after graceful-timeout), with one log line, and a stop waits for it.
"""

import logging
import os
import signal
import time

from .. import procgroup
from . import process
from .generation import left_behind

log = logging.getLogger("dewy.master")


def stop_left_behind(shell) -> None:
    """Look at the master's children it did not start (shell: the Arbiter); stop each one a generation that no
    longer starts or serves left behind, and track it in shell.orphans (KILL deadline, reaped there)."""
    lc = shell.lifecycle
    known = {g.pid for g in lc.generations()} | {shell.poller.pid} | set(shell.orphans)
    if shell.sentinel is not None:
        known.add(shell.sentinel.pid)
    adopted = [pid for pid in process.children(os.getpid()) if pid not in known]
    if not adopted:
        return
    live = {g.number: g.pid for g in (lc.starting, lc.serving) if g is not None}
    inodes = {os.fstat(l.fileno()).st_ino for l in shell.listeners}
    for pid in adopted:
        whose = left_behind(pid, live, inodes)
        if whose is None:
            continue
        log.warning("stopping %s, left behind by %s outside its process group (%s, KILL after %gs)",
                    process.describe(pid), whose, signal.Signals(shell.cfg.stop_signal).name,
                    shell.cfg.graceful_timeout)
        procgroup.signal_leftover(pid, shell.cfg.stop_signal)
        shell.orphans[pid] = time.monotonic() + shell.cfg.graceful_timeout
        shell.changed()
