"""`dewy history` and `dewy status`, run by root, read `.dewy/` — which `user` may write. What that user
plants there (a FIFO, a symlink to /dev/zero or to a root-only file) neither hangs them, eats memory nor gets
printed; a real unprivileged account (nobody) is told "permission denied", not "nothing ran there"."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dewy import audit
from reliability.test_least_privilege import NOBODY, base, needs_root, wrapper  # noqa: F401 - fixtures

ENTRY = {"time": "2026-12-08T03:00:00Z", "version": "1.0.0", "result": "deployed", "previous_version": None}


def _dewy(*args, launcher=(), timeout: float = 20) -> subprocess.CompletedProcess:
    """Run `python -m dewy ARGS` (through launcher: as nobody) with this checkout on PYTHONPATH."""
    return subprocess.run([*launcher, sys.executable, "-m", "dewy", *args], capture_output=True, text=True,
                          timeout=timeout, cwd="/")


@pytest.fixture
def workdir(tmp_path):
    work = tmp_path / "work"
    (work / ".dewy").mkdir(parents=True, mode=0o700)
    os.chmod(work, 0o755)
    os.chmod(tmp_path, 0o755)
    return work


@pytest.mark.parametrize("plant", ["fifo", "dev-zero", "root-only-file"])
def test_history_refuses_what_is_planted_as_the_audit_log(workdir, tmp_path, plant):
    log = workdir / ".dewy" / "audit.log"
    secret = tmp_path / "root-only"
    secret.write_text(json.dumps(dict(ENTRY, reason="ROOT-ONLY-SECRET")) + "\n")
    os.chmod(secret, 0o600)
    if plant == "fifo":
        os.mkfifo(log)
    elif plant == "dev-zero":
        os.symlink("/dev/zero", log)
    else:
        os.symlink(secret, log)
    out = _dewy("history", "--workdir", str(workdir))  # a hang or a memory blow-up fails by the timeout
    assert out.returncode == 1, out
    assert "ROOT-ONLY-SECRET" not in out.stdout + out.stderr
    assert "cannot read %s" % log in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_history_bounds_lines_and_strips_control_characters(workdir):
    log = workdir / ".dewy" / "audit.log"
    with open(log, "wb") as fh:
        fh.write(b"x" * (3 * audit.MAX_LINE) + b"\n")  # no JSON, and longer than any entry
        fh.write(json.dumps(dict(ENTRY, result="refused", error="bad \x1b[2J\x1b]0;owned\x07")).encode() + b"\n")
    out = _dewy("history", "--workdir", str(workdir))
    assert out.returncode == 0, out
    assert "refused" in out.stdout and "\x1b" not in out.stdout and "\x07" not in out.stdout, repr(out.stdout)


@needs_root
@pytest.mark.parametrize("command", ["history", "status"])
def test_an_unprivileged_user_is_told_permission_denied(base, wrapper, command):
    workdir = base / "work"
    (workdir / ".dewy").mkdir(parents=True, mode=0o700)
    os.chmod(workdir, 0o755)
    (workdir / ".dewy" / "audit.log").write_text(json.dumps(ENTRY) + "\n")
    (workdir / ".dewy" / "status.json").write_text(json.dumps({"version": "1.0.0"}))
    as_nobody = [*wrapper, "setpriv", "--reuid=%d" % NOBODY.pw_uid, "--regid=%d" % NOBODY.pw_gid, "--clear-groups"]
    out = _dewy(command, "--workdir", str(workdir), launcher=as_nobody)
    assert out.returncode != 0, out
    assert "permission denied" in out.stderr, out.stderr
    assert "no dewy master has run there" not in out.stderr and "Traceback" not in out.stderr, out.stderr
