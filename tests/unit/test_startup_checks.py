"""An `app` that can never run is a configuration error before anything starts (and for --check);
a taken port names the file and key. Real dewy-master processes, no app ever started."""

import socket
import subprocess
import sys

import pytest

MASTER = [sys.executable, "-m", "dewy.master"]


def ini(tmp_path, app, port="127.0.0.1:1"):
    path = tmp_path / "dewy.ini"
    path.write_text("[dewy]\nregistry = file://%s/reg?artifact=a.tgz\napp = %s\nworkdir = w\nport = %s\n"
                    % (tmp_path, app, port))
    return path


def run(*args, timeout=20):
    return subprocess.run(MASTER + list(args), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("check", [True, False])
def test_a_command_not_on_path_is_a_config_error(tmp_path, check):
    path = ini(tmp_path, "pyhton3 current/app.py")
    result = run("-c", str(path), *(["--check"] if check else []))
    assert result.returncode == 2, result.stderr
    assert "%s: [dewy] app: cannot execute pyhton3: no such file (looked in PATH)" % path in result.stderr
    assert not (tmp_path / "w").exists()  # nothing was started or created


def test_a_program_outside_the_workdir_that_is_not_executable(tmp_path):
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\n")
    result = run("-c", str(ini(tmp_path, str(script))), "--check")
    assert result.returncode == 2 and "it is not executable" in result.stderr


def test_a_program_inside_a_release_is_not_checked_before_the_first_deploy(tmp_path):
    result = run("-c", str(ini(tmp_path, "current/bin/server --flag")), "--check")
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stderr


def test_a_taken_port_names_the_file_and_key(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        path = ini(tmp_path, "python3 current/app.py", port="127.0.0.1:%d" % taken.getsockname()[1])
        result = run("-c", str(path))
    finally:
        taken.close()
    assert result.returncode == 3
    assert "%s: [dewy] port: cannot listen on 127.0.0.1:" % path in result.stderr
    assert "address already in use" in result.stderr


def test_an_app_under_another_directorys_current_names_the_workdir_to_give(tmp_path):
    """Dewy's README line (`dewy server ... -- /opt/myapp/current/myapp`, Dewy's workdir being the directory
    it was started in) run from elsewhere: the error says which workdir would make that path exist."""
    app = str(tmp_path / "myapp" / "current" / "myapp")
    (tmp_path / "elsewhere").mkdir()
    result = subprocess.run([sys.executable, "-m", "dewy", "server", "--registry", "file://%s/reg" % tmp_path,
                             "-p", "127.0.0.1:1", "--", app], capture_output=True, text=True, timeout=20,
                            cwd=str(tmp_path / "elsewhere"))
    assert result.returncode == 2, result.stderr
    assert "cannot execute %s: no such file" % app in result.stderr
    assert "give --workdir %s (Dewy used the directory it was started in)" % (tmp_path / "myapp") in result.stderr
    assert not (tmp_path / "elsewhere" / ".dewy").exists()  # nothing was started or created
    result = run("-c", str(ini(tmp_path, app)), "--check")
    assert result.returncode == 2 and "give workdir = %s" % (tmp_path / "myapp") in result.stderr, result.stderr
