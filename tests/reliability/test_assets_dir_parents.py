"""Assets mode with `user`: the root master creates the `dir` symlink, so a `dir` under a directory that user
can change (own, group- or world-writable, or a sticky one where the user may create the next component) is
refused at `--check` and at start: the user could otherwise swap a parent for a symlink and have root create
a link wherever it points (a real local account, nobody)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reliability.test_least_privilege import NOBODY, base, clean_environment, needs_root, wrapper  # noqa: F401


def _check(base, dir_path, launcher) -> subprocess.CompletedProcess:
    """`dewy-master --check` as root (through launcher: the interpreter made reachable for nobody)."""
    ini = base / "assets.ini"
    ini.write_text("[dewy]\nmode = assets\nregistry = file://%s\nworkdir = %s\nuser = nobody\ndir = %s\n"
                   % (base, base / "w", dir_path))
    os.chmod(ini, 0o644)
    return subprocess.run([*launcher, sys.executable, "-m", "dewy.master", "-c", str(ini), "--check"],
                          capture_output=True,
                          text=True, timeout=60, env=clean_environment())


@needs_root
@pytest.mark.parametrize("layout", ["owned-by-user", "world-writable", "missing-under-sticky"])
def test_a_dir_whose_parents_the_user_can_change_is_refused(base, wrapper, layout):
    parent = base / "site"
    if layout == "owned-by-user":
        parent.mkdir()
        os.chown(parent, NOBODY.pw_uid, NOBODY.pw_gid)
        target = parent / "www"
    elif layout == "world-writable":
        parent.mkdir()
        os.chmod(parent, 0o777)
        target = parent / "www"
    else:
        parent.mkdir()
        os.chmod(parent, 0o1777)  # like /tmp: nobody may create `new` below it
        target = parent / "new" / "www"
    out = _check(base, target, wrapper)
    assert out.returncode == 2, out
    assert "can be changed by user nobody" in out.stderr and str(parent) in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@needs_root
def test_a_dir_under_root_only_parents_is_accepted(base, wrapper):
    (base / "srv").mkdir()
    os.chmod(base / "srv", 0o755)
    out = _check(base, base / "srv" / "www", wrapper)
    assert out.returncode == 0, out
