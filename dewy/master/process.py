"""Starting and signalling the master's children (app generations and the poller)."""

import os
import resource
import signal
import sys

# Python ignores these at start-up and ignored signals survive execve: give children the defaults.
_PYTHON_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _load_libc():
    # Loaded once here: a forked child must not dlopen anything before it execs.
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_libc = _load_libc()


def _max_fd() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 65536


def fork_exec(argv, env: dict, cwd: str, pass_fds=(), set_listen_pid: bool = False, stderr: int | None = None) -> int:
    """Start argv in its own process group with exactly fds 0-2 and pass_fds at 3, 4, ...; return its pid.

    With set_listen_pid the child's LISTEN_PID is its own pid, as sd_listen_fds(3) requires,
    which is why this forks by hand instead of using posix_spawn. The child gets SIGTERM if the
    master dies without stopping it (SIGKILL), so it cannot keep the ports from a restarted master.
    With stderr (a descriptor) the child's fd 2 is that one instead of the master's.
    """
    pass_fds = list(pass_fds)
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    # Child: only async-signal-safe-ish os calls until execve; never return into the master's code.
    try:
        os.setpgid(0, 0)
        if _libc is not None:
            _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the master died before prctl took effect
                os._exit(1)
        for sig in _PYTHON_IGNORED:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if stderr is not None:
            os.dup2(stderr, 2)
        first_free = 3 + len(pass_fds)
        # Move the passed sockets above their destination range first so dup2 cannot clobber one.
        parked = [_dup_at_least(fd, first_free) for fd in pass_fds]
        for i, fd in enumerate(parked):
            os.dup2(fd, 3 + i, inheritable=True)
        os.closerange(first_free, _max_fd())
        if set_listen_pid:
            env = dict(env, LISTEN_PID=str(os.getpid()))
        os.chdir(cwd)
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 — report anything and never run master code
        try:
            os.write(2, ("dewy: cannot start %s: %s\n" % (argv[0], exc)).encode())
        finally:
            os._exit(127)


def _dup_at_least(fd: int, minimum: int) -> int:
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_DUPFD, minimum)


def become_subreaper() -> None:
    """Adopt the app's orphaned grandchildren so they are reaped here and never become zombies."""
    if _libc is not None:
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
