"""Packaging facts that need no build: the distribution's name and extras, the test command CI runs."""

import configparser
import re
from pathlib import Path

from dewy import extras

ROOT = Path(__file__).resolve().parents[2]


def _setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def _extra_names() -> dict:
    section = _setup_cfg()["options.extras_require"]
    return {name: [line.strip() for line in section[name].splitlines() if line.strip()] for name in section}


def test_distribution_is_dewy_deploy_with_license_and_python_310():
    cfg = _setup_cfg()
    assert cfg["metadata"]["name"] == extras.DIST == "dewy-deploy"
    assert cfg["options"]["python_requires"] == ">=3.10"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert cfg["metadata"]["license"] == "MIT"  # an SPDX expression (the License :: classifier is deprecated)
    assert "Source" in cfg["metadata"]["project_urls"]


def test_every_backend_extra_is_declared_in_setup_cfg_and_all_takes_them_all():
    declared = _extra_names()
    assert set(extras.EXTRAS) <= set(declared)
    assert set(extras.BACKENDS.values()) <= set(extras.EXTRAS)
    assert declared["all"] == ["dewy-deploy[%s]" % ",".join(extras.EXTRAS)]
    assert "dewy-deploy[all,dist]" in declared["test"]  # the suite exercises every backend
    base = _setup_cfg()["options"]["install_requires"]
    for heavy in ("boto3", "grpcio", "google-cloud-storage", "PyJWT", "redis", "slack-sdk"):
        assert heavy not in base, "%s belongs in an extra, not the base install" % heavy


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r'^TEST_COMMAND="(.*)"$', ci, re.M).group(1)
    assert command.startswith("tools/test-setup && .venv/bin/python -m pytest")
    assert "\n%s\n" % command in readme
    assert (ROOT / "tools" / "test-setup").stat().st_mode & 0o111


def test_quick_start_makes_a_venv_instead_of_installing_into_the_system_python():
    readme = (ROOT / "README.md").read_text()
    assert "\npython3 -m venv .venv && .venv/bin/pip install . && .venv/bin/dewy demo\n" in readme


def test_the_unit_loads_the_env_file_has_a_state_dir_a_watchdog_and_checks_before_reloading():
    unit = (ROOT / "contrib" / "systemd" / "dewy.service").read_text()
    lines = [line for line in unit.splitlines() if line and not line.startswith("#")]
    for wanted in ("EnvironmentFile=-/etc/dewy/dewy.env", "StateDirectory=dewy", "Type=notify",
                   "ExecStart=dewy-master -c /etc/dewy/dewy.ini"):
        assert wanted in lines, wanted
    assert any(line.startswith("Documentation=https://") for line in lines)
    watchdog = [line for line in lines if line.startswith("WatchdogSec=")]
    assert watchdog and int(watchdog[0].split("=")[1].rstrip("s")) >= 2 * 30 + 30, "a ping interval (half of it) plus an upgrade preflight (30 s)"
    reload = [line for line in lines if line.startswith("ExecReload=")]
    assert reload == ["ExecReload=dewy-master -c /etc/dewy/dewy.ini --check", "ExecReload=/bin/kill -HUP $MAINPID"]
