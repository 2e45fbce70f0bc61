"""Least privilege and file modes: `user` / `group`, the modes of everything dewy writes, the systemd unit.

The root tests run a real dewy-master as root with `user = nobody` and look at /proc/<pid>/status of
every process it started. On this kind of host the interpreter lives under /root (mode 0700), which
`nobody` cannot enter; the master under test therefore runs in a private mount namespace where a
tmpfs (0755) covers /root and the real /root/.pyenv is bound back in (see PYENV_WRAPPER). Nothing
on the host changes, and the namespace (with its mounts) ends with the master.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import Load, Master, Registry, clean_environment, wait_until

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "systemd" / "dewy.service"
NOBODY = pwd.getpwnam("nobody")
NOBODY_GROUP = grp.getgrgid(NOBODY.pw_gid)

# Run "$@" in a private mount namespace where /root is a 0755 tmpfs holding only the interpreter's tree
# (bound back from where it really is), so the `user` can exec it. $1 is a directory to park the mount on.
PYENV_WRAPPER = r'''
set -e
aside="$1"; real="$2"; shift 2
mount --bind "$real" "$aside"
mount -t tmpfs -o mode=0755,size=1m dewy-test-root /root
mkdir -p "$real"
mount --move "$aside" "$real"
exec "$@"
'''


def _interpreter_home() -> str | None:
    """The directory directly under /root that holds the interpreter (e.g. /root/.pyenv), if it is there."""
    exe = os.path.realpath(sys.executable)
    if not exe.startswith("/root/"):
        return None
    return "/root/" + exe[len("/root/"):].split("/", 1)[0]


def _nobody_can_exec_python() -> bool:
    """Whether a child that drops to nobody the way dewy does (setgroups, setgid, setuid, exec) runs python."""
    try:
        return not subprocess.run([sys.executable, "-c", "0"], user=NOBODY.pw_uid, group=NOBODY.pw_gid,
                                  extra_groups=[], capture_output=True, timeout=60).returncode
    except PermissionError:
        return False


def _root_reason() -> str | None:
    """Why the root tests cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root: the master must be root to run the app and the poller as `nobody`"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux) to run a command as nobody"
    return None


needs_root = pytest.mark.skipif(_root_reason() is not None, reason=_root_reason() or "")


