"""In-place upgrade of dewy-master: re-exec the same PID with its sockets and children handed over."""

import json
import os
import subprocess
import sys

STATE_ENV = "DEWY_MASTER_STATE"
CHECK_ENV = "DEWY_UPGRADE_CHECK"  # set: build the config, import the master, exit 0 (see preflight)
STATE_VERSION = 1


def command() -> list:
    """The command line this master was started with, to exec again."""
    return list(sys.orig_argv)


def preflight(timeout: float = 30.0) -> str | None:
    """Check that the new image would start before exec'ing into it; the problem in words, or None.

    exec is a one-way door: a broken install or a config file broken since start-up would lose the
    master (and with it systemd's MAINPID). So the very command line that will be exec'd runs first
    in check-only mode: it imports the new code and loads the config, then exits without binding.
    """
    env = dict(os.environ)
    env[CHECK_ENV] = "1"
    try:
        done = subprocess.run([sys.executable] + command()[1:], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "exit code %d" % done.returncode
    return None


def exec_self(state: dict, keep_fds) -> None:
    """Replace this process image with a fresh dewy-master that resumes from state (returns only on error)."""
    for fd in keep_fds:
        os.set_inheritable(fd, True)
    env = dict(os.environ)
    env[STATE_ENV] = json.dumps(dict(state, v=STATE_VERSION))
    try:
        os.execve(sys.executable, command(), env)
    finally:
        for fd in keep_fds:
            os.set_inheritable(fd, False)


def take_state() -> dict | None:
    """The state handed over by the previous image, removed from the environment; None on a cold start."""
    raw = os.environ.pop(STATE_ENV, None)
    if not raw:
        return None
    state = json.loads(raw)
    if state.get("v") != STATE_VERSION:
        raise ValueError("unsupported upgrade state version %r" % state.get("v"))
    return state
