"""One master per workdir, and a workdir that cannot work is refused before anything starts (exit 2).

Items 2, 3, 4 and 8 of issue 6, end to end with real dewy-master processes.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from helpers import Load, alive, clean_environment, free_port, wait_until

NOT_WRITABLE = "/proc/1"  # a directory even root cannot write to (a chmod would not stop root)


def run_master(*args, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run `python -m dewy.master ARGS` to its end (it is expected to exit by itself)."""
    return subprocess.run([sys.executable, "-m", "dewy.master", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=clean_environment())


def write_ini(path, registry, workdir, port: int) -> None:
    path.write_text("[dewy]\nregistry = %s\nport = 127.0.0.1:%d\napp = %s current/app.py\nworkdir = %s\n"
                    % (registry.url, port, sys.executable, workdir))


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.timeout(90)
def test_a_second_master_on_the_workdir_exits_2_naming_the_first(make_master, registry, tmp_path):
    """Two masters on one workdir: the second exits 2 naming the first's pid, also after a USR2 of the first;
    the first keeps serving, its notify socket and status untouched."""
    registry.publish("1.0.0")
    first = make_master(ready="notify:10s").start(wait_version="1.0.0")
    notify_sock = first.workdir / ".dewy" / "notify.sock"
    assert notify_sock.exists()
    second_ini = tmp_path / "second.ini"
    port = free_port()
    write_ini(second_ini, registry, first.workdir, port)

    check = run_master("-c", second_ini, "--check")
    assert check.returncode == 0 and check.stdout.endswith(": OK\n"), check
    assert "warning: workdir %s is in use by dewy-master pid %d" % (first.workdir, first.pid) in check.stderr

    with Load(first.port, threads=2) as load:
        for round_ in ("before", "after USR2"):
            done = run_master("-c", second_ini)
            assert done.returncode == 2, (round_, done)
            assert "in use by another dewy-master (pid %d" % first.pid in done.stderr, (round_, done.stderr)
            assert port_is_free(port), "the second master must not bind before it has the workdir"
            assert notify_sock.exists() and first.status()["pid"] == first.pid
            if round_ == "before":
                old_poller = first.status()["poller_pid"]
                first.signal(signal.SIGUSR2)
                first.wait_for(lambda s: s.get("poller_pid") not in (None, old_poller) and s.get("state") == "running",
                               30, "the upgraded master's new poller")
        assert load.wait_requests(20)
        adopted_app = first.status()["app_pids"][0]
        upgraded_at = len(first.log_text())
        first.deploy("1.1.0", load=load)  # the notify socket still works: ready = notify
        first.quiesce()
    assert load.failed == 0
    # The app adopted across USR2 still writes to its stderr pipe, now read by the new image.
    assert "sample-app[%d]: got SIGTERM" % adopted_app in first.log_text()[upgraded_at:]
    assert first.stop() == 0
    # Released with the master: a new one may take the workdir.
    assert subprocess.run([sys.executable, "-m", "dewy.master", "-c", second_ini, "--check"], capture_output=True,
                          text=True, env=clean_environment()).stderr == ""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["directory", "file"])
def test_current_that_is_not_a_symlink_is_refused_at_start(registry, tmp_path, kind):
    """A `current` left by a deploy script: --check and the start both exit 2 with what to do; nothing is bound."""
    workdir = tmp_path / "w"
    workdir.mkdir()
    current = workdir / "current"
    if kind == "directory":
        current.mkdir()
        (current / "app.py").write_text("print('old')\n")
    else:
        current.write_text("x")
    ini, port = tmp_path / "dewy.ini", free_port()
    write_ini(ini, registry, workdir, port)
    message = "%s is a %s, not a symlink" % (current, kind)
    check = run_master("-c", ini, "--check")
    assert check.returncode == 2 and message in check.stderr and "OK" not in check.stdout, check
    done = run_master("-c", ini)
    assert done.returncode == 2, done
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert port_is_free(port)
    assert current.is_dir() if kind == "directory" else current.read_text() == "x"  # left alone


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["file", "not-writable", "cannot-create"])
def test_unusable_workdir_is_refused_with_exit_2(registry, tmp_path, case):
    """workdir is a file, not writable, or cannot be created: --check finds it; the start exits 2, no traceback."""
    workdir = {"file": tmp_path / "w", "not-writable": NOT_WRITABLE, "cannot-create": NOT_WRITABLE + "/dewy"}[case]
    if case == "file":
        workdir.write_text("not a directory")
    expected = {"file": "exists and is not a directory", "not-writable": "is not writable",
                "cannot-create": "cannot be created"}[case]
    ini, port = tmp_path / "dewy.ini", free_port()
    write_ini(ini, registry, workdir, port)
    check = run_master("-c", ini, "--check")
    assert check.returncode == 2 and expected in check.stderr, check
    done = run_master("-c", ini)
    assert done.returncode == 2, done
    assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert port_is_free(port)


@pytest.mark.timeout(30)
def test_port_in_use_leaves_no_workdir_behind(registry, tmp_path):
    """A taken port: exit 3, and the workdir that did not exist before still does not."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    ini = tmp_path / "dewy.ini"
    write_ini(ini, registry, tmp_path / "w", holder.getsockname()[1])
    try:
        done = run_master("-c", ini)
    finally:
        holder.close()
    assert done.returncode == 3 and "address already in use" in done.stderr, done
    assert not (tmp_path / "w").exists()


@pytest.mark.timeout(90)
def test_a_refusal_says_what_the_app_wrote_to_stderr(make_master, registry):
    """The reason of a refused release carries the tail of the app's stderr, not only its exit code;
    the app's output still reaches the master's stderr."""
    registry.publish("1.0.0")
    master = make_master(ready="delay:0.5s").start(wait_version="1.0.0")
    registry.publish("1.1.0", behaviour="crash-at-start")
    st = master.wait_for(lambda s: (s.get("last_deploy") or {}).get("version") == "1.1.0"
                         and s["last_deploy"].get("ok") is False, 30, "the deploy of 1.1.0 to fail")
    error = st["last_deploy"]["error"]
    assert "exited with code 3" in error and "crash-at-start: exiting with 3" in error, error
    refused = master.workdir / ".dewy" / "refused.json"  # written by the poller once it has the answer
    wait_until(lambda: refused.exists() and "crash-at-start: exiting with 3" in refused.read_text(), 10,
               "refused.json to carry the app's last words", master.details)
    assert "crash-at-start: exiting with 3" in master.log_text()  # forwarded
    assert master.get() == (200, "1.0.0\n")
    assert all(alive(p) for p in master.status()["app_pids"])
