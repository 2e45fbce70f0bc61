"""tools/build-dist, run once per session: its outputs are what the tests in this directory install and run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Path:
    """The directory tools/build-dist built into (wheel, sdist, .pyz, and .deb where dpkg-deb is)."""
    out = tmp_path_factory.mktemp("dist")
    command = [str(ROOT / "tools" / "build-dist"), "--out", str(out)]
    if not shutil.which("dpkg-deb"):
        command.append("--no-deb")
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, "tools/build-dist failed:\n" + done.stdout + done.stderr
    return out


def version() -> str:
    """dewy's version, as the file names carry it."""
    from dewy import __version__

    return __version__


def host_python() -> str:
    """The host's own python3 (Debian's), which has no dewy and no library installed: what the zipapp and the
    .deb are for. The zipapp carries wheels for the Python that built it, so the minor versions must agree."""
    for candidate in ("/usr/bin/python3", sys.executable):
        if os.path.exists(candidate):
            out = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True)
            if out.stdout.strip() == str(sys.version_info[:2]):
                return candidate
    pytest.skip("no host python3 of the building Python's version")
