"""A Dewy user swaps the binary and keeps the command line: Dewy's flags, run as real `dewy server` processes.

Each test starts `python -m dewy server ...` spelled as Dewy's README spells it (no `--` before the app
command), against a file:// registry in the test's tmp dir, and reads the result from the app's answers, the
status file and the audit log.
"""

from __future__ import annotations

import datetime
import io
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from dewy import __version__
from dewy.demo.app import build_release
from helpers import audit_entries, clean_environment, free_port, http_get, wait_until


def publish_archive(root: Path, tag: str, name: str, mode: str, version: str, behaviour: str = "") -> Path:
    """Publish the sample app as root/<tag>/<name>, packed with tarfile mode (w:xz for .txz, w:bz2 for .tbz2)."""
    staging = Path(tempfile.mkdtemp(prefix="publish-", dir=root.parent))
    built = staging / "built.tar.gz"
    build_release(str(built), version, behaviour)
    with tarfile.open(built) as src, tarfile.open(staging / name, mode) as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
    built.unlink()
    os.rename(staging, root / tag)  # the whole version directory appears at once
    return root / tag


class DewyServer:
    """`python -m dewy server ARGS` in the background, stopped with SIGTERM at the end."""

    def __init__(self, tmp: Path, args: list[str]):
        self.workdir = tmp / "w"
        self.port = free_port()
        self.log = tmp / "dewy.log"
        argv = [sys.executable, "-m", "dewy", "server", "-p", "127.0.0.1:%d" % self.port, "--workdir",
                str(self.workdir), "-l", "debug", *args,
                sys.executable, "current/app.py"]  # Dewy's form: the app command without --
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=str(tmp), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=clean_environment())

    def answer(self, path: str = "/"):
        try:
            return http_get(("127.0.0.1", self.port), path, 2)
        except OSError:
            return None

    def serves(self, version: str) -> bool:
        return self.answer() == (200, version + "\n")

    def status(self) -> dict:
        from dewy import statefiles as status
        return status.read(str(self.workdir)) or {}

    def details(self) -> str:
        return "status: %s\nlog:\n%s" % (self.status(), self.log.read_text(errors="replace")[-4000:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def dewy_server(tmp_path):
    started = []

    def start(args):
        server = DewyServer(tmp_path, args)
        started.append(server)
        return server
    yield start
    for server in started:
        assert server.stop() == 0, server.details()


def test_dash_v_prints_dewys_version_line():
    for flag in ("-v", "--version"):
        out = subprocess.run([sys.executable, "-m", "dewy", flag], capture_output=True, text=True, timeout=30,
                             env=clean_environment())
        assert out.returncode == 0 and out.stdout == "dewy version: %s [unknown, unknown]\n" % __version__, out


@pytest.mark.timeout(120)
def test_txz_release_health_path_and_no_rollback(tmp_path, dewy_server):
    """A .txz is unpacked; --health-path waits for 2xx/3xx on the first port; with --no-rollback a release whose
    /healthz never answers 2xx stays after --health-timeout, the old one retires, the failure audited."""
    root = tmp_path / "registry"
    root.mkdir()
    publish_archive(root, "v1.0.0", "app_linux_amd64.txz", "w:xz", "1.0.0")
    server = dewy_server(["--registry", "file://%s?artifact=app_linux_amd64.txz" % root, "-i", "1",
                          "--health-path", "/healthz", "--health-timeout", "2", "--no-rollback"])
    wait_until(lambda: server.serves("1.0.0"), 30, "1.0.0 from the .txz", server.details)
    first = wait_until(lambda: (lambda st: st if st.get("version") == "1.0.0" and st.get("app_pids") else None)(
        server.status()), 30, "1.0.0 serving", server.details)

    publish_archive(root, "v1.1.0", "app_linux_amd64.txz", "w:xz", "1.1.0", behaviour="unhealthy-for:3600")
    wait_until(lambda: server.serves("1.1.0"), 30, "1.1.0 kept despite its failing /healthz", server.details)
    entries = wait_until(lambda: [e for e in audit_entries(server.workdir) if e.get("version") == "1.1.0"], 15,
                         "the audit entry of 1.1.0", server.details)
    assert entries[0]["result"] == "deployed", entries
    assert "failed its readiness check" in entries[0]["error"] and "kept (rollback = off)" in entries[0]["error"]
    assert server.answer("/healthz")[0] == 503  # it really is unhealthy, and it serves
    st = server.status()
    assert st["version"] == "1.1.0" and not (server.workdir / ".dewy" / "refused.json").exists() or \
        "1.1.0" not in (server.workdir / ".dewy" / "refused.json").read_text()
    wait_until(lambda: set(first["app_pids"]).isdisjoint(server.status().get("app_pids") or []) and
               not server.status().get("retiring_pids"), 30, "the old generation retired", server.details)


@pytest.mark.timeout(120)
def test_health_path_counts_a_redirect_as_healthy(tmp_path, dewy_server):
    """Dewy counts 2xx and 3xx as healthy: a /moved answering 302 makes the first release ready."""
    root = tmp_path / "registry"
    root.mkdir()
    publish_archive(root, "v1.0.0", "app.txz", "w:xz", "1.0.0")
    server = dewy_server(["--registry", "file://%s?artifact=app.txz" % root, "-i", "1",
                          "--health-path", "moved", "--health-timeout", "3"])  # Dewy adds the "/"
    entries = wait_until(lambda: audit_entries(server.workdir), 30, "the first deploy's audit entry", server.details)
    assert entries[0]["result"] == "deployed" and not entries[0].get("error"), entries
    assert server.answer("/moved")[0] == 302 and server.serves("1.0.0")


@pytest.mark.timeout(120)
def test_tbz2_release_with_calver_flag(tmp_path, dewy_server):
    """--calver FORMAT reads the tags as calendar versions (a tag semver rejects) and a .tbz2 unpacks."""
    root = tmp_path / "registry"
    root.mkdir()
    publish_archive(root, "v2026.01.15.1", "app.tbz2", "w:bz2", "2026.01.15.1")
    publish_archive(root, "v2026.01.09.7", "app.tbz2", "w:bz2", "2026.01.09.7")
    server = dewy_server(["--registry", "file://%s?artifact=app.tbz2" % root, "-i", "1",
                          "--calver", "YYYY.0M.0D.MICRO"])
    wait_until(lambda: server.serves("2026.01.15.1"), 30, "the newest calendar version", server.details)
    assert server.status()["calver"] == "YYYY.0M.0D.MICRO"


@pytest.mark.timeout(120)
def test_max_backoff_interval_zero_keeps_polling_at_the_interval(tmp_path, dewy_server):
    """--max-backoff-interval 0 (Dewy's default): a failing registry is polled every interval, no doubling."""
    root = tmp_path / "registry"
    root.mkdir()
    publish_archive(root, "v1.0.0", "app.txz", "w:xz", "1.0.0")
    server = dewy_server(["--registry", "file://%s?artifact=app.txz" % root, "-i", "0.2",
                          "--max-backoff-interval", "0"])
    wait_until(lambda: server.serves("1.0.0"), 30, "1.0.0", server.details)
    os.rename(root, tmp_path / "gone")  # every poll now fails
    # With the default backoff (5m) the gap would be 0.2 * 2**failures: 3.2 s after the 4th failure.
    polls = server.status().get("polls") or 0
    wait_until(lambda: (server.status().get("polls") or 0) >= polls + 6 and server.status().get("last_error"),
               20, "six failing polls", server.details)
    st = server.status()

    def at(text):
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    gap = at(st["next_poll"]) - at(st["last_poll"] if st.get("last_poll") else st["updated_at"])
    assert gap <= 1.2, st  # a poll every interval (ISO times have whole seconds): no backoff
    assert server.serves("1.0.0")


@pytest.mark.timeout(150)
def test_after_rollback_hook_for_crash_loop_and_operator_rollbacks_and_hook_results_notified(make_master, registry,
                                                                                            tmp_path):
    """after-rollback-hook runs after an automatic (crash loop) and an operator rollback with the DEWY_*
    variables; hook results are notified either way (hook-succeeded too, as Dewy sends them)."""
    from notifystubs import WebhookServer

    out = tmp_path / "rollbacks.txt"
    hook = 'echo "$DEWY_VERSION $DEWY_PREVIOUS_VERSION $DEWY_MODE $(basename "$DEWY_RELEASE_DIR")" >> %s' % out
    registry.publish("1.0.0")
    with WebhookServer() as webhook:
        master = make_master(**{"after-rollback-hook": hook, "after-deploy-hook": "echo after-deploy ran",
                                "notifier": webhook.url()}).start(wait_version="1.0.0")
        registry.publish("1.1.0", behaviour="crash-after:0.5")  # ready after the delay, then crash-loops
        wait_until(lambda: out.exists() and out.read_text().count("\n") >= 1, 60, "the hook after the crash loop",
                   master.details)
        first = out.read_text().split()
        assert first[:3] == ["1.0.0", "1.1.0", "server"], first
        assert first[3] == os.path.basename(os.readlink(master.workdir / "current")), "DEWY_RELEASE_DIR"

        master.deploy("1.2.0")
        done = subprocess.run([sys.executable, "-m", "dewy", "rollback", "--workdir", str(master.workdir), "--to", "1.0.0"],
                              capture_output=True, text=True, timeout=60, env=clean_environment())
        assert done.returncode == 0, done.stdout + done.stderr
        wait_until(lambda: out.read_text().count("\n") >= 2, 30, "the hook after the operator's rollback",
                   master.details)
        assert out.read_text().splitlines()[1].split()[:3] == ["1.0.0", "1.2.0", "server"]
        events = webhook.wait_for(lambda: [e for e in webhook.events if e["event"] == "hook-succeeded"
                                           and e.get("hook") == "after-rollback-hook"][1:] and webhook.events)
        succeeded = [e for e in events if e["event"] == "hook-succeeded"]
        assert {e["hook"] for e in succeeded} == {"after-deploy-hook", "after-rollback-hook"}, succeeded
        assert any("after-deploy ran" in e.get("output", "") for e in succeeded), succeeded
