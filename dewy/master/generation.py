"""One app generation: a process started from one release on the master's sockets.

Plain data: the lifecycle (lifecycle.py) moves it from starting to serving to retiring, and the
process behind it is started and signalled by the master's I/O shell (arbiter.py).
"""

import os

STARTING, SERVING, RETIRING, EXITED = "starting", "serving", "retiring", "exited"


class Generation:
    """An app process, its release, and where it is in its life (starting -> serving -> retiring)."""

    def __init__(self, number: int, pid: int, version: str | None, release_dir: str | None,
                 reason: str, started_at: float, state: str = STARTING):
        self.number = number
        self.pid = pid  # also its process group id: fork_exec makes it a group leader
        self.version = version
        self.release_dir = release_dir
        self.reason = reason  # why it was started: initial, deploy, restart, respawn, rollback
        self.state = state
        self.started_at = started_at  # monotonic clock
        self.ready_kind, self.ready_timeout = "delay", 0.0  # pinned when spawned: a reload must not change them
        self.ready_path = ""  # ready = http: the path asked
        self.ready_deadline: float | None = None  # ready by then (delay) or failed (notify)
        self.kill_deadline: float | None = None  # while retiring: KILL at this time
        self.ready_at: float | None = None
        self.exit_status: int | None = None  # wait status once the leader is reaped
        # HTTP checks (ready = http:, health): when to ask next, whether a probe is out, what it last said.
        self.probe_at: float | None = None
        self.probing = False
        self.probe_detail: str | None = None
        self.probe_answered = False  # probe_detail is this generation's own answer (it beats another's)
        self.health_failures = 0
        self.rollback_from: str | None = None  # `dewy rollback`: the version this generation replaces
        self.config_epoch = 0  # the lifecycle's reload count when it was started (a reload since: not its fault)

    @property
    def alive(self) -> bool:
        """True until the leader process has been reaped."""
        return self.exit_status is None

    def label(self) -> str:
        """How logs name this generation."""
        return "generation %d (pid %d, %s)" % (self.number, self.pid, self.version or "unknown version")

    def log_fields(self) -> dict:
        """The structured log fields of a line about this generation (`extra=`): version, generation, app_pid."""
        return {"version": self.version, "generation": self.number, "app_pid": self.pid}

    def to_state(self, now: float) -> dict:
        """What an in-place upgraded master needs to keep managing this generation (from_state reverses it)."""
        rel = lambda t: None if t is None else t - now  # noqa: E731 — monotonic clocks do not survive exec
        return {"number": self.number, "pid": self.pid, "version": self.version,
                "release_dir": self.release_dir, "reason": self.reason, "state": self.state,
                "age": now - self.started_at, "ready_in": rel(self.ready_deadline),
                "kill_in": rel(self.kill_deadline), "ready_kind": self.ready_kind,
                "ready_timeout": self.ready_timeout, "ready_path": self.ready_path,
                "ready_age": None if self.ready_at is None else now - self.ready_at}

    @classmethod
    def from_state(cls, d: dict, now: float) -> "Generation":
        """Rebuild a Generation handed over by the previous master image."""
        gen = cls(d["number"], d["pid"], d["version"], d["release_dir"], d["reason"],
                  started_at=now - d["age"], state=d["state"])
        gen.ready_deadline = None if d["ready_in"] is None else now + d["ready_in"]
        gen.kill_deadline = None if d["kill_in"] is None else now + d["kill_in"]
        gen.ready_kind = d.get("ready_kind", "delay")
        gen.ready_timeout = d.get("ready_timeout", 0.0)
        gen.ready_path = d.get("ready_path", "")
        if d.get("ready_age") is not None:
            gen.ready_at = now - d["ready_age"]
        return gen

    def __repr__(self):
        return "<Generation %d pid=%d %s %s>" % (self.number, self.pid, self.version, self.state)


def left_behind(pid: int, live: dict, listener_inodes: set) -> str | None:
    """Whose leftover process pid (an orphan the master adopted as subreaper) is: `generation 3` when it was
    started by a generation that no longer starts or serves (DEWY_GENERATION in its environment), or `a generation
    that has ended` when it holds dewy's listening sockets outside every live generation's process group; None when
    it belongs to a live generation or to no generation at all (a hook's orphan, say). live: {number: pgid}."""
    from .process import environ_value, socket_inodes
    try:
        if os.getpgid(pid) in live.values():
            return None  # still in a live generation's group: that generation's stop reaches it
    except OSError:
        return None
    number = environ_value(pid, "DEWY_GENERATION")
    if number is not None and number.isdigit():
        return None if int(number) in live else "generation %s" % number
    if listener_inodes & socket_inodes(pid):
        return "a generation that has ended (it holds dewy's listening sockets)"
    return None


