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


class Credentials:
    """Who a child runs as (the `user` / `group` settings): uid, gid, supplementary groups, name, home."""

    __slots__ = ("uid", "gid", "groups", "name", "home")

    def __init__(self, uid: int, gid: int, groups: list, name: str, home: str):
        self.uid, self.gid, self.groups, self.name, self.home = uid, gid, list(groups), name, home

    def __repr__(self):
        return "Credentials(%s uid=%d gid=%d groups=%s)" % (self.name, self.uid, self.gid, self.groups)

    def environment(self, env: dict) -> dict:
        """env with USER, LOGNAME and HOME of this user (what login and systemd's User= set)."""
        return dict(env, USER=self.name, LOGNAME=self.name, HOME=self.home)


_resolved = {}  # (user, group) -> Credentials: the NSS lookups are done once, in the master, before any fork


def credentials(user: str, group: str = "") -> "Credentials | None":
    """The Credentials of the `user` / `group` settings; None when user is empty (children run as the master).

    The supplementary groups are the user's from the group database (initgroups), with group as the
    primary one. KeyError when the user or group does not exist (the config validated that it did).
    """
    if not user:
        return None
    key = (user, group)
    if key not in _resolved:
        import grp
        import pwd
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        else:
            gid = entry.pw_gid
        groups = sorted(set(os.getgrouplist(entry.pw_name, gid)))
        _resolved[key] = Credentials(entry.pw_uid, gid, groups, entry.pw_name, entry.pw_dir or "/")
    return _resolved[key]


def config_credentials(cfg) -> "Credentials | None":
    """The Credentials the app, the poller and the hooks run as under cfg; None: as the master itself.

    Also None when the master already runs as exactly that user and group (nothing to change)."""
    creds = credentials(getattr(cfg, "user", "") or "", getattr(cfg, "group", "") or "")
    if creds is None or (os.geteuid() == creds.uid and os.getegid() == creds.gid):
        return None
    return creds


def privilege_problem(cfg) -> "str | None":
    """Why the `user` / `group` settings cannot be honoured by this master (not root), as a one-line
    error naming the source and the key; None when they can (or are not set)."""
    user = getattr(cfg, "user", "") or ""
    try:
        creds = config_credentials(cfg)
    except (KeyError, ValueError, OverflowError) as exc:
        return "%s: %s = \"%s\": cannot resolve the user or group: %s" % (cfg.source, _label(cfg, "user"), user, exc)
    if creds is None:
        return None
    if os.geteuid() != 0:
        return ("%s: %s = \"%s\": dewy-master runs as uid %d, not root, so it cannot run the app and the poller as "
                "another user; start dewy-master as root (systemd: no User= in the unit) or leave user empty"
                % (cfg.source, _label(cfg, "user"), user, os.geteuid()))
    blocked = _not_executable_by(sys.executable, creds)
    if blocked:
        # Else the poller would fail to start, again and again, with "Permission denied".
        return ("%s: %s = \"%s\": user %s cannot execute the poller's interpreter %s: %s"
                % (cfg.source, _label(cfg, "user"), user, creds.name, sys.executable, blocked))
    return None


def _not_executable_by(path: str, creds: "Credentials") -> "str | None":
    """Why creds cannot execute path (a directory on the way they may not search, or the file itself), or None."""
    import stat

    from dewy.workdir import permitted
    path = os.path.realpath(path)
    steps = []
    parent = os.path.dirname(path)
    while True:
        steps.append(parent)
        if parent == os.path.dirname(parent):
            break
        parent = os.path.dirname(parent)
    for directory in reversed(steps):
        try:
            st = os.stat(directory)
        except OSError:
            return None  # cannot tell: let exec say
        if not permitted(st, creds, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            return "%s (mode %04o, owner uid %d) is not searchable by uid %d" % (
                directory, stat.S_IMODE(st.st_mode), st.st_uid, creds.uid)
    st = os.stat(path)
    if not permitted(st, creds, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
        return "it is mode %04o, owner uid %d" % (stat.S_IMODE(st.st_mode), st.st_uid)
    return None


def _label(cfg, key: str) -> str:
    return "--" + key if cfg.source == "command line" else "[dewy] " + key


def drop_privileges(creds: "Credentials") -> None:
    """In a forked child before exec: become creds (groups first, then gid, then uid: after setuid the
    rest would no longer be allowed). Raises OSError when the kernel refuses."""
    os.setgroups(creds.groups)
    os.setresgid(creds.gid, creds.gid, creds.gid)
    os.setresuid(creds.uid, creds.uid, creds.uid)
    if os.getuid() != creds.uid or os.geteuid() != creds.uid:  # never exec as root by mistake
        raise OSError("could not become uid %d" % creds.uid)


def _max_fd() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 65536


def fork_exec(argv, env: dict, cwd: str, pass_fds=(), set_listen_pid: bool = False, stderr: int | None = None,
              creds: "Credentials | None" = None) -> int:
    """Start argv in its own process group with exactly fds 0-2 and pass_fds at 3, 4, ...; return its pid.

    With set_listen_pid the child's LISTEN_PID is its own pid, as sd_listen_fds(3) requires,
    which is why this forks by hand instead of using posix_spawn. The child gets SIGTERM if the
    master dies without stopping it (SIGKILL), so it cannot keep the ports from a restarted master.
    With stderr (a descriptor) the child's fd 2 is that one instead of the master's. With creds the
    child drops to that user and group before it execs (USER, LOGNAME and HOME follow).
    """
    pass_fds = list(pass_fds)
    if creds is not None:
        env = creds.environment(env)
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    # Child: only async-signal-safe-ish os calls until execve; never return into the master's code.
    try:
        os.setpgid(0, 0)
        if creds is not None:
            # Before PR_SET_PDEATHSIG: the kernel clears the parent-death signal when the uid/gid change.
            drop_privileges(creds)
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


def children(pid: int) -> list:
    """The pids of pid's children: /proc/PID/task/*/children, or (a kernel without it) a scan of /proc."""
    found = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return found
    try:
        for tid in tids:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as fh:
                found += [int(p) for p in fh.read().split()]
        return found
    except FileNotFoundError:
        pass  # CONFIG_PROC_CHILDREN is off
    except OSError:
        return found
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as fh:
                    # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
                    if int(fh.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        found.append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def environ_value(pid: int, name: str) -> "str | None":
    """The value of environment variable name in process pid (as it was at its execve), or None."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def socket_inodes(pid: int) -> set:
    """The inodes of the sockets process pid has open (from /proc/PID/fd; empty when it cannot be read)."""
    inodes = set()
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, name))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def describe(pid: int) -> str:
    """`pid 123 (python3 serve.py)`, for a log line about a process."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        argv = []
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv[:3]))
    return "pid %d (%s)" % (pid, command[:120] or "?")
