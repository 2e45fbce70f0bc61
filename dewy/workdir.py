"""The master's claim on its workdir: checks before anything starts, and an exclusive lock.

One workdir, one master. `check()` finds what would make the master fail later (the workdir is a
file or not writable; `current` is a real directory left by a deploy script) so that both
`dewy-master --check` and the start-up can refuse with one clear line and exit 2 instead of a
traceback and a systemd restart loop. `claim()` is the start-up order: check, lock (when `.dewy/`
already exists), bind the listeners, and only then create the workdir, so a port that is already
taken leaves nothing behind.

The lock is an flock(2) on `.dewy/master.lock`, which holds the pid of the master. The descriptor is
deliberately inheritable: it survives the in-place upgrade's execve (same pid), where the new image
finds it again by inode (`Lock.acquire`). Every child the master starts gets only the descriptors it
is given (process.fork_exec closes the rest; subprocess closes them by default), so no app or poller
holds the lock after the master is gone.
"""

import errno
import fcntl
import os
import stat

STATE_DIR = ".dewy"
LOCK_FILE = "master.lock"
CURRENT = "current"


class WorkdirError(Exception):
    """The workdir cannot be used; str() is one line saying what is wrong and what to do."""


def state_path(workdir: str, *names: str) -> str:
    """A path under workdir/.dewy (nothing is created)."""
    return os.path.join(workdir, STATE_DIR, *names)


def lock_path(workdir: str) -> str:
    """Where the master lock of workdir lives."""
    return state_path(workdir, LOCK_FILE)


def _lstat(path: str):
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _nearest_existing(path: str) -> str:
    """path itself or its closest ancestor that exists (where a makedirs would start creating)."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check(workdir: str) -> list:
    """The problems that would stop a master in workdir, each one line (empty: usable).

    Nothing is created or changed. A workdir that does not exist yet is fine when it can be created.
    """
    exists = os.path.lexists(workdir)
    if exists and not os.path.isdir(workdir):
        return ["workdir %s exists and is not a directory; expected a directory dewy may fill "
                "(releases/, current, .dewy/)" % workdir]
    if not exists:
        base = _nearest_existing(os.path.dirname(workdir))
        if not os.path.isdir(base):
            return ["workdir %s cannot be created: %s is not a directory" % (workdir, base)]
        if not os.access(base, os.W_OK | os.X_OK):
            return ["workdir %s does not exist and cannot be created: %s is not writable by uid %d"
                    % (workdir, base, os.geteuid())]
        return []
    problems = []
    if not os.access(workdir, os.W_OK | os.X_OK):
        problems.append("workdir %s is not writable by uid %d; dewy needs to create releases/, current "
                        "and .dewy/ there" % (workdir, os.geteuid()))
    state = state_path(workdir)
    st_state = _lstat(state)
    if st_state is not None:
        if not stat.S_ISDIR(st_state.st_mode):
            problems.append("%s exists and is not a directory; dewy keeps its state there" % state)
        elif not os.access(state, os.W_OK | os.X_OK):
            problems.append("%s is not writable by uid %d" % (state, os.geteuid()))
    current = os.path.join(workdir, CURRENT)
    st_current = _lstat(current)
    if st_current is not None and not stat.S_ISLNK(st_current.st_mode):
        kind = "a directory" if stat.S_ISDIR(st_current.st_mode) else "a file"
        problems.append(
            "%s is %s, not a symlink: dewy switches `current` as a symlink to releases/<timestamp> and never "
            "replaces a real one. Move it away (e.g. mv %s %s.old); dewy then deploys the newest release "
            "from the registry" % (current, kind, current, current))
    return problems


class Lock:
    """The exclusive flock of one master on its workdir (held until close() or the process ends)."""

    def __init__(self, path: str, fd: int):
        self.path = path
        self.fd = fd

    @classmethod
    def acquire(cls, workdir: str) -> "Lock":
        """Take the lock of workdir (whose .dewy/ must exist); WorkdirError naming the holder's pid if taken.

        After an in-place upgrade this process already holds the lock through the descriptor the
        previous image left open: that one is adopted instead of locking a second time (which would
        conflict with ourselves, as flock locks belong to the open file, not the process).
        """
        path = lock_path(workdir)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WorkdirError("cannot open the workdir lock %s: %s" % (path, exc.strerror)) from None
        os.set_inheritable(fd, True)  # survives the in-place upgrade's execve; see the module docstring
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise WorkdirError("cannot lock %s: %s" % (path, exc.strerror)) from None
            pid = _read_pid(fd)
            inherited = _inherited_fd(fd) if pid == os.getpid() else None
            os.close(fd)
            if inherited is not None:
                return cls(path, inherited)
            raise WorkdirError(
                "workdir %s is in use by another dewy-master (pid %s holds %s); one master per workdir"
                % (workdir, pid if pid else "unknown", path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        return cls(path, fd)

    def close(self) -> None:
        """Release the lock (the file stays: removing it would race with a master about to lock it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _inherited_fd(probe: int) -> int | None:
    """Another descriptor of this process on the same file as probe (the lock a previous image held)."""
    want = os.fstat(probe)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd == probe:
            continue
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return fd
    return None


def holder(workdir: str) -> int | None:
    """The pid of the master holding workdir's lock, or None when nobody holds it (nothing is created)."""
    path = lock_path(workdir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _read_pid(fd) or -1
            return None
        return None
    finally:
        os.close(fd)


def create(workdir: str) -> None:
    """Create workdir and workdir/.dewy (mode 0700); WorkdirError when that fails."""
    try:
        os.makedirs(state_path(workdir), mode=0o700, exist_ok=True)
    except OSError as exc:
        raise WorkdirError("cannot create %s: %s" % (state_path(workdir), exc.strerror)) from None


def claim(workdir: str, bind=None):
    """Check workdir, lock it, call bind() (the listeners), create what is missing; returns (Lock, bind()).

    The lock is taken before binding when .dewy/ exists (a second master then says who holds the
    workdir, not that its port is taken); a fresh workdir is created only after bind() succeeded, so
    a port already in use leaves no empty workdir behind. Raises WorkdirError (exit 2) or whatever
    bind() raises; a lock taken here is released again when bind() fails.
    """
    problems = check(workdir)
    if problems:
        raise WorkdirError(problems[0])
    lock = Lock.acquire(workdir) if os.path.isdir(state_path(workdir)) else None
    try:
        bound = bind() if bind is not None else None
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    if lock is None:
        try:
            create(workdir)
            lock = Lock.acquire(workdir)
        except WorkdirError:
            _close_all(bound)
            raise
    return lock, bound


def _close_all(listeners) -> None:
    for listener in listeners or ():
        try:
            listener.close()
        except OSError:
            pass
