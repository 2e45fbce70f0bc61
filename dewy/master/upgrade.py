"""In-place upgrade of dewy-master: re-exec the same PID with its sockets and children handed over."""

import json
import os
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
    import subprocess  # only here: the master does not need it otherwise

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


_REQUIRED = object()


class UpgradeState:
    """Everything one master image hands the next across exec: written by to_json, read by from_json.

    Monotonic deadlines travel as seconds left (the clock does not survive exec). Fields added later
    get defaults, so a newer image still reads what an older one wrote. (A plain class, not a
    dataclass: dataclasses pulls in inspect and ast, 1 MiB the long-lived master does not need.)
    """

    FIELDS = {
        "listeners": _REQUIRED,  # [[spec, fd], ...] in config order
        "notify": _REQUIRED,  # [path, fd] of the notify socket
        "generations": _REQUIRED,  # Generation.to_state() of every tracked generation
        "generation_count": _REQUIRED,
        "current": _REQUIRED,  # [version, release_dir] that serves
        "probation": _REQUIRED,  # Probation.to_state() or None
        "orphans": _REQUIRED,  # {"pid": seconds until KILL}: our processes that belong to no generation
        "info": _REQUIRED,  # what the poller last reported (last_poll, latest_version, last_error)
        "started_at": _REQUIRED,
        "sent_ready": True,  # unused; still written because an older image (a downgrade) requires it
        "systemd": _REQUIRED,  # [NOTIFY_SOCKET path, WATCHDOG_USEC]: from_environment() took them out of os.environ
        "deploying": None,
        "crash_streak": 0,
        "problem": None,
        "last_deploy": None,
        "errors": 0,
        "outputs": None,  # {"pid": fd}: read ends of the generations' stderr pipes (dewy.master.output)
        "systemd_sockets": None,  # specs of listeners systemd passed (socket activation): never unlinked
        "sentinel": None,  # [pid, fd of the pipe's write end] of the sentinel (dewy.master.sentinel)
    }

    def __init__(self, **values):
        unknown = sorted(set(values) - set(self.FIELDS))
        if unknown:
            raise TypeError("unknown upgrade state field(s): %s" % ", ".join(unknown))
        missing = [name for name, default in self.FIELDS.items() if default is _REQUIRED and name not in values]
        if missing:
            raise TypeError("missing upgrade state field(s): %s" % ", ".join(missing))
        for name, default in self.FIELDS.items():
            setattr(self, name, values.get(name, default))

    def to_json(self) -> str:
        """The state as the JSON text of DEWY_MASTER_STATE."""
        data = {name: getattr(self, name) for name in self.FIELDS}
        return json.dumps(dict(data, v=STATE_VERSION), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "UpgradeState":
        """Read what to_json wrote; ValueError when it is not a state this code understands."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != STATE_VERSION:
            raise ValueError("unsupported upgrade state version %r" % (data.get("v") if isinstance(data, dict) else data))
        try:
            return cls(**{k: v for k, v in data.items() if k in cls.FIELDS})
        except TypeError as exc:
            raise ValueError("incomplete upgrade state: %s" % exc) from None


def exec_self(state: UpgradeState, keep_fds) -> None:
    """Replace this process image with a fresh dewy-master that resumes from state (returns only on error)."""
    for fd in keep_fds:
        os.set_inheritable(fd, True)
    env = dict(os.environ)
    env[STATE_ENV] = state.to_json()
    try:
        os.execve(sys.executable, command(), env)
    finally:
        for fd in keep_fds:
            os.set_inheritable(fd, False)


def take_state() -> UpgradeState | None:
    """The state handed over by the previous image, removed from the environment; None on a cold start."""
    raw = os.environ.pop(STATE_ENV, None)
    if not raw:
        return None
    return UpgradeState.from_json(raw)