def command_problem(argv, path: str | None, cwd: str) -> str | None:
    """Why argv[0] cannot be executed at all (missing, not a file, not executable), or None.

    Checked before forking, the way execvp(3) looks it up (PATH when it has no '/'), so that a typo in
    `app` is reported as what it is (a configuration error) instead of as a release that failed to start.
    """
    if not argv:
        return "the app command is empty"
    program = argv[0]
    if "/" in program:
        candidates = [program if os.path.isabs(program) else os.path.join(cwd, program)]
    else:
        dirs = (path if path is not None else os.defpath).split(os.pathsep)
        candidates = [os.path.join(d or ".", program) if os.path.isabs(d or ".") else
                      os.path.join(cwd, d or ".", program) for d in dirs]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return None
    where = candidates[0] if "/" in program else "PATH"
    if "/" in program and os.path.isfile(candidates[0]):
        return "cannot execute %s: it is not executable" % program
    if "/" in program and os.path.exists(candidates[0]):
        return "cannot execute %s: it is not a file" % program
    return "cannot execute %s: no such file (looked in %s)" % (program, where)


def release_lacks_program(argv, workdir: str, new_dir: str, old_dir: str | None) -> str | None:
    """The path (inside a release) of argv[0] when it runs from `current/` and the new release lacks it while
    the release before had it — the release's fault, not the ini's — else None."""
    program = argv[0] if argv else ""
    link = os.path.join(workdir, "current") + "/"
    if not old_dir or not program.startswith(link):
        return None
    inside = program[len(link):]
    new, old = os.path.join(new_dir, inside), os.path.join(old_dir, inside)
    if os.path.isfile(old) and not (os.path.isfile(new) and os.access(new, os.X_OK)):
        return inside
    return None


def dir_problem(config) -> str | None:
    """Why the assets-mode `dir` cannot be kept as a symlink to the newest release: something that is not a
    symlink is there (dewy never replaces a real file or directory, as with `current`); None when it can."""
    path = config.dir if config.mode == "assets" else ""
    if path and getattr(config, "user", ""):
        from dewy.workdir import writable_parent  # the root master makes the link: no parent may be the user's

        unsafe = writable_parent(path, config.user, getattr(config, "group", "") or "")
        if unsafe:
            return ("%s, above %s, can be changed by user %s: the root master would create the link wherever that "
                    "user points it. Use a dir whose parents only root can write (e.g. /srv/www owned by root)"
                    % (unsafe, path, config.user))
    if not path or not os.path.lexists(path) or os.path.islink(path):
        return None
    kind = "a directory" if os.path.isdir(path) else "a file"
    return ("%s is %s, not a symlink: dewy keeps `dir` as a symlink to the newest release and never replaces a "
            "real one. Move it away (e.g. mv %s %s.old); dewy then points it at the release that serves"
            % (path, kind, path, path))


def startup_problem(config) -> str | None:
    """Why the configured `app` can never run, found before anything starts (None when it may); also why the
    `user` / `group` settings cannot be honoured (a master that is not root).

    Only commands looked up in PATH and absolute paths outside the workdir are checked: a program inside
    a release (current/bin/server) may not exist before the first deploy.
    """
    from .process import privilege_problem  # `user` / `group` need a root master
    problem = privilege_problem(config)
    if problem:
        return problem
    problem = dir_problem(config)
    if problem:
        where = "[dewy] dir" if config.source != "command line" else "--dir"
        return "%s: %s: %s" % (config.source, where, problem)
    if config.mode != "server" or not config.app:
        return None
    program = config.app[0]
    workdir = config.workdir.rstrip("/") + "/"
    if "/" in program and (program + "/").startswith(workdir):
        return None
    problem = command_problem(list(config.app), os.environ.get("PATH"), config.workdir)
    if problem is None:
        return None
    where = "[dewy] app" if config.source != "command line" else "the app command (after --)"
    return "%s: %s: %s%s" % (config.source, where, problem, _other_current_hint(program, config))


def _other_current_hint(program: str, config) -> str:
    """A hint when an absolute app path runs from another directory's `current/` (Dewy's README runs
    `/opt/myapp/current/myapp` from /opt/myapp, its workdir): dewy keeps `current` in its workdir, so the
    operator most likely meant that directory as the workdir; '' otherwise."""
    head, sep, _ = program.partition("/current/")
    if not os.path.isabs(program) or not sep or not head:
        return ""
    flag = "workdir = %s" % head if config.source != "command line" else "--workdir %s" % head
    return ("; dewy keeps `current` in its workdir (%s), so a path under %s/current/ exists only once that is "
            "the workdir: give %s (Dewy used the directory it was started in)" % (config.workdir, head, flag))
