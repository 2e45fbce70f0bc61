"""dewy.interpreter: a Python child started by dewy runs the same copy of dewy as its parent, wherever that copy
came from (a checkout run without install, a zipapp), not whichever dewy the interpreter would find itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipapp
from pathlib import Path

import pytest

import dewy

PARENT = """
import subprocess, sys
sys.path.insert(0, sys.argv[1])  # what bin/dewy-master does, and what a zipapp's sys.path holds
from dewy import interpreter
print(subprocess.run(interpreter.module_command("dewy.whereami", ["an-arg"]), capture_output=True, text=True,
                     check=True).stdout, end="")
"""


def _copy_of_dewy(dest: Path) -> Path:
    """A copy of the dewy package under dest, with a module the installed dewy does not have."""
    shutil.copytree(Path(dewy.__file__).parent, dest / "dewy", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "dewy" / "whereami.py").write_text("import sys, dewy\nprint(dewy.__file__, sys.argv[1:])\n")
    return dest


@pytest.mark.parametrize("form", ["checkout", "zipapp"])
def test_the_child_imports_the_parents_copy_of_dewy(tmp_path, form):
    root = _copy_of_dewy(tmp_path / "checkout")
    if form == "zipapp":
        zipapp.create_archive(root, tmp_path / "dewy.pyz", main="dewy.pyz:main")
        root = tmp_path / "dewy.pyz"
    done = subprocess.run([sys.executable, "-c", PARENT, str(root)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "%s ['an-arg']" % (root / "dewy" / "__init__.py"), done.stdout


def test_a_dewy_a_fresh_interpreter_finds_is_started_the_plain_way(tmp_path):
    """Found through PYTHONPATH (or site-packages, an editable install's finder): plain `python -m`."""
    root = str(Path(dewy.__file__).resolve().parents[1])
    code = "from dewy import interpreter; print(interpreter.module_command('dewy.poller', ['--fd', '3']))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=root))
    assert done.stdout.strip() == str([sys.executable, "-m", "dewy.poller", "--fd", "3"]), done.stdout + done.stderr
