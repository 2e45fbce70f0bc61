"""dewy.workdir: what makes a workdir unusable, the exclusive master lock, and the start-up order."""

import os
import subprocess
import sys

import pytest

from dewy import workdir


def test_a_fresh_or_prepared_workdir_has_no_problems(tmp_path):
    assert workdir.check(str(tmp_path / "new" / "deeper")) == []
    (tmp_path / "w" / "releases" / "r1").mkdir(parents=True)
    os.symlink("releases/r1", tmp_path / "w" / "current")
    assert workdir.check(str(tmp_path / "w")) == []


def test_a_file_as_workdir_is_a_problem(tmp_path):
    (tmp_path / "w").write_text("x")
    [problem] = workdir.check(str(tmp_path / "w"))
    assert "exists and is not a directory" in problem and str(tmp_path / "w") in problem


def test_a_workdir_under_a_file_cannot_be_created(tmp_path):
    (tmp_path / "f").write_text("x")
    [problem] = workdir.check(str(tmp_path / "f" / "w"))
    assert "cannot be created" in problem


def test_an_unwritable_place_is_a_problem():
    # /proc/1 refuses writes even to root; a chmod'ed directory would not stop root.
    [problem] = workdir.check("/proc/1/dewy-workdir")
    assert "cannot be created" in problem and "not writable" in problem
    assert any("not writable" in p for p in workdir.check("/proc/1"))


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_current_that_is_not_a_symlink_is_a_problem(tmp_path, kind):
    current = tmp_path / "current"
    current.mkdir() if kind == "directory" else current.write_text("x")
    [problem] = workdir.check(str(tmp_path))
    assert "is a %s, not a symlink" % kind in problem and "mv %s %s.old" % (current, current) in problem


@pytest.fixture
def other_master(tmp_path):
    """Another process holding tmp_path's lock (a real second process, as a second master would be)."""
    (tmp_path / ".dewy").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from dewy import workdir; "
                               "workdir.Lock.acquire(sys.argv[1]); print('locked', flush=True); sys.stdin.read()",
                               str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield holder
    holder.stdin.close()
    holder.wait(10)
    holder.stdout.close()


def test_the_lock_is_exclusive_and_names_the_holder(tmp_path, other_master):
    assert workdir.holder(str(tmp_path)) == other_master.pid
    with pytest.raises(workdir.WorkdirError) as exc:
        workdir.Lock.acquire(str(tmp_path))
    assert "in use by another dewy-master (pid %d" % other_master.pid in str(exc.value)
    other_master.stdin.close()
    other_master.wait(10)
    assert workdir.holder(str(tmp_path)) is None
    lock = workdir.Lock.acquire(str(tmp_path))
    assert (tmp_path / ".dewy" / "master.lock").read_text() == "%d\n" % os.getpid()
    lock.close()


def test_the_lock_survives_exec_and_is_found_again(tmp_path):
    """The in-place upgrade: the same pid execs and must adopt the lock it already holds."""
    (tmp_path / ".dewy").mkdir()
    script = tmp_path / "reexec.py"
    script.write_text(
        "import os, sys\nfrom dewy import workdir\n"
        "lock = workdir.Lock.acquire(sys.argv[1])\n"
        "if len(sys.argv) == 2:\n"
        "    os.execv(sys.executable, [sys.executable, __file__, sys.argv[1], str(lock.fd)])\n"
        "print(lock.fd == int(sys.argv[2]), workdir.holder(sys.argv[1]) == os.getpid(), flush=True)\n")
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["True", "True"], out


def test_claim_binds_before_creating_the_workdir(tmp_path):
    def bind():
        raise OSError("address already in use")
    with pytest.raises(OSError):
        workdir.claim(str(tmp_path / "w"), bind)
    assert not (tmp_path / "w").exists()
    lock, bound = workdir.claim(str(tmp_path / "w"), lambda: ["listeners"])
    assert bound == ["listeners"] and (tmp_path / "w" / ".dewy" / "master.lock").exists()
    lock.close()


def test_claim_of_a_locked_workdir_fails_before_binding(tmp_path, other_master):
    with pytest.raises(workdir.WorkdirError, match="pid %d" % other_master.pid):
        workdir.claim(str(tmp_path), lambda: pytest.fail("bound although the workdir is locked"))


def test_claim_refuses_a_real_current_before_binding(tmp_path):
    (tmp_path / "current").mkdir()
    with pytest.raises(workdir.WorkdirError, match="not a symlink"):
        workdir.claim(str(tmp_path), lambda: pytest.fail("bound although current is a directory"))
