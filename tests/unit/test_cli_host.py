"""`dewy` on a host: commands find /etc/dewy/dewy.ini by themselves, `--help` per command, JSON errors with --json.

The default config path is pointed at a temp file (DEWY_TEST_DEFAULT_CONFIG) so no test writes into /etc."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def dewy(args, cwd, default_config=None):
    env = dict(os.environ)
    env["DEWY_TEST_DEFAULT_CONFIG"] = str(default_config or cwd / "no-such-dewy.ini")
    return subprocess.run([sys.executable, "-m", "dewy"] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def host(tmp_path):
    """(an empty directory, the host's ini, its workdir)."""
    workdir = tmp_path / "var-lib-dewy"
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = file://%s\nport = 8000\napp = current/app\nworkdir = %s\n"
                   % (tmp_path / "registry", workdir))
    empty = tmp_path / "cwd"
    empty.mkdir()
    return empty, ini, workdir


@pytest.mark.parametrize("command", ["status", "history", "rollback", "pause", "resume", "deploy-now"])
def test_commands_outside_a_workdir_use_the_hosts_config(host, command):
    cwd, ini, workdir = host
    done = dewy([command], cwd, default_config=ini)
    assert str(workdir) in done.stderr, done.stderr
    assert str(cwd) not in done.stderr.replace(str(workdir), ""), done.stderr
    # Without the host's config, the current directory as before.
    done = dewy([command], cwd)
    assert str(cwd) in done.stderr and str(workdir) not in done.stderr, done.stderr


def test_a_workdir_as_current_directory_wins_over_the_hosts_config(host):
    cwd, ini, workdir = host
    (cwd / ".dewy").mkdir()
    done = dewy(["status"], cwd, default_config=ini)
    assert "no status in %s" % cwd in done.stderr and str(workdir) not in done.stderr, done.stderr


def test_fleet_and_latest_without_c_read_the_hosts_config(host):
    cwd, ini, workdir = host
    for command in ("fleet", "latest"):
        assert "needs -c INI" in dewy(["fleet"], cwd).stderr or command == "latest"
        done = dewy([command], cwd, default_config=ini)
        assert "-c INI" not in done.stderr, (command, done.stderr)
    latest = dewy(["latest", "--json"], cwd, default_config=ini)
    assert json.loads(latest.stdout)["registry"].startswith("file://"), latest.stdout  # asked the ini's registry


@pytest.mark.parametrize("command", ["status", "history", "rollback", "fleet", "latest", "server"])
def test_help_of_a_command_is_that_commands_usage_only(tmp_path, command):
    done = dewy([command, "--help"], tmp_path)
    assert done.returncode == 0
    # the Usage: section alone (an option's description may wrap onto a line that begins "dewy ...")
    section = done.stdout.split("Usage:", 1)[1].split("\n\n", 1)[0]
    usage = [line.strip() for line in section.splitlines() if line.strip()]
    assert usage and all(line.startswith("dewy %s" % command) for line in usage), done.stdout
    whole = dewy(["--help"], tmp_path)
    assert len(whole.stdout) > len(done.stdout)


@pytest.mark.parametrize("args, code", [
    (["status", "--json"], 1),                                   # no status here
    (["rollback", "--json", "--workdir", "/nonexistent/w"], None),
    (["pause", "--json"], None),                                  # no master running
    (["status", "--json", "--bogus"], 2),                        # a usage error
    (["status", "--json", "-c", "/nonexistent/dewy.ini"], 2),    # a bad ini
])
def test_with_json_errors_are_json_on_stdout_too(tmp_path, args, code):
    done = dewy(args, tmp_path)
    assert done.returncode != 0
    answer = json.loads(done.stdout)
    assert answer["exit"] == done.returncode and (code is None or done.returncode == code), answer
    assert answer["error"] and "\n" not in answer["error"] and not answer["error"].startswith("dewy:"), answer
    assert done.stderr.strip(), "the error is still on stderr for people"
