"""The release artifacts of tools/build-dist, as an operator gets them: a lean base install from the wheel, the
sdist, the single-file zipapp on the host's bare python3, and the .deb installed and purged with apt-get."""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import py_compile
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from helpers import free_port, wait_until

from .conftest import host_python, version

MIB = 1024 * 1024


def _du(path: Path) -> int:
    """Bytes under path (files only, links not followed)."""
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


@pytest.mark.timeout(300)
def test_base_install_is_lean_runs_the_demo_and_names_the_missing_extra(dist, tmp_path):
    """pip install of the wheel alone: <= 25 MiB of site-packages, `dewy demo` works, and an s3:// config fails
    --check and start-up with exit 2 and the exact pip command for the extra (not a registry outage later)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    before = _du(_site_packages(venv))
    wheel = dist / ("dewy_deploy-%s-py3-none-any.whl" % version())
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    str(wheel)], check=True, timeout=240, capture_output=True)
    grown = _du(_site_packages(venv)) - before
    assert grown <= 25 * MIB, "the base install adds %.1f MiB" % (grown / MIB)
    for sdk in ("boto3", "grpc", "google.cloud.storage", "jwt", "redis", "slack_sdk"):
        probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import %s" % sdk], capture_output=True)
        assert probe.returncode != 0, "%s came with the base install" % sdk
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    demo = subprocess.run([str(venv / "bin" / "dewy"), "demo"], cwd=empty, env=env, capture_output=True, text=True,
                          timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = s3://eu-west-1/releases/app\nport = 127.0.0.1:%d\napp = current/app\n"
                   "workdir = %s\n" % (free_port(), tmp_path / "work"))
    for args in (["--check"], []):
        run = subprocess.run([str(venv / "bin" / "dewy-master"), "-c", str(ini)] + args, env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stdout + run.stderr
        assert "pip install 'dewy-deploy[s3]'" in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "work" / ".dewy" / "status.json").exists(), "the master started anyway"


def test_sdist_carries_license_contrib_and_examples(dist):
    sdist = dist / ("dewy_deploy-%s.tar.gz" % version())
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for wanted in ("LICENSE", "contrib/systemd/dewy.service", "contrib/dewy.ini", "examples/dewy.ini", "setup.cfg"):
        assert wanted in names, wanted


@pytest.mark.timeout(180)
def test_zipapp_runs_the_demo_from_an_empty_directory_with_nothing_but_python3(dist, tmp_path):
    """`env -i python3 dewy-X.pyz demo`: the master and its poller run from the zipapp on the bare host python."""
    pyz = dist / ("dewy-%s.pyz" % version())
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run(["env", "-i", "DEWY_PYZ_DIR=%s" % (tmp_path / "unpacked"), host_python(), str(pyz), "demo"],
                         cwd=empty, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1.0.0 -> 1.1.0" in run.stdout, run.stdout
    assert not list(empty.iterdir())


def _status(workdir: Path) -> dict:
    try:
        return json.loads((workdir / ".dewy" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _rebuilt_as(pyz: Path, new: Path, new_version: str) -> None:
    """A copy of pyz whose dewy says it is new_version, with a build id of its own (so it is unpacked anew).
    The new __init__.py is appended to the payload under the same name: a zip's last entry of a name wins."""
    payload = new.with_suffix(".payload")
    with zipfile.ZipFile(pyz) as zf:
        main = zf.read("__main__.py").decode()
        payload.write_bytes(zf.read("site-packages.zip"))
    with zipfile.ZipFile(payload) as zf:
        init = zf.read("site-packages/dewy/__init__.py").decode()
    source = new.with_suffix(".py")
    source.write_text(init.replace('__version__ = "%s"' % version(), '__version__ = "%s"' % new_version))
    # The tree's pycs are unchecked-hash (never compared with their source): the new one must come along.
    compiled = py_compile.compile(str(source), str(new.with_suffix(".pyc")), doraise=True,
                                  invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        with zipfile.ZipFile(payload, "a") as zf:
            zf.write(source, "site-packages/dewy/__init__.py")
            zf.write(compiled, "site-packages/dewy/__pycache__/" + os.path.basename(
                importlib.util.cache_from_source("__init__.py")))
    main = re.sub(r'^BUILD_ID = "(.*)"$', r'BUILD_ID = "\1usr2"', main, count=1, flags=re.M)
    with open(new, "wb") as fh:
        fh.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(fh, "w") as zf:
            zf.writestr("__main__.py", main)
            zf.write(payload, "site-packages.zip")
    payload.unlink()
    new.chmod(0o755)


@pytest.mark.timeout(180)
def test_zipapp_master_runs_its_poller_and_usr2_after_replacing_the_file_runs_the_new_code(dist, tmp_path):
    """dewy-master as a link to the .pyz: the poller starts (and polls) from the zipapp; replace the file,
    USR2, and the same pid runs the new code, with a new poller."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pyz = bindir / "dewy.pyz"
    shutil.copyfile(dist / ("dewy-%s.pyz" % version()), pyz)
    pyz.chmod(0o755)
    (bindir / "dewy-master").symlink_to("dewy.pyz")
    registry, workdir = tmp_path / "registry", tmp_path / "work"
    registry.mkdir()
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = file://%s\nport = 127.0.0.1:%d\napp = /bin/sleep 1000\nworkdir = %s\n"
                   "interval = 200ms\n" % (registry, free_port(), workdir))
    log = open(tmp_path / "master.log", "wb")
    master = subprocess.Popen(["env", "-i", "DEWY_PYZ_DIR=%s" % (tmp_path / "unpacked"), host_python(),
                               str(bindir / "dewy-master"), "-c", str(ini)], stdout=log, stderr=log)
    try:
        first = wait_until(lambda: _status(workdir).get("last_poll") and _status(workdir), 60,
                           "the zipapp's poller polling", lambda: (tmp_path / "master.log").read_text())
        assert first["dewy_version"] == version()
        new_version = version() + "+usr2"
        _rebuilt_as(pyz, tmp_path / "new.pyz", new_version)
        os.replace(tmp_path / "new.pyz", pyz)
        os.kill(first["pid"], signal.SIGUSR2)
        after = wait_until(lambda: (lambda s: s if s.get("dewy_version") == new_version and s.get("poller_pid")
                                    not in (None, first["poller_pid"]) and s.get("last_poll") else None)(
                                        _status(workdir)), 60, "the new code after USR2",
                           lambda: (tmp_path / "master.log").read_text())
        assert after["pid"] == first["pid"]
        master.send_signal(signal.SIGTERM)
        assert master.wait(30) == 0
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
        log.close()


def _can_install_debs() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None and shutil.which("dpkg") is not None


def _installed(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return "install ok installed" in out.stdout


@pytest.mark.timeout(300)
def test_deb_installs_checks_and_purges_clean(dist):
    """apt-get install ./dewy-deploy_X_ARCH.deb: the commands work on Debian's python3, the shipped ini passes
    --check, the unit passes systemd-analyze verify, dewy.env is 0600, the dewy user exists; purge leaves nothing."""
    if not _can_install_debs():
        pytest.skip("installing a .deb needs root and apt-get")
    if _installed("dewy-deploy"):
        pytest.skip("dewy-deploy is installed on this host already: not touching it")
    deb = next(dist.glob("dewy-deploy_%s_*.deb" % version()))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", "-q", str(deb)], env=env, capture_output=True, text=True,
                             timeout=240)
    try:
        assert install.returncode == 0, install.stdout + install.stderr
        clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        out = subprocess.run(["/usr/bin/dewy", "--version"], env=clean, capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "dewy %s" % version(), out.stdout + out.stderr
        check = subprocess.run(["/usr/bin/dewy-master", "-c", "/etc/dewy/dewy.ini", "--check"], env=clean,
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and "OK" in check.stdout, check.stdout + check.stderr
        assert stat.S_IMODE(os.stat("/etc/dewy/dewy.env").st_mode) == 0o600
        assert pwd.getpwnam("dewy").pw_dir == "/var/lib/dewy"
        if shutil.which("systemd-analyze"):
            verify = subprocess.run(["systemd-analyze", "verify", "/lib/systemd/system/dewy.service"], env=clean,
                                    capture_output=True, text=True, timeout=120)
            assert verify.returncode == 0, verify.stdout + verify.stderr
            assert "dewy.service" not in verify.stdout + verify.stderr, verify.stdout + verify.stderr
    finally:
        purge = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=120", "purge", "-y", "-q", "dewy-deploy"], env=env, capture_output=True,
                               text=True, timeout=240)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not _installed("dewy-deploy")
    for path in ("/usr/lib/dewy", "/usr/bin/dewy", "/usr/bin/dewy-master", "/etc/dewy", "/var/lib/dewy",
                 "/lib/systemd/system/dewy.service", "/usr/share/doc/dewy-deploy"):
        assert not os.path.lexists(path), "left after purge: %s" % path
    with pytest.raises(KeyError):
        pwd.getpwnam("dewy")