@pytest.fixture
def base():
    """A fresh directory under /tmp that `nobody` may traverse (pytest's own tmp dirs are 0700); removed after."""
    # Not under TMPDIR: the session temp dir the tests use is 0700, and nobody must reach the workdir.
    path = Path(tempfile.mkdtemp(prefix="dewy-lp-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class ReadableRegistry(Registry):
    """A file:// registry the poller can read when it runs as another user (publish dirs 0755, files 0644)."""

    def __init__(self, base: Path):
        super().__init__(base)
        for path in (self.root, self.staging):
            os.chmod(path, 0o755)

    def _install(self, version: str, fill) -> Path:
        tmp = Path(tempfile.mkdtemp(prefix="publish-", dir=self.staging))
        fill(tmp / self.ARTIFACT)
        os.chmod(tmp / self.ARTIFACT, 0o644)
        os.chmod(tmp, 0o755)  # before the rename: the poller never sees an unreadable version
        if os.geteuid() == 0:
            os.chown(tmp, NOBODY.pw_uid, NOBODY.pw_gid)  # the poller writes its shipped_to record there
        dest = self.version_dir(version)
        os.rename(tmp, dest)
        return dest


@pytest.fixture
def wrapper(base):
    """The launcher argv that makes the interpreter reachable for `nobody` (empty when it already is)."""
    if _nobody_can_exec_python():
        return []
    home = _interpreter_home()
    if home is None:
        pytest.skip("nobody cannot execute %s and it is not under /root, where the test knows how to help"
                    % sys.executable)
    if shutil.which("unshare") is None:
        pytest.skip("nobody cannot execute %s and unshare (util-linux) is missing" % sys.executable)
    aside = base / "aside"
    aside.mkdir()
    launcher = ["unshare", "--mount", "--propagation", "private", "sh", "-c", PYENV_WRAPPER, "sh", str(aside), home]
    probe = subprocess.run(launcher + ["setpriv", "--reuid=%d" % NOBODY.pw_uid, "--regid=%d" % NOBODY.pw_gid,
                                       "--clear-groups", sys.executable, "-c", "import dewy"],
                           capture_output=True, text=True)
    if probe.returncode:
        pytest.skip("cannot make the interpreter reachable for nobody in a private mount namespace "
                    "(unshare/mount not permitted here?): %s" % (probe.stderr.strip() or probe.returncode))
    return launcher


def ids(pid: int) -> dict:
    """{"Uid": [real, effective, saved, fs], "Gid": [...], "Groups": [...]} from /proc/<pid>/status."""
    out = {}
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = [int(v) for v in value.split()]
    return out


def parse_ids(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = [int(v) for v in value.split()]
    return out


HOOK = "grep -E '^(Uid|Gid|Groups):' /proc/self/status > \"$DEWY_RELEASE_DIR/hook-ids\""


def walk(workdir: Path) -> dict:
    """relative path -> (kind, mode, uid, gid) for every entry of workdir (symlinks not followed)."""
    st = os.lstat(workdir)
    found = {".": ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)}
    for dirpath, dirnames, filenames in os.walk(workdir):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = ("link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode)
                    else "socket" if stat.S_ISSOCK(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other")
            found[os.path.relpath(path, workdir)] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return found


def check_modes(workdir: Path, user_uid: int, master_uid: int) -> list:
    """Every entry of workdir against the modes and owners dewy promises; the problems found."""
    problems = []
    entries = walk(workdir)
    master_files = {".dewy/status.json": 0o600, ".dewy/master.lock": 0o644, ".dewy/control.sock": 0o600,
                    ".dewy/notify.sock": 0o600}
    for rel, (kind, mode, uid, gid) in sorted(entries.items()):
        want_uid = user_uid
        want = None
        if rel in (".", "current"):
            want_uid, want = master_uid, (0o755 if rel == "." else None)
        elif rel in master_files:
            want_uid, want = master_uid, master_files[rel]
            if rel == ".dewy/notify.sock":
                want_uid = user_uid  # the app (the user) sends READY=1 to it
        elif rel == ".dewy":
            want = 0o700
        elif rel == "releases":
            want = 0o755
        elif rel.startswith(".dewy/cache"):
            want = 0o700 if kind == "dir" else 0o600
        elif rel.startswith(".dewy/"):
            want = 0o600 if kind == "file" else None
        if kind == "other":
            problems.append("%s is neither file, directory, symlink nor socket" % rel)
        if uid != want_uid:
            problems.append("%s (%s) is owned by uid %d, expected %d" % (rel, kind, uid, want_uid))
        if want is not None and mode != want:
            problems.append("%s (%s) has mode %04o, expected %04o" % (rel, kind, mode, want))
        if kind != "link" and mode & stat.S_IWOTH:
            problems.append("%s (%s) is world-writable (%04o)" % (rel, kind, mode))
    for rel in (".dewy", ".dewy/status.json", ".dewy/control.sock", ".dewy/audit.log", "releases", "current"):
        if rel not in entries:
            problems.append("%s is missing" % rel)
    return problems


# ------------------------------------------------------------------------------------ as root

@needs_root
def test_app_poller_and_hooks_run_as_user_master_as_root(base, wrapper, request):
    """user = nobody: app generations, poller and hooks run as nobody:nogroup, the master as root; v1 -> v2
    under load with zero failed requests; every path of the workdir has the promised owner and mode."""
    registry = ReadableRegistry(base)
    master = Master(base, registry, user="nobody", ready="notify:20s", health="http:/healthz",
                    health_interval="0.5s", before_deploy_hook=HOOK)
    master.launcher = wrapper
    request.node.dewy_masters = [master]
    try:
        registry.publish("1.0.0")
        master.start(wait_version="1.0.0", timeout=60)
        with Load(master.port) as load:
            assert load.wait_requests(20), load.summary()
            st = master.deploy("2.0.0", load=load, timeout=60)
            assert load.wait_requests(20), load.summary()
        assert load.failed == 0, load.summary()
        st = master.quiesce()
        assert st["last_deploy"]["ok"] and st["last_deploy"]["version"] == "2.0.0", st

        want_user = {"Uid": [NOBODY.pw_uid] * 4, "Gid": [NOBODY.pw_gid] * 4}
        assert ids(master.pid)["Uid"] == [0, 0, 0, 0], "the master must stay root"
        for what, pid in [("poller", st["poller_pid"])] + [("app", p) for p in st["app_pids"]]:
            got = ids(pid)
            assert {k: got[k] for k in want_user} == want_user, "%s pid %d runs as %s" % (what, pid, got)
            assert got["Groups"] == sorted(set(os.getgrouplist("nobody", NOBODY.pw_gid))), (what, got)
        hook = parse_ids((base / "workdir" / "current" / "hook-ids").read_text())
        assert hook["Uid"] == [NOBODY.pw_uid] * 4 and hook["Gid"] == [NOBODY.pw_gid] * 4, hook
        # ready = notify worked: the app (nobody) sent READY=1 to the master's socket in .dewy/
        assert master.app_env()["env"]["NOTIFY_SOCKET"] == str(base / "workdir" / ".dewy" / "notify.sock")
        assert "cannot write the shipped_to record" not in master.log_text()

        audit = [json.loads(l) for l in (base / "workdir" / ".dewy" / "audit.log").read_text().splitlines()]
        assert [e["result"] for e in audit] == ["deployed", "deployed"], audit
        problems = check_modes(base / "workdir", NOBODY.pw_uid, 0)
        assert not problems, "\n".join(problems)

        # An in-place upgrade (USR2): same root master pid, a fresh poller, again as nobody.
        old_poller = st["poller_pid"]
        master.signal(signal.SIGUSR2)
        st = master.wait_for(lambda s: s.get("poller_pid") not in (None, old_poller) and s.get("state") == "running",
                             60, "a new poller after USR2")
        assert "upgrading dewy-master in place" in master.log_text()
        assert ids(master.pid)["Uid"] == [0, 0, 0, 0]
        assert ids(st["poller_pid"])["Uid"] == [NOBODY.pw_uid] * 4
        assert master.stop() == 0
    finally:
        master.close()
        if master.running():
            master.kill_tree()


@needs_root
def test_master_never_follows_what_the_user_plants(base, wrapper, request):
    """The user owns .dewy/: a symlink to a root file where the master keeps its lock, control socket and
    notify socket and status file, and a FIFO where it reads the manifest, change nothing outside and
    hang nothing; the master replaces them and serves. (A planted paused.json pauses deploys: an unreadable
    pause counts as a pause, and the poller, which the user is, decides what it deploys anyway.)"""
    registry = ReadableRegistry(base)
    master = Master(base, registry, user="nobody")
    master.launcher = wrapper
    request.node.dewy_masters = [master]
    victim = base / "victim"
    victim.write_text("root's file\n")
    os.chmod(victim, 0o640)
    registry.publish("1.0.0")
    try:
        master.start(wait_version="1.0.0", timeout=60)
        assert master.stop() == 0
        state = base / "workdir" / ".dewy"
        for name in ("master.lock", "control.sock", "notify.sock", "status.json"):
            (state / name).unlink(missing_ok=True)
            os.symlink(victim, state / name)
            os.lchown(state / name, NOBODY.pw_uid, NOBODY.pw_gid)
        (state / "releases.json").unlink()
        os.mkfifo(state / "releases.json")  # (not status.json: the test's own reader would block on it)
        master.start(timeout=60)
        # The app of `current` serves; the manifest (a FIFO) cannot be read, which is an error, never "empty"
        # (issue 16 item 7): nothing is recorded over it, so nothing new deploys until someone removes it.
        def answers():
            try:
                return master.get()[1] == "1.0.0\n"
            except OSError:
                return False
        wait_until(answers, 60, "1.0.0 answering", master.details)
        master.wait_for(lambda s: "releases.json: not a regular file" in (s.get("last_error") or ""), 30,
                        "the unreadable manifest to show as the last error")
        assert stat.S_ISFIFO(os.lstat(state / "releases.json").st_mode)
        assert victim.read_text() == "root's file\n"
        st = victim.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o640, 0), "the master changed a file through a symlink"
        lock = os.lstat(state / "master.lock")
        assert stat.S_ISREG(lock.st_mode) and lock.st_uid == 0, "the planted lock symlink was not replaced"
        assert stat.S_ISSOCK(os.lstat(state / "control.sock").st_mode)
        assert stat.S_ISREG(os.lstat(state / "status.json").st_mode)
        assert "cannot read the status file %s" % (state / "status.json") in master.log_text()  # not followed
        assert "not a regular file" in master.log_text()  # the FIFOs were noticed, not read
        assert master.stop() == 0
    finally:
        master.close()
        if master.running():
            master.kill_tree()


def _check(base: Path, user: str, group: str = "", as_nobody: list | None = None) -> subprocess.CompletedProcess:
    ini = base / "check.ini"
    ini.write_text("[dewy]\nregistry = file://%s\napp = /bin/true\nworkdir = %s\nuser = %s\n%s" % (
        base, base / "w", user, "group = %s\n" % group if group else ""))
    os.chmod(ini, 0o644)
    argv = [sys.executable, "-m", "dewy.master", "-c", str(ini), "--check"]
    if as_nobody is not None:
        (base / "w").mkdir(exist_ok=True)
        os.chown(base / "w", NOBODY.pw_uid, NOBODY.pw_gid)  # a workdir nobody could use: only `user` is wrong
        drop = ["setpriv", "--reuid=%d" % NOBODY.pw_uid, "--regid=%d" % NOBODY.pw_gid, "--clear-groups"]
        argv = as_nobody + drop + argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=clean_environment())


@pytest.mark.parametrize("user, group, expected", [
    ("no-such-user-dewy", "", '[dewy] user = "no-such-user-dewy": no such user on this host'),
    ("nobody", "no-such-group-dewy", '[dewy] group = "no-such-group-dewy": no such group on this host'),
])
def test_unknown_user_or_group_is_a_config_error(base, user, group, expected):
    out = _check(base, user, group)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(base / "check.ini") in lines[0] and expected in lines[0], out.stderr


@needs_root
def test_user_needs_a_root_master(base, wrapper):
    """As nobody, `user = root` cannot be honoured: one line naming file, key and value, exit 2; `user = nobody`
    (already that user) is fine."""
    out = _check(base, "root", as_nobody=wrapper)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and '%s: [dewy] user = "root": dewy-master runs as uid %d, not root' % (
        base / "check.ini", NOBODY.pw_uid) in lines[0], out.stderr
    ok = _check(base, "nobody", as_nobody=wrapper)
    assert ok.returncode == 0, ok


def test_group_without_user_is_a_config_error(base):
    ini = base / "g.ini"
    ini.write_text("[dewy]\nregistry = file://%s\napp = /bin/true\ngroup = %s\n" % (base, NOBODY_GROUP.gr_name))
    out = subprocess.run([sys.executable, "-m", "dewy.master", "-c", str(ini), "--check"], capture_output=True,
                         text=True, timeout=60, env=clean_environment())
    assert out.returncode == 2 and '[dewy] group = "%s": needs user' % NOBODY_GROUP.gr_name in out.stderr, out


# ------------------------------------------------------------------------------ any user

def test_workdir_modes_without_user(make_master, registry):
    """Without `user` everything belongs to the master's user, .dewy/ is 0700, the files in it 0600, the
    control socket 0600, the cache 0700/0600, and nothing is world-writable."""
    master = make_master(ready="notify:20s")
    registry.publish("1.0.0")
    master.start(wait_version="1.0.0")
    master.deploy("1.1.0")
    master.quiesce()
    me = os.geteuid()
    problems = check_modes(master.workdir, me, me)
    assert not problems, "\n".join(problems)


def test_nothing_listens_beyond_loopback_by_default(make_master, registry):
    """Defaults: metrics and trigger are off; the poller and the master listen on nothing but `port`."""
    from dewy.config import BY_NAME
    assert BY_NAME["metrics"].default == "" and BY_NAME["trigger"].default == ""
    master = make_master()
    registry.publish("1.0.0")
    st = master.start(wait_version="1.0.0").quiesce()
    import psutil
    for pid in [master.pid, st["poller_pid"]]:
        inet = [c for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        allowed = {int(master.ports[0].rpartition(":")[2])} if pid == master.pid else set()
        assert {c.laddr.port for c in inet} <= allowed, (pid, inet)


def test_systemd_unit_verifies(tmp_path):
    """contrib/systemd/dewy.service passes `systemd-analyze verify` (ExecStart pointed at this dewy-master)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    assert "\nExecStart=dewy-master " in text  # a bare name: systemd's search path (/usr/local/bin, /usr/bin)
    # the dewy-master beside this interpreter (tools/test-setup's .venv is not on PATH), else the one on PATH
    beside = os.path.join(os.path.dirname(sys.executable), "dewy-master")
    master = beside if os.access(beside, os.X_OK) else shutil.which("dewy-master")
    assert master, "no dewy-master beside %s nor on PATH: is dewy installed (tools/test-setup)?" % sys.executable
    unit = tmp_path / "dewy.service"
    unit.write_text(text.replace("=dewy-master ", "=%s " % os.path.realpath(master)))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # The warnings systemd-analyze prints for a unit it accepts (unknown keys, bad values) count as failures too.
    complaints = [l for l in (out.stdout + out.stderr).splitlines() if "dewy.service" in l]
    assert not complaints, complaints
    for option in ("NoNewPrivileges=true", "ProtectSystem=strict", "ReadWritePaths=/var/lib/dewy", "ProtectHome=true",
                   "PrivateTmp=true", "RestrictAddressFamilies=", "CapabilityBoundingSet="):
        assert "\n" + option in text, option
    assert "\nUser=" not in text, "the master runs as root and drops to `user` itself"


# --------------------------------------------------------------------------- TLS verification

def test_turning_tls_verification_off_is_explicit_and_warned(caplog, tmp_path, monkeypatch):
    """The options that turn TLS (or its verification) off each log a warning; without them nothing is said
    and the clients verify (requests' Session.verify stays True, grpc gets a secure channel)."""
    import logging
    from dewy import cache, notify, registry

    caplog.set_level(logging.WARNING)
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    monkeypatch.delenv("CONSUL_HTTP_SSL_VERIFY", raising=False)
    verified = cache.from_url("consul://127.0.0.1:1/dewy", str(tmp_path))
    assert verified.session.verify is not False
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    monkeypatch.setenv("CONSUL_HTTP_SSL_VERIFY", "false")
    unverified = cache.from_url("consul://127.0.0.1:1/dewy", str(tmp_path))
    assert unverified.session.verify is False
    assert "CONSUL_HTTP_SSL_VERIFY=false: the TLS certificate of 127.0.0.1:1 is NOT verified" in caplog.text
    caplog.clear()

    plain = registry.from_url("grpc://127.0.0.1:1?no-tls=true")
    plain._connect()
    plain._connect()
    plain.close()
    plain._connect()
    assert caplog.text.count("no-tls=true: plaintext") == 1, caplog.text  # once, not at every reconnect
    plain.close()
    caplog.clear()
    secure = registry.from_url("grpc://127.0.0.1:1")
    secure._connect()
    secure.close()
    assert not caplog.records, caplog.text

    notify.from_url("mail://relay.example:25/ops@example.com?tls=false")
    assert "tls=false: mail (and the login) go in plaintext" in caplog.text
    caplog.clear()
    notify.from_url("mail://relay.example:25/ops@example.com")
    assert not caplog.records, caplog.text


def test_a_workdir_the_user_could_write_is_refused(tmp_path):
    """give_to refuses a workdir the `user` may write (they could swap .dewy/ for a symlink the root master
    would write through), naming the directory and the fix; a root-owned 0755 one under a sticky /tmp is fine."""
    from dewy import workdir
    from dewy.master.process import Credentials

    me = Credentials(os.geteuid(), os.getegid(), [os.getegid()], "me", "/")
    wd = tmp_path / "w"
    wd.mkdir(mode=0o755)
    with pytest.raises(workdir.WorkdirError, match=r"%s \(mode 0755, owner uid %d\) is writable by user me" % (
            wd, os.geteuid())):
        workdir.give_to(str(wd), me)
    if os.geteuid() == 0:
        other = Credentials(NOBODY.pw_uid, NOBODY.pw_gid, [NOBODY.pw_gid], "nobody", "/")
        base = Path(tempfile.mkdtemp(prefix="dewy-lp-", dir="/tmp"))
        try:
            os.chmod(base, 0o777)
            with pytest.raises(workdir.WorkdirError, match="is writable by user nobody"):
                workdir.give_to(str(base), other)
            os.chmod(base, 0o755)
            workdir.create(str(base))
            workdir.give_to(str(base), other)  # /tmp is sticky and base is root's
            assert os.stat(base / "releases").st_uid == NOBODY.pw_uid
        finally:
            shutil.rmtree(base)


@needs_root
def test_an_interpreter_the_user_cannot_execute_is_a_config_error(base):
    """Without the mount namespace, nobody cannot reach this machine's interpreter: `--check` says so in one
    line (exit 2) instead of the master restarting a poller that fails with "Permission denied" forever."""
    if _nobody_can_exec_python():
        pytest.skip("nobody can execute %s on this machine: nothing to refuse" % sys.executable)
    out = _check(base, "nobody")
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    want = '[dewy] user = "nobody": user nobody cannot execute the poller\'s interpreter %s: ' % sys.executable
    assert len(lines) == 1 and want in lines[0] and "is not searchable by uid 65534" in lines[0], out.stderr
