"""Process groups: signal one, ask whether anything is left of it, say how a process ended."""

import os
import signal


def signal_group(pgid: int, sig: int) -> bool:
    """Send sig to a process group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member changed uid; it still exists


def group_alive(pgid: int) -> bool:
    """True while any process (zombies included) is left in the process group."""
    return signal_group(pgid, 0)


def describe_status(status: int) -> str:
    """A wait status in words: `exited with code 3`, `killed by SIGKILL`."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "killed by %s" % name
    return "exited with code %d" % os.waitstatus_to_exitcode(status)


def signal_leftover(pid: int, sig: int) -> bool:
    """Send sig to pid's process group when pid leads one (a daemon that called setsid), else to pid alone;
    False when pid is gone."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    if pgid == pid:
        return signal_group(pid, sig)
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
