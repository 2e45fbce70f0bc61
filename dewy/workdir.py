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


def nearest_existing(path: str) -> str:
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
        base = nearest_existing(os.path.dirname(workdir))
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
            fd = _open_own_file(path, 0o644)
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


_OPEN_SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _open_own_file(path: str, mode: int) -> int:
    """Open (or create) a regular file of this process's user for reading and writing, never through a symlink.

    With the `user` setting .dewy/ belongs to that user, who could plant a symlink, a FIFO or a hard
    link where the root master keeps its lock: anything that is not a plain file of ours with one link
    is removed and the file created afresh (O_EXCL), so the master never writes to a file it did not make.
    """
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | _OPEN_SAFE)
        except FileNotFoundError:
            try:
                return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_SAFE, mode)
            except FileExistsError:
                continue  # another master created it just now: open that one
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise
            _remove_entry(path)
            continue
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1:
            return fd
        os.close(fd)
        _remove_entry(path)
    raise OSError(errno.EEXIST, "%s keeps being replaced" % path)


def _remove_entry(path: str) -> None:
    """Unlink a file, symlink, FIFO or socket that stands where dewy keeps one of its own (not a directory)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise OSError(errno.EISDIR, "%s is a directory" % path) from None


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
        fd = os.open(path, os.O_RDONLY | _OPEN_SAFE)
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


WORKDIR_MODE = 0o755  # the app's user must reach current/ and releases/ (it runs there)
STATE_MODE = 0o700  # .dewy/: dewy's state; with `user`, owned by that user (the poller writes there)
RELEASES_MODE = 0o755
RELEASES = "releases"
# The master's own entries in .dewy/: they stay root's when .dewy/ is given to the `user`.
MASTER_FILES = ("status.json", LOCK_FILE, "control.sock", "notify.sock", "paused.json")
SHARED_FILE_MODE = 0o644  # paused.json: written by the master, read by the poller before each deploy


def create(workdir: str) -> None:
    """Create workdir (mode 0755), workdir/.dewy (0700) and workdir/releases (0755); WorkdirError when that fails.

    The modes are set explicitly (the umask of whoever started dewy must not decide them)."""
    try:
        for path, mode in ((workdir, WORKDIR_MODE), (state_path(workdir), STATE_MODE),
                           (os.path.join(workdir, RELEASES), RELEASES_MODE)):
            if not os.path.isdir(path):
                os.makedirs(path, mode=mode, exist_ok=True)
                os.chmod(path, mode)  # makedirs' mode is filtered by the umask
    except OSError as exc:
        raise WorkdirError("cannot create %s: %s" % (state_path(workdir), exc.strerror)) from None


def give_to(workdir: str, creds) -> None:
    """Hand what the poller writes to the `user` setting's user (creds: uid, gid): .dewy/ (0700, but the
    master's own files there stay root's) and releases/ (0755). WorkdirError when the user cannot reach them.

    A tree that already belongs to the user is left alone; one that does not (dewy ran as root before,
    or as another user) is chowned bottom-up through directory descriptors without following symlinks,
    and files with more than one link are skipped, so nothing outside the workdir changes owner.
    """
    path, seen, child_uid = os.path.realpath(workdir), set(), None
    while path not in seen:  # the workdir and every directory above it
        seen.add(path)
        st = os.stat(path)
        if not _can_search(st, creds):
            raise WorkdirError("%s (mode %04o, owner uid %d) is not searchable by user %s (uid %d), who runs the "
                               "poller and the app there; chmod o+x it or choose another workdir"
                               % (path, stat.S_IMODE(st.st_mode), st.st_uid, creds.name, creds.uid))
        # Writable by the user, the workdir (or a directory above it) could have .dewy/ or the workdir itself
        # swapped for a symlink, and the root master would write its files wherever that points. A sticky
        # directory (/tmp) is fine when what lies in it is not the user's.
        sticky_safe = child_uid is not None and st.st_mode & stat.S_ISVTX and child_uid != creds.uid
        if permitted(st, creds, stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH) and not sticky_safe:
            raise WorkdirError("%s (mode %04o, owner uid %d) is writable by user %s (uid %d): the root master must "
                               "not keep its files where that user can swap directories; make it root's and not "
                               "writable by %s (chown root: %s && chmod 0755 %s); dewy gives .dewy/ and releases/ "
                               "to the user itself" % (path, stat.S_IMODE(st.st_mode), st.st_uid, creds.name,
                                                        creds.uid, creds.name, path, path))
        child_uid = st.st_uid
        path = os.path.dirname(path)
    try:
        releases = os.path.join(workdir, RELEASES)
        if not os.path.lexists(releases):
            os.mkdir(releases, RELEASES_MODE)
        for top, mode, skip in ((state_path(workdir), STATE_MODE, MASTER_FILES), (releases, RELEASES_MODE, ())):
            _chown_tree(top, creds.uid, creds.gid, mode, skip)
        _chmod_entry(state_path(workdir), "paused.json", SHARED_FILE_MODE)
    except OSError as exc:
        raise WorkdirError("cannot give %s to user %s: %s" % (workdir, creds.name, exc)) from None


def permitted(st, creds, user_bit: int, group_bit: int, other_bit: int) -> bool:
    """Whether creds have a permission on a file with stat st (the owner, group, other bit that applies)."""
    if st.st_uid == creds.uid:
        return bool(st.st_mode & user_bit)
    if st.st_gid in creds.groups or st.st_gid == creds.gid:
        return bool(st.st_mode & group_bit)
    return bool(st.st_mode & other_bit)


def _can_search(st, creds) -> bool:
    """Whether creds may traverse a directory with stat st."""
    return permitted(st, creds, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)


def _chown_tree(top: str, uid: int, gid: int, mode: int, skip=()) -> None:
    """Make top (a real directory, not a symlink) and everything below it uid:gid, top with mode; nothing
    is followed. skip: names directly in top that keep their owner."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)  # while still ours: no CAP_FOWNER needed
        if st.st_uid != uid or st.st_gid != gid:
            for root, dirs, files, root_fd in os.fwalk(".", topdown=False, follow_symlinks=False, dir_fd=fd):
                names = files + dirs
                if root == ".":
                    names = [n for n in names if n not in skip]
                for name in names:
                    _chown_entry(root_fd, name, uid, gid)
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def _chown_entry(dir_fd: int, name: str, uid: int, gid: int) -> None:
    """chown one entry of dir_fd without following it; regular files only when they have one link."""
    st = os.lstat(name, dir_fd=dir_fd)
    if st.st_uid == uid and st.st_gid == gid:
        return
    if stat.S_ISREG(st.st_mode) and st.st_nlink != 1:
        return  # a hard link to a file elsewhere would give that file away too
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def _chmod_entry(directory: str, name: str, mode: int) -> None:
    """Set the mode of a regular file of ours in directory (never through a symlink); absent is fine."""
    try:
        fd = os.open(os.path.join(directory, name), os.O_RDONLY | _OPEN_SAFE)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def claim(workdir: str, bind=None, creds=None):
    """Check workdir, lock it, call bind() (the listeners), create what is missing; returns (Lock, bind()).

    The lock is taken before binding when .dewy/ exists (a second master then says who holds the
    workdir, not that its port is taken); a fresh workdir is created only after bind() succeeded, so
    a port already in use leaves no empty workdir behind. Raises WorkdirError (exit 2) or whatever
    bind() raises; a lock taken here is released again when bind() fails. With creds (the `user`
    setting) .dewy/ and releases/ are then given to that user (give_to).
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
    try:
        if lock is None:
            create(workdir)
            lock = Lock.acquire(workdir)
        if creds is not None:
            give_to(workdir, creds)
    except WorkdirError:
        if lock is not None:
            lock.close()
        _close_all(bound)
        raise
    return lock, bound


def _close_all(listeners) -> None:
    for listener in listeners or ():
        try:
            listener.close()
        except OSError:
            pass


# --- assets mode: the parents of `dir` ----------------------------------------------------------------
# With `user`, the root master creates the `dir` symlink, so no directory above `dir` may be changeable by that
# user (who could swap a parent for a symlink and have root create a link, or directories, wherever it likes).
# Checked at `--check` and at start (dewy.master.generation.dir_problem).

def _user_ids(user: str, group: str) -> tuple | None:
    """(uid, gids) of user (name or number) and its groups, plus group; None when the user is unknown."""
    import grp
    import pwd

    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        return None
    gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
    if group:
        try:
            gids.add(int(group) if group.isdigit() else grp.getgrnam(group).gr_gid)
        except (KeyError, ValueError):
            pass
    return pw.pw_uid, gids


def writable_parent(path: str, user: str, group: str = "") -> str | None:
    """The first directory above path that user (with its groups) can change, or None when there is none.

    A directory counts as changeable when the user owns it, may write it through a group or as anyone (a
    sticky directory such as /tmp only when what comes next below it is missing or the user's own: the user
    could create it), or when it is a symlink the user owns. Parents that do not exist yet are created by
    root, under the first one that exists."""
    ids = _user_ids(user, group)
    if ids is None or not path:
        return None
    uid, gids = ids
    below = None  # the component under `parent` on the way to path
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            st = None
        if st is not None:
            mode = st.st_mode
            if st.st_uid == uid and uid != 0:
                return parent
            by_group = mode & stat.S_IWGRP and st.st_gid in gids
            by_anyone = mode & stat.S_IWOTH
            if stat.S_ISDIR(mode) and (by_group or by_anyone):
                if not mode & stat.S_ISVTX:
                    return parent
                try:
                    under = os.lstat(below) if below else None
                except FileNotFoundError:
                    under = None
                if under is None or under.st_uid == uid:
                    return parent  # sticky, but the user can create (or owns) the next component
        if parent == os.path.dirname(parent):
            return None
        below, parent = parent, os.path.dirname(parent)
