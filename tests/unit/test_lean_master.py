"""The long-lived master imports only what it runs: the config is loaded in a child, no docopt/tarfile/...

Run with `python -S` (site-packages on PYTHONPATH, no .pth hooks) so that what site itself imports on
this machine does not hide a regression.
"""

import json
import os
import site
import subprocess
import sys

import pytest

import dewy
from dewy.config import ConfigError, load_ini
from dewy.master import configview, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(dewy.__file__)))
# Modules the running master must not hold (see docs/ARCHITECTURE.md, "Lean rule").
HEAVY = ("docopt", "configparser", "dewy.config", "dewy.cli", "dewy.releases", "dewy.registry", "semver",
         "tarfile", "zipfile", "dataclasses", "inspect", "subprocess", "tempfile", "urllib", "datetime",
         "difflib", "ipaddress", "unicodedata")


@pytest.fixture
def ini(tmp_path):
    path = tmp_path / "dewy.ini"
    path.write_text("[dewy]\nregistry = file://%s?artifact=app.tar.gz\nport = 127.0.0.1:8000, unix:/tmp/x.sock\n"
                    "app = /bin/true --flag\nready = notify:5s\nworkdir = w\n" % tmp_path)
    return path


def test_the_child_loads_the_same_config(ini):
    view = configview.load(str(ini))
    config = load_ini(str(ini))
    assert view.to_json() == config.to_json()
    assert view.port == config.port and view.app == config.app and view.workdir == config.workdir
    assert (view.ready.kind, view.ready.seconds) == ("notify", 5.0)
    with pytest.raises(AttributeError):
        view.port = ()


def test_a_bad_ini_is_the_same_one_line_error(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[dewy]\nregistry = file:///x\ninterval = ten\napp = x\n")
    with pytest.raises(ConfigError) as expected:
        load_ini(str(bad))
    with pytest.raises(configview.ConfigLoadError) as got:
        configview.load(str(bad))
    assert str(got.value) == str(expected.value)


def test_only_a_plain_run_takes_the_lean_path():
    assert main.config_path(["-c", "x.ini"]) == "x.ini"
    assert main.config_path(["--config", "x.ini"]) == "x.ini"
    assert main.config_path(["--config=x.ini"]) == "x.ini"
    for argv in ([], ["-c"], ["-c", "x.ini", "--check"], ["--help"], ["--version"], ["-c", "--check"]):
        assert main.config_path(argv) is None, argv


def test_the_master_imports_nothing_heavy(ini):
    code = ("import json, sys\n"
            "from dewy.master import arbiter, main, configview\n"
            "from dewy import log\n"
            "configview.load(sys.argv[1])\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + site.getsitepackages()))
    out = subprocess.run([sys.executable, "-S", "-c", code, str(ini)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout)
    held = [m for m in modules if m in HEAVY or m.split(".")[0] in HEAVY or m.startswith("dewy.registry")]
    assert held == [], "the master holds %s" % held


def test_one_reloader_for_every_way_in(ini, tmp_path, caplog):
    """reload_config is the same function whichever way the config came: the ini in a child, the ini or the flags
    in dewy.cli; a ConfigError becomes the master's ConfigLoadError with the same text."""
    from dewy.config import Config as FullConfig, ConfigError

    lean = configview.reloader(lambda warnings: configview.load(str(ini)))()
    full = configview.reloader(lambda warnings: load_ini(str(ini), warnings), ConfigError)()
    assert lean == full and type(lean) is type(full) is FullConfig, "one config type"
    bad = tmp_path / "bad.ini"
    bad.write_text("[dewy]\nregistry = file:///x\ninterval = ten\napp = x\n")
    with pytest.raises(configview.ConfigLoadError, match="interval"):
        configview.reloader(lambda warnings: load_ini(str(bad), warnings), ConfigError)()
    with caplog.at_level("WARNING"):
        configview.reloader(lambda warnings: warnings.append("health-interval has no effect") or full)()
    assert "health-interval has no effect" in caplog.text
