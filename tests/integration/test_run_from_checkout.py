"""bin/dewy-master run from a checkout that is not installed: its poller runs that checkout's code too."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_bin_dewy_master_from_a_checkout_starts_its_own_poller(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "dewy", checkout / "dewy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "bin", checkout / "bin")
    mark = tmp_path / "poller-ran-from"
    # A mark only this copy's poller leaves (any other dewy on the interpreter's path would not).
    main = checkout / "dewy" / "poller" / "__main__.py"
    main.write_text("open(%r, 'w').write(__file__)\n" % str(mark) + main.read_text())
    registry = tmp_path / "registry"
    registry.mkdir()
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = file://%s\nport = 127.0.0.1:%d\napp = /bin/sleep 1000\nworkdir = %s\n"
                   % (registry, free_port(), tmp_path / "work"))
    log = open(tmp_path / "master.log", "wb")
    master = subprocess.Popen([sys.executable, str(checkout / "bin" / "dewy-master"), "-c", str(ini)],
                              cwd=tmp_path, stdout=log, stderr=log)
    try:
        wait_until(lambda: mark.exists() and mark.read_text(), 30, "the checkout's poller",
                   lambda: (tmp_path / "master.log").read_text())
        assert mark.read_text() == str(main)
        master.send_signal(signal.SIGTERM)
        assert master.wait(30) == 0
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
        log.close()
