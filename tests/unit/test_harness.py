"""The test harness itself: the run's temporary files go to a directory the session owns and checks."""

import os
import subprocess
import sys
import tempfile

from helpers import clean_environment


def test_temp_files_go_to_the_sessions_own_directory(no_leftover_temp_files, tmp_path):
    session_tmp = no_leftover_temp_files
    assert os.path.isdir(session_tmp)
    assert tempfile.gettempdir() == session_tmp and os.environ["TMPDIR"] == session_tmp
    # Processes the tests start (masters, pollers, apps, servers) inherit it.
    child = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
                           capture_output=True, text=True, check=True, env=clean_environment(), timeout=30)
    assert child.stdout.strip() == session_tmp
    # pytest's own tmp_path stays where pytest keeps it, outside the checked directory.
    assert not str(tmp_path).startswith(session_tmp + os.sep)
